#!/usr/bin/env node
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { type ApplianceClass, classRef, DEFAULT_CATALOG, readCatalog } from "../src/model/index.js";
import { CACHE, debianCloudKernel, debianExtract } from "./debian.js";
import { GUEST_INIT, type GuestKernel, guestModules } from "./guest.js";
import { cpioImage, EPOCH, linkBusyboxApplets, run, sha256, stampTimes } from "./tools.js";

/**
 * `npm run catalog`: the appliance classes' images, from Debian packages.
 *
 *   build/catalog/vmlinuz        the guest kernel (Debian's cloud kernel), shared
 *   build/catalog/initrd.img     the guest initrd, shared: busybox, the virtio modules and
 *                                the guest init (network, hostname, configuration from the
 *                                kernel command line, then the class's root disk)
 *   build/catalog/CLASS.ext4     each class's root disk, made with mke2fs -d (no loop mounts)
 *   build/catalog/manifest.json  each class's parts with their sha256, and the class id: the
 *                                sha256 of its parts' hashes (content addressing)
 *
 * Times are fixed (SOURCE_DATE_EPOCH) and file systems get UUIDs derived from their class,
 * so that two builds of the same inputs give the same images.
 */

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const OUT = join(ROOT, "build/catalog");
const STAGE = join(CACHE, "catalog-stage");

/** Debian packages of each class's root disk (busybox comes with every one). */
const CLASS_PACKAGES: Record<string, string[]> = {
  base: [],
  // busybox httpd with a CGI: it names its instance and counts hits in its db over nc.
  web: [],
  lb: ["haproxy"],
  db: ["redis-server"],
};

function step(msg: string): void {
  process.stdout.write(`catalog: ${msg}\n`);
}

/** A stable UUID from a name, for mke2fs -U and its directory hash seed. */
function uuidFor(name: string): string {
  const h = createHash("sha256").update(`flatgrid-catalog:${name}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** Debian packages and their dependencies, extracted (cached as a tar per package set). */
function debianPackages(root: string, packages: string[]): void {
  if (packages.length === 0) return;
  const want = packages.join(",");
  const tar = join(CACHE, `catalog-${packages.join("+")}.tar`);
  if (!existsSync(tar)) {
    step(`mmdebstrap: ${packages.join(" ")} and their dependencies`);
    run("mmdebstrap", ["--quiet", "--variant=extract", `--include=${want}`, "bookworm", tar]);
  }
  run("tar", ["-xf", tar, "-C", root]);
  // What an appliance never reads: documentation, manuals, translations.
  for (const d of ["usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info"])
    rmSync(join(root, d), { recursive: true, force: true });
}

function installBusybox(root: string): void {
  mkdirSync(join(root, "bin"), { recursive: true });
  const busybox = join(root, "bin/busybox");
  copyFileSync(join(debianExtract("busybox-static"), "bin/busybox"), busybox);
  chmodSync(busybox, 0o755);
  linkBusyboxApplets(root);
}

/** The class's start script, run by the guest init once the root disk is the root. */
function startScript(cls: ApplianceClass): string {
  const head = `#!/bin/sh
# ${classRef(cls)}: started by the flatgrid guest init with its configuration in the environment
. /run/flatgrid/env
say() { echo "flatgrid-guest: $*" > /dev/console; }
`;
  switch (cls.name) {
    case "web":
      return `${head}mkdir -p /tmp/www/cgi-bin
cp /flatgrid/index.cgi /tmp/www/cgi-bin/index.cgi
say "web: httpd on port 80"
say ready
exec httpd -f -p 80 -h /tmp/www
`;
    case "lb": {
      return `${head}servers=""
i=0
for s in $(echo "$FG_T_BACKEND" | tr , ' '); do
  servers="$servers    server s$i $s check inter 2s\\n"
  i=$((i + 1))
done
mkdir -p /tmp/haproxy
printf 'global\\n    maxconn 4096\\ndefaults\\n    mode http\\n    timeout connect 5s\\n    timeout client 30s\\n    timeout server 30s\\nfrontend http\\n    bind :80\\n    default_backend web\\nbackend web\\n    balance %s\\n%b' "\${FG_P_BALANCE:-roundrobin}" "$servers" > /tmp/haproxy/haproxy.cfg
say "lb: haproxy on port 80 over $i backends"
say ready
# Its log in RAM, not on the console: every byte on an emulated UART is a VM exit, and a
# slow write once held haproxy long enough for its watchdog to kill it.
exec haproxy -db -f /tmp/haproxy/haproxy.cfg > /tmp/haproxy/haproxy.log 2>&1
`;
    }
    case "db":
      // With a data volume, every write is in its append-only file before redis answers:
      // the data outlives the VM. Without one, it lives in RAM.
      return `${head}if grep -q ' /data ' /proc/mounts; then
  dir=/data/redis
  keep="--appendonly yes --appendfsync always"
else
  dir=/tmp/redis
  keep="--appendonly no"
fi
mkdir -p $dir
say "db: redis on port 6379, data in $dir"
say ready
exec redis-server --bind 0.0.0.0 --protected-mode no --port 6379 --dir $dir --save "" $keep --maxmemory "\${FG_P_MAXMEMORY:-256mb}" --daemonize no --logfile $dir/redis.log
`;
    default:
      return `${head}say ready
while :; do setsid cttyhack sh; sleep 1; done
`;
  }
}

/**
 * The web class's page: its instance, its title, and a hit counter kept by its db. nc waits
 * up to 10 s: a db on a busy node (nested, emulated) took more than 3 s to answer at times.
 */
const WEB_CGI = `#!/bin/sh
. /run/flatgrid/env
count=-
if [ -n "$FG_T_DB" ]; then
  count=$(printf 'INCR flatgrid:hits\\r\\nQUIT\\r\\n' | nc -w 10 "\${FG_T_DB%:*}" "\${FG_T_DB##*:}" | head -1 | tr -dc 0-9)
fi
printf 'Content-Type: text/html\\r\\n\\r\\n'
printf '<!doctype html><title>%s</title><h1>%s</h1><p>served by <b>%s</b> of %s</p><p>hits: %s</p>\\n' "$FG_P_TITLE" "$FG_P_TITLE" "$FG_NAME" "$FG_APP" "\${count:--}"
`;

function rootDisk(cls: ApplianceClass, file: string): void {
  const root = join(STAGE, cls.name);
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  debianPackages(root, CLASS_PACKAGES[cls.name] ?? []);
  installBusybox(root);
  // data: where the guest init mounts the instance's data volume, when it has one.
  for (const d of ["proc", "sys", "dev", "run", "tmp", "data", "flatgrid", "etc"])
    mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, "flatgrid/start"), startScript(cls), { mode: 0o755 });
  if (cls.name === "web") writeFileSync(join(root, "flatgrid/index.cgi"), WEB_CGI, { mode: 0o755 });
  writeFileSync(join(root, "flatgrid/class"), `${classRef(cls)}\n`);
  stampTimes(root);
  rmSync(file, { force: true });
  const uuid = uuidFor(classRef(cls));
  run(
    "mke2fs",
    [
      "-q",
      "-t",
      "ext4",
      "-L",
      cls.name,
      "-U",
      uuid,
      "-E",
      `hash_seed=${uuid},root_owner=0:0`,
      "-d",
      root,
      file,
      `${cls.diskMiB}M`,
    ],
    { env: { ...process.env, E2FSPROGS_FAKE_TIME: String(EPOCH) } },
  );
  // mke2fs 1.47.0 stamps some times with the clock, fake time or not (the root directory's
  // atime, symbolic links', directories it adds entries to): set every time to the epoch.
  const paths = run("find", [".", "-mindepth", "1", "-print0"], { cwd: root })
    .toString()
    .split("\0")
    .filter(Boolean)
    .map((p) => p.slice(1));
  const script = join(STAGE, `${cls.name}.debugfs`);
  const fields = ["atime", "mtime", "ctime"];
  writeFileSync(
    script,
    ["/", ...paths].flatMap((p) => fields.map((f) => `sif "${p}" ${f} @${EPOCH}\n`)).join(""),
  );
  run("debugfs", ["-w", "-f", script, file], {
    env: { ...process.env, E2FSPROGS_FAKE_TIME: String(EPOCH) },
  });
  // Shrunk to what it holds: every node hashes a class's parts before it runs them, and a
  // 1 GiB disk of mostly holes costs minutes to hash on an emulated node. The root disk is
  // read-only; an instance's writable space is not on it.
  run("resize2fs", ["-M", file], { env: { ...process.env, E2FSPROGS_FAKE_TIME: String(EPOCH) } });
}

function guestInitrd(kernel: GuestKernel, file: string): string[] {
  const root = join(STAGE, "initrd");
  rmSync(root, { recursive: true, force: true });
  mkdirSync(join(root, "lib/modules"), { recursive: true });
  const modules = guestModules(kernel);
  for (const m of modules) copyFileSync(m.path, join(root, "lib/modules", `${m.name}.ko`));
  installBusybox(root);
  for (const d of ["proc", "sys", "dev", "newroot"]) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, "init"), GUEST_INIT(modules.map((m) => m.name)), { mode: 0o755 });
  cpioImage(root, file, 9);
  return modules.map((m) => m.name);
}

export interface CatalogManifest {
  kernel: { version: string; sha256: string };
  initrd: { sha256: string; modules: string[] };
  classes: Record<
    string,
    { id: string; rootfs: string; sha256: string; bytes: number; kernel: string; initrd: string }
  >;
  sourceDateEpoch: number;
}

function main(): void {
  const started = Date.now();
  mkdirSync(OUT, { recursive: true });
  mkdirSync(STAGE, { recursive: true });
  const kernel = debianCloudKernel();
  step(`kernel: ${kernel.version}`);
  copyFileSync(kernel.path, join(OUT, "vmlinuz"));
  const modules = guestInitrd(kernel, join(OUT, "initrd.img"));
  step(`initrd: busybox, guest init, modules ${modules.join(" ")}`);
  const kernelSha = sha256(join(OUT, "vmlinuz"));
  const initrdSha = sha256(join(OUT, "initrd.img"));
  const catalog = readCatalog(DEFAULT_CATALOG);
  const manifest: CatalogManifest = {
    kernel: { version: kernel.version, sha256: kernelSha },
    initrd: { sha256: initrdSha, modules },
    classes: {},
    sourceDateEpoch: EPOCH,
  };
  for (const cls of [...catalog.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const file = `${cls.name}.ext4`;
    rootDisk(cls, join(OUT, file));
    const sha = sha256(join(OUT, file));
    const id = createHash("sha256").update(`${kernelSha}\n${initrdSha}\n${sha}\n`).digest("hex");
    manifest.classes[classRef(cls)] = {
      id,
      rootfs: file,
      sha256: sha,
      bytes: statSync(join(OUT, file)).size,
      kernel: "vmlinuz",
      initrd: "initrd.img",
    };
    step(
      `${classRef(cls)}: ${file} (${Math.round(statSync(join(OUT, file)).size / 2 ** 20)} MiB, id ${id.slice(0, 12)})`,
    );
  }
  writeFileSync(join(OUT, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  step(
    `done in ${((Date.now() - started) / 1000).toFixed(0)} s: ${Object.keys(manifest.classes).length} classes in ${relative(process.cwd(), OUT) || OUT}`,
  );
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    main();
  } catch (err) {
    process.stderr.write(`catalog: ${(err as Error).message}\n`);
    process.exit(1);
  }
}

export { OUT as CATALOG_OUT };

#!/usr/bin/env node
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { BUNDLE, RUNTIME_FILES } from "./bundle.js";
import { CACHE, debianKernel } from "./debian.js";
import { buildIso } from "./iso.js";
import { installCuratedModules } from "./modules.js";
import { buildPxe, netbootPackages } from "./pxe.js";
import { cpioImage, EPOCH, linkBusyboxApplets, run, sha256 } from "./tools.js";

/**
 * `npm run image`: the flatgrid node image, from Debian packages and our bundle.
 *
 *   build/image/vmlinuz       the kernel
 *   build/image/initrd.img    the whole OS, run from RAM: native/init as /init, busybox,
 *                             kmod, iproute2, nftables, e2fsprogs, etcd, Node.js, flatgrid
 *   build/image/flatgrid.iso  the hybrid ISO: BIOS and UEFI, from a CD or a USB stick (dd)
 *   build/image/pxe/          the network boot set: the kernel and initrd, boot.ipxe, iPXE
 *                             and PXELINUX loaders, pxelinux.cfg/default, dnsmasq.conf
 *   build/image/manifest.json sha256 and size of each output, the package versions
 *
 * Packages come through mmdebstrap (extract only: no maintainer scripts run) and apt-get,
 * cached in /var/cache/flatgrid. Times and file order are fixed (SOURCE_DATE_EPOCH), so
 * two builds of the same inputs give the same initrd.
 *
 * The kernel is Debian's generic one (linux-image-amd64) with a curated set of its modules
 * (modules.ts): NICs, disk controllers, USB keyboards, virtio, KVM, bridges, VXLAN,
 * nftables, ext4, DRBD; the supervisor loads the ones the hardware needs (coldplug).
 * Our code goes in as esbuild bundles (bundle.ts), with the few files of node_modules
 * that they load at run time (RUNTIME_FILES).
 */

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** build/image, or the directory after --out (a second build to compare, say). */
function outDir(argv: string[]): string {
  const i = argv.indexOf("--out");
  if (i < 0) return join(ROOT, "build/image");
  const dir = argv[i + 1];
  if (!dir || dir.startsWith("-")) throw new Error("--out needs a directory");
  return resolve(dir);
}
const OUT = outDir(process.argv.slice(2));
const STAGE = join(CACHE, "stage");

/** Debian packages in the image; their dependencies come along. */
const PACKAGES = [
  "busybox",
  "kmod",
  "iproute2",
  "nftables",
  "e2fsprogs",
  "etcd-server",
  "ca-certificates",
  "libstdc++6",
];

function step(msg: string): void {
  process.stdout.write(`image: ${msg}\n`);
}

/** The root file system of Debian packages, extracted (mmdebstrap --variant=extract). */
function debianRoot(root: string): void {
  const tar = join(CACHE, "rootfs.tar");
  const stamp = join(CACHE, "rootfs.packages");
  const want = PACKAGES.join(",");
  // Bump when the way the tar is made changes, so that a cached one is rebuilt.
  const recipe = `v2 ${want}`;
  if (!existsSync(tar) || !existsSync(stamp) || readFileSync(stamp, "utf8") !== recipe) {
    step(`mmdebstrap: ${PACKAGES.join(" ")} and their dependencies`);
    // The extract variant leaves dpkg's status empty: record each package's version from
    // its .deb while the downloads are still there.
    const record = `mkdir -p "$1/usr/share/flatgrid" && for f in "$1"/var/cache/apt/archives/*.deb; do dpkg-deb -f "$f" Package Version; done > "$1/usr/share/flatgrid/packages.txt"`;
    run("mmdebstrap", [
      "--quiet",
      "--variant=extract",
      `--include=${want}`,
      `--extract-hook=${record}`,
      "bookworm",
      tar,
    ]);
    writeFileSync(stamp, recipe);
  } else {
    step("Debian packages: cached");
  }
  run("tar", ["-xf", tar, "-C", root]);
}

/** Debian's generic kernel, for real servers, with a curated set of its modules. */
function installKernel(root: string, out: string): string {
  const kernel = debianKernel("amd64");
  copyFileSync(kernel.path, join(out, "vmlinuz"));
  const { modules, bytes } = installCuratedModules(kernel.tree, kernel.version, root);
  step(`kernel: ${kernel.version}, ${modules} modules (${(bytes / 2 ** 20).toFixed(0)} MiB)`);
  return kernel.version;
}

/** Node.js 20 from the machine's nodejs package (Debian 12 itself ships 18). */
function installNode(root: string): string {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax, not JS.
  const version = run("dpkg-query", ["-W", "-f=${Version}", "nodejs"]).toString();
  copyFileSync("/usr/bin/node", join(root, "usr/bin/node"));
  chmodSync(join(root, "usr/bin/node"), 0o755);
  return version;
}

/**
 * Our code: the bundles (bundle/src, one file per program; see bundle.ts) where dist/src is
 * on a node, the node_modules files they load (RUNTIME_FILES), package.json, rootfs/ files, init.
 */
function installFlatgrid(root: string): void {
  const lib = join(root, "usr/lib/flatgrid");
  mkdirSync(lib, { recursive: true });
  copyFileSync(join(ROOT, "package.json"), join(lib, "package.json"));
  cpSync(join(BUNDLE, "src"), join(lib, "dist/src"), { recursive: true });
  for (const path of RUNTIME_FILES) cpSync(join(ROOT, path), join(lib, path), { recursive: true });
  // Class descriptors: `flatgrid app validate` on a node checks against them.
  cpSync(join(ROOT, "catalog"), join(lib, "catalog"), { recursive: true });
  // The example applications, for `flatgrid app create -f` on a node.
  cpSync(join(ROOT, "examples"), join(lib, "examples"), { recursive: true });
  cpSync(join(ROOT, "rootfs"), root, { recursive: true });
  copyFileSync(join(ROOT, "native/out/init"), join(root, "init"));
  chmodSync(join(root, "init"), 0o755);
  // busybox provides every small tool the packages above do not (sh, udhcpc, setsid...).
  linkBusyboxApplets(root);
}

function main(): void {
  if (
    !existsSync(join(ROOT, "native/out/init")) ||
    !existsSync(join(ROOT, "dist/src/os/main.js")) ||
    !existsSync(join(BUNDLE, "src/os/main.js"))
  ) {
    throw new Error("run npm run build first");
  }
  const started = Date.now();
  mkdirSync(OUT, { recursive: true });
  const root = join(STAGE, "root");
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  debianRoot(root);
  const kernel = installKernel(root, OUT);
  const node = installNode(root);
  step("flatgrid: bundles, the node_modules files they load, rootfs, init");
  installFlatgrid(root);
  step("initrd: cpio + gzip");
  cpioImage(root, join(OUT, "initrd.img"));
  step("flatgrid.iso: grub-mkrescue (BIOS and UEFI; CD or USB stick)");
  buildIso(
    join(OUT, "vmlinuz"),
    join(OUT, "initrd.img"),
    join(OUT, "flatgrid.iso"),
    join(STAGE, "iso"),
    EPOCH,
  );
  step("pxe/: boot.ipxe, iPXE and PXELINUX loaders (Debian ipxe, pxelinux, syslinux-common)");
  const pxe = buildPxe(OUT, EPOCH);
  const outputs = Object.fromEntries(
    ["vmlinuz", "initrd.img", "flatgrid.iso", ...pxe].map((f) => [
      f,
      { sha256: sha256(join(OUT, f)), bytes: statSync(join(OUT, f)).size },
    ]),
  );
  // Package versions, as the extract hook recorded them ("Package: x" / "Version: y").
  const recorded = readFileSync(join(root, "usr/share/flatgrid/packages.txt"), "utf8");
  const packages = [...recorded.matchAll(/^Package: (.+)\nVersion: (.+)$/gm)].map(
    (m) => `${m[1]} ${m[2]}`,
  );
  // Not in the initrd, but in the image's outputs (pxe/).
  packages.push(...netbootPackages());
  writeFileSync(
    join(OUT, "manifest.json"),
    `${JSON.stringify({ kernel, node, outputs, packages, sourceDateEpoch: EPOCH }, null, 2)}\n`,
  );
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  step(
    `done in ${((Date.now() - started) / 1000).toFixed(0)} s: vmlinuz ${mib(outputs.vmlinuz?.bytes ?? 0)} MiB, initrd ${mib(outputs["initrd.img"]?.bytes ?? 0)} MiB, flatgrid.iso ${mib(outputs["flatgrid.iso"]?.bytes ?? 0)} MiB in ${relative(process.cwd(), OUT) || OUT}`,
  );
}

main();

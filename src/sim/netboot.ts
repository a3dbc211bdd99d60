import { spawnSync } from "node:child_process";
import { copyFileSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { dnsmasqConfig, ipxeScript } from "./boot-files.js";
import { SimError } from "./errors.js";
import { addBridgeAddress, BRIDGE, inNamespace } from "./netns.js";

/**
 * `sim up --boot pxe`: dnsmasq inside the simulator's namespace, on its bridge, is the
 * rack's DHCP and TFTP server. Each node's NIC ROM (iPXE) gets its fixed address and name
 * by MAC, then boot.ipxe, the kernel and the initrd over TFTP. The grid's keys are on the
 * kernel line in boot.ipxe, as an operator would set them for a rack.
 */

export const DNSMASQ = "dnsmasq";

/** What the state records of the running server. */
export interface NetbootServer {
  pid: number;
  pidFile: string;
  conf: string;
  /** dnsmasq's log: every lease and every file sent. */
  log: string;
  /** The TFTP root: vmlinuz, initrd.img, boot.ipxe. */
  root: string;
}

export interface NetbootHost {
  mac: string;
  ip: string;
  hostname: string;
}

/** Everything a network boot leaves in the state directory, for `sim down`. */
export function netbootFiles(dir: string): string[] {
  return ["netboot", "dnsmasq.conf", "dnsmasq.pid", "dnsmasq.log", "dnsmasq.leases"].map((f) =>
    join(dir, f),
  );
}

/** Hard link where it can (the image is 100+ MiB), else a copy. */
export function place(from: string, to: string): void {
  rmSync(to, { force: true });
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
  }
}

function checkDnsmasq(): void {
  const r = spawnSync(DNSMASQ, ["--version"], { stdio: "ignore" });
  if (r.error || r.status !== 0)
    throw new SimError(
      `${DNSMASQ} is not installed, and --boot pxe needs it: apt-get install dnsmasq-base (npm run deps does it)`,
      "host",
    );
}

/** Writes the TFTP root and dnsmasq's configuration, starts dnsmasq, returns what runs. */
export function startNetboot(o: {
  namespace: string;
  dir: string;
  image: { kernel: string; initrd: string };
  /** Kernel arguments every node gets (the grid's keys, the console). */
  cmdline: string[];
  hosts: NetbootHost[];
  /** What DHCP hands out to anything else on the bridge (the nodes have fixed addresses). */
  range: { first: string; last: string; netmask: string };
  /**
   * The bridge's IPv6 address (a ULA /64), from which dnsmasq advertises itself as an IPv6
   * router that routes nowhere, so that the nodes' iPXE does not wait for one.
   */
  ipv6: { address: string; prefix: string };
}): NetbootServer {
  checkDnsmasq();
  addBridgeAddress(o.namespace, o.ipv6.address);
  const [root = "", conf = "", pidFile = "", log = "", leases = ""] = netbootFiles(o.dir);
  rmSync(root, { recursive: true, force: true });
  // dnsmasq running as root serves only world-readable files; the state directory above
  // (0700, root's) is what keeps the boot script and its join token from other users.
  mkdirSync(root, { recursive: true, mode: 0o755 });
  place(o.image.kernel, join(root, "vmlinuz"));
  place(o.image.initrd, join(root, "initrd.img"));
  const [console = "console=ttyS0", ...args] = o.cmdline;
  writeFileSync(
    join(root, "boot.ipxe"),
    ipxeScript({ console: [console], args, hostnameFromDhcp: true }),
    { mode: 0o644 },
  );
  const server: NetbootServer = { pid: 0, pidFile, conf, log, root };
  writeFileSync(
    conf,
    [
      dnsmasqConfig({
        iface: BRIDGE,
        tftpRoot: root,
        range: o.range,
        hosts: o.hosts,
        leaseFile: leases,
        // The namespace has no way out; the nodes need no default route.
        noRouter: true,
        routerAdvertisement: { prefix: o.ipv6.prefix },
      }),
      // It stays root, to read the state directory (root's alone, 0700). It answers only
      // the simulated nodes, inside the namespace.
      "user=root",
      `pid-file=${server.pidFile}`,
      `log-facility=${server.log}`,
      "log-dhcp",
      "",
    ].join("\n"),
    { mode: 0o600 },
  );
  rmSync(server.pidFile, { force: true });
  // dnsmasq forks into the background once its sockets are bound; errors come back here.
  const [cmd, ...argv] = inNamespace(o.namespace, [DNSMASQ, `--conf-file=${conf}`]) as [
    string,
    ...string[],
  ];
  const r = spawnSync(cmd, argv, { encoding: "utf8", timeout: 30_000 });
  if (r.error) throw new SimError(`cannot run ${DNSMASQ}: ${r.error.message}`, "host");
  if (r.status !== 0)
    throw new SimError(
      `${DNSMASQ} (DHCP and TFTP for --boot pxe) failed (exit ${r.status ?? r.signal}): ${(r.stderr || r.stdout).trim()}`,
      "host",
    );
  server.pid = readPid(server.pidFile);
  return server;
}

function readPid(file: string): number {
  // dnsmasq writes its pid file just after the parent returns; give it a moment.
  for (let i = 0; i < 50; i++) {
    try {
      const pid = Number(readFileSync(file, "utf8").trim());
      if (Number.isSafeInteger(pid) && pid > 0) return pid;
    } catch {
      // Not there yet.
    }
    spawnSync("sleep", ["0.1"]);
  }
  throw new SimError(`${DNSMASQ} wrote no pid to ${file}`, "host");
}

/** Whether `pid` is our dnsmasq still (pids are reused: its command line must name `conf`). */
export function netbootAlive(server: NetbootServer | null | undefined): boolean {
  if (!server) return false;
  try {
    const argv = readFileSync(`/proc/${server.pid}/cmdline`, "utf8").split("\0");
    return argv[0]?.endsWith(DNSMASQ) === true && argv.includes(`--conf-file=${server.conf}`);
  } catch {
    return false;
  }
}

/** The files dnsmasq sent, by client address, from its log ("sent FILE to ADDRESS"). */
export function filesSent(server: NetbootServer): Map<string, string[]> {
  const sent = new Map<string, string[]>();
  let text = "";
  try {
    text = readFileSync(server.log, "utf8");
  } catch {
    return sent;
  }
  for (const m of text.matchAll(/\bsent (\S+) to (\S+)$/gm)) {
    const [, file = "", to = ""] = m;
    const name = file.slice(file.lastIndexOf("/") + 1);
    sent.set(to, [...(sent.get(to) ?? []), name]);
  }
  return sent;
}

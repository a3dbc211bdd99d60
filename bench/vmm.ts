/**
 * `npm run bench -- vmm`: our microVM monitor next to `qemu-system-x86_64 -M microvm
 * -enable-kvm`, in the same run, inside one simulated node (the node's nested KVM: stock
 * kernels do not boot on this machine's own), with the same Debian cloud kernel, initrd, disk
 * file and bridge. Measured (bench/vmm-node.ts does it on the node): boot to the guest's init,
 * the monitor's resident memory without guest RAM, virtio-blk sequential MB/s and 4 KiB IOPS
 * (guestbench, O_DIRECT, one request at a time), and TCP throughput between two VMs.
 *
 * QEMU is Debian's, the one the simulator itself runs: its binary, the libraries ldd names and
 * the microvm firmware go on the node's assets disk, and run through their own ld.so.
 */
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { debianCloudKernel, debianExtract } from "../image/debian.js";
import { type GuestKernel, guestModules } from "../image/guest.js";
import { cpioImage } from "../image/tools.js";
import { down, NodeShell, SimError, unwedge, up, type WedgeSockets } from "../src/sim/index.js";
import { extractVmlinux } from "../src/vmm/index.js";
import { median, progress, report } from "./report.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const QEMU = "/usr/bin/qemu-system-x86_64";
/** The microvm machine's firmware (qboot) and the option ROMs it loads the kernel with. */
const QEMU_FIRMWARE = ["bios-microvm.bin", "linuxboot_dma.bin", "pvh.bin"];
const RUNS = Number(process.env.FLATGRID_BENCH_RUNS ?? 3);
/** Seconds of each disk pattern and of the network transfer, in the guests. */
const SECONDS = Number(process.env.FLATGRID_BENCH_SECONDS ?? 5);
/**
 * Leaves the simulated node up at the end, passed or failed, to look at a hang or try things:
 * `flatgrid sim console 1 --dir DIR/sim`, and `flatgrid sim down --dir DIR/sim` after.
 */
const KEEP = process.env.FLATGRID_BENCH_KEEP === "1";
/** How many wedged nodes one run replaces before it gives up. */
const MAX_WEDGES = 3;
/** How many rounds one run measures again because the node stalled during them. */
const MAX_STALLS = 6;
/** How often the node's vCPU is looked at while a step runs. */
const STALL_LOOK_MS = 5000;

/**
 * Watches the node's vCPU through QMP while `step` runs, nudges it when it is wedged (see
 * WEDGED and unwedge in src/sim), and says for how long it was seen wedged: the simulator's
 * QEMU sometimes leaves the node's vCPU halted with its timer interrupt pending, and then
 * nothing on the node runs, neither the VMs being measured nor the runner that times them.
 * Left alone, such a stall lasted 20 s and 165 s on 2026-11-29 (a client VM "booted" in
 * 182 s, where it takes 11); nudged, it lasts up to one look. A step that spans one measured
 * the simulator, not a monitor, and its round is measured again.
 */
async function stallsDuring<T>(
  node: WedgeSockets,
  step: () => Promise<T>,
): Promise<{ value: T; stalledMs: number; nudged: number }> {
  let stalledMs = 0;
  let nudged = 0;
  let running = true;
  const watch = (async () => {
    while (running) {
      await new Promise((r) => setTimeout(r, STALL_LOOK_MS));
      if (!running) break;
      const { wedged, still } = await unwedge(node);
      if (!wedged) continue;
      // Wedged for up to a look before the nudge; a wedge the nudge did not end goes on.
      stalledMs += STALL_LOOK_MS;
      if (!still) nudged++;
    }
  })();
  try {
    return { value: await step(), stalledMs, nudged };
  } finally {
    running = false;
    await watch;
  }
}

/**
 * The guests' /init. The boot marker comes first, before anything else the init does; then
 * the virtio modules and the role the command line gives: `server` tests its disk and then
 * receives, `client` sends to it, `boot` only boots.
 */
function guestInit(modules: string[]): string {
  return `#!/bin/busybox sh
/bin/guestbench mark
/bin/busybox mkdir -p /proc /sys /dev /bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${modules.join(" ")}; do insmod /lib/modules/$m.ko || echo "fgbench: error insmod $m"; done
arg() { tr ' ' '\\n' < /proc/cmdline | sed -n "s/^fgb\\.$1=//p"; }
role=$(arg role)
secs=$(arg secs)
up() {
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  ip addr add "$(arg ip)/24" dev eth0 && ip link set eth0 up || echo "fgbench: error eth0"
}
case "$role" in
server)
  i=0
  while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  guestbench blk /dev/vda "$secs"
  up
  guestbench net-recv "$(arg port)"
  ;;
client)
  up
  guestbench net-send "$(arg peer)" "$(arg port)" "$secs"
  ;;
esac
echo "fgbench: done"
while true; do sleep 3600; done
`;
}

/** The kernel, the guest initrd, QEMU with its libraries, and the node-side runner. */
function buildAssets(dir: string, kernel: GuestKernel): { image: string; qemuVersion: string } {
  const root = join(dir, "assets");
  mkdirSync(root, { recursive: true });
  copyFileSync(kernel.path, join(root, "vmlinuz"));
  writeFileSync(join(root, "vmlinux"), extractVmlinux(readFileSync(kernel.path), kernel.path));

  const initrd = join(dir, "initrd-root");
  mkdirSync(join(initrd, "bin"), { recursive: true });
  mkdirSync(join(initrd, "lib/modules"), { recursive: true });
  const modules = guestModules(kernel);
  for (const m of modules) copyFileSync(m.path, join(initrd, "lib/modules", `${m.name}.ko`));
  copyFileSync(join(debianExtract("busybox-static"), "bin/busybox"), join(initrd, "bin/busybox"));
  chmodSync(join(initrd, "bin/busybox"), 0o755);
  symlinkSync("busybox", join(initrd, "bin/sh"));
  copyFileSync(join(ROOT, "native/out/guestbench"), join(initrd, "bin/guestbench"));
  chmodSync(join(initrd, "bin/guestbench"), 0o755);
  writeFileSync(join(initrd, "init"), guestInit(modules.map((m) => m.name)), { mode: 0o755 });
  cpioImage(initrd, join(root, "initrd.img"));

  const qemu = join(root, "qemu");
  mkdirSync(join(qemu, "lib"), { recursive: true });
  mkdirSync(join(qemu, "share"), { recursive: true });
  copyFileSync(QEMU, join(qemu, "qemu-system-x86_64"));
  chmodSync(join(qemu, "qemu-system-x86_64"), 0o755);
  const ldd = execFileSync("ldd", [QEMU], { encoding: "utf8" });
  for (const m of ldd.matchAll(/=> (\/\S+) \(0x/g)) {
    const lib = m[1] ?? "";
    copyFileSync(lib, join(qemu, "lib", basename(lib)));
  }
  const loader = /^\s*(\/\S*ld-linux-x86-64\.so\.2) \(0x/m.exec(ldd)?.[1];
  if (!loader) throw new Error(`ldd ${QEMU} names no ld-linux-x86-64.so.2`);
  copyFileSync(loader, join(qemu, "ld-linux-x86-64.so.2"));
  chmodSync(join(qemu, "ld-linux-x86-64.so.2"), 0o755);
  for (const f of QEMU_FIRMWARE) copyFileSync(join("/usr/share/qemu", f), join(qemu, "share", f));
  const qemuVersion =
    /version (\S+)/.exec(execFileSync(QEMU, ["--version"], { encoding: "utf8" }))?.[1] ?? "?";

  copyFileSync(join(ROOT, "dist/bench/vmm-node.js"), join(root, "vmm-node.mjs"));
  const image = join(dir, "assets.ext4");
  execFileSync("mke2fs", ["-q", "-t", "ext4", "-d", root, "-L", "fgbench", image, "320M"]);
  return { image, qemuVersion };
}

type Kind = "flatgrid" | "flatgrid-userspace-net" | "qemu" | "flatgrid-pvh" | "qemu-pvh";

interface BootResult {
  kind: Kind;
  bootMs: number;
  vmmKiB: number;
  guestKiB: number;
  rssKiB: number;
  /** Of guestKiB, in transparent huge pages. */
  guestHugeKiB: number;
  /** The node's busiest threads over the step, as "37% pid/tid name". */
  threads?: string[];
}

interface PairResult extends BootResult {
  clientBootMs: number;
  blk: Record<string, { MBps: string; iops: string; ops: string }>;
  net: { recv: { Mbps: string; bytes: string }; path: string | null };
}

/**
 * Runs the node-side runner. The shell knows the node's QMP socket: a node that wedges (see
 * WEDGED in src/sim) fails the bench at once, with where its vCPU is.
 */
async function onNode<T>(shell: NodeShell, args: string): Promise<T> {
  const { output, status } = await shell.exec(
    `FGBENCH_SECONDS=${SECONDS} node /mnt/vmm-node.mjs ${args}`,
    900_000,
  );
  const line = /fgbench-result (\{.*\})/.exec(output)?.[1];
  const value = line ? (JSON.parse(line) as T & { error?: string }) : null;
  if (status !== 0 || !value || value.error)
    throw new Error(
      `vmm-node.mjs ${args} failed (status ${status}):\n${value?.error ?? output.slice(-3000)}`,
    );
  return value;
}

export async function run(): Promise<void> {
  const dir = mkdtempSync("/var/tmp/flatgrid-bench-vmm-");
  const simDir = join(dir, "sim");
  // The node's shell, for the finally below (a closure replaces it when a node wedges).
  const held: { shell: NodeShell | null } = { shell: null };
  try {
    progress("assets: Debian cloud kernel, guest initrd with guestbench, QEMU and its libraries");
    const { image, qemuVersion } = buildAssets(dir, debianCloudKernel());
    const bootNode = async (): Promise<{ shell: NodeShell; sockets: WedgeSockets }> => {
      progress("booting one simulated node");
      const { state, seconds } = await up({
        nodes: 1,
        dir: simDir,
        memoryMiB: 2048,
        // One vCPU: see tcgVcpusWarning (a node with two froze under QEMU 7.2's TCG).
        cpus: 1,
        extraDisks: [image],
        progress: (line) => progress(`sim: ${line}`),
      });
      progress(`node ready in ${seconds.toFixed(0)} s`);
      const node = state.nodes[0];
      if (!node) throw new Error("the simulator started no node");
      const sh = NodeShell.forNode(node.qemu);
      held.shell = sh;
      await sh.open();
      const mounted = await sh.exec("mkdir -p /mnt && mount -o ro /dev/vdb /mnt", 60_000);
      if (mounted.status !== 0) throw new Error(`mounting the assets disk: ${mounted.output}`);
      await onNode(sh, "setup");
      const { paused } = await onNode<{ paused: { pid: number; command: string }[] }>(
        sh,
        "pause-services",
      );
      progress(
        `the node's own services stopped while the bench measures: ${paused.map((p) => `${p.pid} ${p.command.split(" ").slice(0, 2).join(" ")}`).join(", ")}`,
      );
      const { settle } = await onNode<{
        settle: { seconds: number; idle: number; settled: boolean };
      }>(sh, "settle");
      progress(
        `node ${settle.settled ? "quiet" : "still busy"} after ${settle.seconds.toFixed(0)} s (CPU ${(settle.idle * 100).toFixed(0)}% idle)`,
      );
      return { shell: sh, sockets: node.qemu };
    };
    let current = await bootNode();
    let wedges = 0;
    /**
     * One round on the node: each kind in turn, `what` (boot or pair) of it. The simulator's
     * QEMU 7.2 wedges a node now and then (its emulation of nested SVM stops delivering an
     * interrupt to a halted vCPU): then a fresh node replaces it and runs the whole round
     * again, so that both monitors of a round are still measured on one node, back to back.
     * Up to MAX_WEDGES times in a run.
     */
    let stalls = 0;
    const round = async <T>(what: "boot" | "pair", kinds: Kind[]): Promise<[Kind, T][]> => {
      for (;;) {
        const results: [Kind, T][] = [];
        try {
          let stalled = "";
          for (const kind of kinds) {
            const { value, stalledMs, nudged } = await stallsDuring(current.sockets, () =>
              onNode<T>(current.shell, `${what} ${kind}`),
            );
            results.push([kind, value]);
            if (stalledMs)
              stalled = `${kind}'s ${what} (wedged for about ${stalledMs / 1000} s; ${nudged} wedge${nudged === 1 ? "" : "s"} ended by a nudge on its console)`;
          }
          if (!stalled) return results;
          if (++stalls > MAX_STALLS)
            throw new Error(
              `the node stalled during ${stalled}, and ${MAX_STALLS} rounds were measured again already`,
            );
          progress(
            `the node stalled during ${stalled}: the round is measured again (${stalls} of at most ${MAX_STALLS})`,
          );
        } catch (err) {
          if (!(err instanceof SimError && err.code === "wedged") || ++wedges > MAX_WEDGES)
            throw err;
          progress(
            `the node wedged during a ${what} round (${wedges} of at most ${MAX_WEDGES}): a fresh node runs the round again`,
          );
          current.shell.close();
          down({ dir: simDir });
          current = await bootNode();
        }
      }
    };

    const boots: Record<Kind, BootResult[]> = {
      flatgrid: [],
      "flatgrid-userspace-net": [],
      qemu: [],
      "flatgrid-pvh": [],
      "qemu-pvh": [],
    };
    for (let i = 0; i < RUNS; i++) {
      // Alternate who goes first, so that a slow moment of the machine falls on both alike.
      const order: Kind[] =
        i % 2
          ? ["qemu", "flatgrid", "qemu-pvh", "flatgrid-pvh"]
          : ["flatgrid", "qemu", "flatgrid-pvh", "qemu-pvh"];
      for (const [kind, r] of await round<BootResult>("boot", order)) {
        boots[kind].push(r);
        progress(
          `boot ${i + 1}/${RUNS} ${kind}: ${r.bootMs} ms to init, monitor ${(r.vmmKiB / 1024).toFixed(1)} MiB besides guest RAM`,
        );
      }
    }
    const pairs: Record<Kind, PairResult[]> = {
      flatgrid: [],
      "flatgrid-userspace-net": [],
      qemu: [],
      "flatgrid-pvh": [],
      "qemu-pvh": [],
    };
    // The same alternation; ours without vhost-net once, for what the kernel's data path buys.
    const rounds: Kind[][] = [];
    for (let i = 0; i < RUNS; i++) rounds.push(i % 2 ? ["qemu", "flatgrid"] : ["flatgrid", "qemu"]);
    rounds.push(["flatgrid-userspace-net"]);
    for (const [i, kinds] of rounds.entries())
      for (const [kind, r] of await round<PairResult>("pair", kinds)) {
        pairs[kind].push(r);
        const b = (t: string) => r.blk[t];
        progress(
          `pair ${i + 1}/${rounds.length} ${kind}: warm-up write ${b("warm-up")?.MBps} MB/s, seq read ${b("seq-read")?.MBps} MB/s, seq write ${b("seq-write")?.MBps} MB/s, 4k read ${b("rand-read")?.iops} IOPS, 4k write ${b("rand-write")?.iops} IOPS, net ${r.net.recv.Mbps} Mbit/s${r.net.path ? ` (${r.net.path.replace(/^.*frames moved by /, "")})` : ""}, monitor ${(r.vmmKiB / 1024).toFixed(1)} MiB after disk work, guest RAM ${(r.guestKiB / 1024).toFixed(0)} MiB resident, ${(r.guestHugeKiB / 1024).toFixed(0)} MiB of it in huge pages; client booted in ${r.clientBootMs} ms; busiest threads: ${r.threads?.join(", ")}`,
        );
      }

    const where = `inside one simulated node (QEMU TCG, 1 vCPU), nested KVM, its grid service, etcd and console stopped; guests 1 vCPU, 256 MiB; QEMU ${qemuVersion}`;
    const base = { bench: "vmm", baseline: "qemu-microvm" };
    const bootMs = (k: Kind) => median(boots[k].map((r) => r.bootMs));
    report({
      ...base,
      metric: "boot_ms",
      value: bootMs("flatgrid"),
      unit: "ms",
      baseline_value: bootMs("qemu"),
      target_ratio: 1,
      note: `monitor spawn to the guest init's first line, median of ${RUNS}; the bzImage; ${where}`,
    });
    report({
      ...base,
      metric: "boot_pvh_ms",
      value: bootMs("flatgrid-pvh"),
      unit: "ms",
      baseline: "qemu-microvm-pvh",
      baseline_value: bootMs("qemu-pvh"),
      target_ratio: 1,
      note: `the same kernel unpacked (vmlinux) and entered through PVH by both, median of ${RUNS}`,
    });
    report({
      ...base,
      metric: "boot_pvh_vs_bzimage_ms",
      value: bootMs("flatgrid-pvh"),
      unit: "ms",
      baseline: "flatgrid-bzimage",
      baseline_value: bootMs("flatgrid"),
      note: "ours through PVH next to ours with the bzImage: what skipping the guest's decompressor buys",
    });
    const rss = (k: Kind) => median(boots[k].map((r) => r.vmmKiB)) / 1024;
    report({
      ...base,
      metric: "rss_mib",
      value: rss("flatgrid"),
      unit: "MiB",
      baseline_value: rss("qemu"),
      target_ratio: 1.5,
      note: `resident memory at the boot marker without the guest RAM mapping, median of ${RUNS}`,
    });
    const after = (k: Kind) => median(pairs[k].map((r) => r.vmmKiB)) / 1024;
    report({
      ...base,
      metric: "rss_after_io_mib",
      value: after("flatgrid"),
      unit: "MiB",
      baseline_value: after("qemu"),
      target_ratio: 1.5,
      note: `the same, after the disk tests, median of ${RUNS}`,
    });
    const blk = (k: Kind, test: string, field: "MBps" | "iops") =>
      median(pairs[k].map((r) => Number(r.blk[test]?.[field])));
    // Round i ran ours and QEMU back to back (pairs[k][i]): their ratio, round by round.
    const perRound = (value: (r: PairResult) => number) =>
      pairs.flatgrid.map((r, i) => {
        const q = pairs.qemu[i];
        return q ? value(r) / value(q) : Number.NaN;
      });
    const huge = (k: Kind) => median(pairs[k].map((r) => r.guestHugeKiB)) / 1024;
    const blkNote = `guestbench, ${SECONDS} s per pattern: O_DIRECT, one request at a time, 128 MiB file in the node's RAM, median of ${RUNS}; guest RAM in transparent huge pages after the disk work: ours ${huge("flatgrid").toFixed(0)} MiB, QEMU's ${huge("qemu").toFixed(0)} MiB`;
    for (const [metric, test, field, unit] of [
      ["blk_seq_mbps", "seq-read", "MBps", "MB/s"],
      ["blk_seq_write_mbps", "seq-write", "MBps", "MB/s"],
      ["blk_4k_iops", "rand-read", "iops", "IOPS"],
      ["blk_4k_write_iops", "rand-write", "iops", "IOPS"],
    ] as const)
      report({
        ...base,
        metric,
        value: blk("flatgrid", test, field),
        unit,
        baseline_value: blk("qemu", test, field),
        target_ratio: 0.8,
        higher_is_better: true,
        round_ratios: perRound((r) => Number(r.blk[test]?.[field])),
        note: blkNote,
      });
    // The warm-up, reported beside the targets rather than among them: the guest's first
    // 2 s of disk writes after boot, which is also each monitor's first disk work.
    report({
      ...base,
      metric: "blk_warmup_write_mbps",
      value: blk("flatgrid", "warm-up", "MBps"),
      unit: "MB/s",
      baseline_value: blk("qemu", "warm-up", "MBps"),
      higher_is_better: true,
      round_ratios: perRound((r) => Number(r.blk["warm-up"]?.MBps)),
      note: "the guest's first 2 s of sequential writes after boot, before the measured patterns: the first disk requests of the guest and of its monitor",
    });
    const gbps = (k: Kind) => median(pairs[k].map((r) => Number(r.net.recv.Mbps))) / 1000;
    report({
      ...base,
      metric: "net_gbps",
      value: gbps("flatgrid"),
      unit: "Gbit/s",
      baseline_value: gbps("qemu"),
      target_ratio: 0.9,
      higher_is_better: true,
      round_ratios: perRound((r) => Number(r.net.recv.Mbps)),
      note: `one TCP stream for ${SECONDS} s between two VMs on a bridge of the node; both monitors with vhost-net; median of ${RUNS}`,
    });
    report({
      ...base,
      metric: "net_userspace_gbps",
      value: gbps("flatgrid-userspace-net"),
      unit: "Gbit/s",
      baseline_value: gbps("qemu"),
      note: "ours with frames moved by the monitor itself (vhost: false), next to QEMU with vhost-net",
    });
  } finally {
    if (KEEP && held.shell)
      await onNode(held.shell, "resume-services").catch((err: Error) =>
        progress(`the node's services could not be resumed: ${err.message}`),
      );
    held.shell?.close();
    if (KEEP) {
      progress(
        `FLATGRID_BENCH_KEEP: the node is still up (flatgrid sim status --dir ${simDir}); its assets disk is ${join(dir, "assets.ext4")}`,
      );
    } else {
      down({ dir: simDir });
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

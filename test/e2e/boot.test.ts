// The node image booted for real, as one simulated server (src/sim): QEMU (software emulation
// with -cpu max where the host's KVM cannot boot stock kernels, so the node gets hardware
// virtualisation of its own) starts build/image/vmlinuz and initrd.img with a NIC on a tap
// inside the simulator's private network namespace. Nothing leaves that namespace.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { debianCloudKernel } from "../../image/debian.js";
import { VM_CPU_WEIGHT } from "../../src/agent/index.js";
import type { GridStatus } from "../../src/grid/index.js";
import {
  down,
  kill,
  loadState,
  NodeShell,
  READY_LINE,
  readLog,
  type SimState,
  start,
  up,
  vcpuLines,
} from "../../src/sim/index.js";
import {
  buildCatalogDisk,
  buildGuestAssets,
  type CatalogVm,
  DB_VOLUME,
  DISK_MARKER,
  VSOCK_PORT,
} from "./guest-assets.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const IMAGE = join(ROOT, "build/image");
const id = randomBytes(3).toString("hex");
const WORK = `/var/tmp/flatgrid-e2e-${id}`;
const SIM_DIR = join(WORK, "sim");
const CATALOG = join(ROOT, "build/catalog");
let catalogVms: CatalogVm[] = [];

let sim: SimState | null = null;
let shell: NodeShell | null = null;

before(() => {
  // The image is built by the e2e suite's first step (npm run image); build it if missing.
  if (!existsSync(join(IMAGE, "initrd.img"))) {
    execFileSync(process.execPath, [join(ROOT, "dist/image/build.js")], { stdio: "inherit" });
  }
  if (!existsSync(join(CATALOG, "manifest.json"))) {
    execFileSync(process.execPath, [join(ROOT, "dist/image/catalog.js")], { stdio: "inherit" });
  }
  mkdirSync(WORK, { recursive: true });
});

after(() => {
  shell?.close();
  down({ dir: SIM_DIR });
  rmSync(WORK, { recursive: true, force: true });
});

/**
 * After a failed test, the node's last console lines (a panic, an OOM or a reboot shows there)
 * and where its vCPUs are, twice a second apart: a node that stopped answering shows whether
 * a vCPU loops in one place with interrupts off.
 */
async function consoleTail(t: { name: string; passed?: boolean }): Promise<void> {
  const node = sim?.nodes[0];
  if (t.passed !== false || !node) return;
  const tail = readLog(node.qemu.consoleLog).trimEnd().split("\n").slice(-60);
  process.stdout.write(
    `# node-1's serial console, last lines after "${t.name}" failed:\n${tail.map((l) => `#   ${l}`).join("\n")}\n`,
  );
  for (let sample = 0; sample < 2; sample++) {
    if (sample) await new Promise((r) => setTimeout(r, 1000));
    const lines = await vcpuLines(node.qemu.qmpSocket).catch((e: Error) => [e.message]);
    process.stdout.write(`# node-1's vCPUs:\n${lines.map((l) => `#   ${l}`).join("\n")}\n`);
  }
}

describe("the node image in QEMU", { timeout: 1_200_000 }, () => {
  afterEach(consoleTail);
  it("boots to the supervisor's ready line with /dev/kvm, static network and services", async () => {
    // Test assets for the microVM test below, on a disk the node sees as /dev/vdb.
    const assets = buildGuestAssets(WORK, debianCloudKernel());
    const catalog = buildCatalogDisk(WORK, CATALOG);
    catalogVms = catalog.vms;
    const manifest = JSON.parse(readFileSync(join(IMAGE, "manifest.json"), "utf8"));
    assert.match(manifest.outputs["initrd.img"].sha256, /^[0-9a-f]{64}$/);
    // The manifest names the Debian package versions the image was built from.
    assert.ok(
      manifest.packages.some((p: string) => /^etcd-server \S+$/.test(p)),
      "etcd-server version",
    );
    assert.ok(
      manifest.packages.some((p: string) => /^busybox \S+$/.test(p)),
      "busybox version",
    );
    const result = await up({
      nodes: 1,
      dir: SIM_DIR,
      memoryMiB: 3072,
      // One vCPU: with two, QEMU's multi-threaded TCG froze the node (a vCPU looping on kernel
      // code the other had just patched as a microVM started; see tcgVcpusWarning). The
      // microVMs still get 2 vCPUs of their own, as threads on this one.
      cpus: 1,
      // The assets disk comes after the node's own blank disk: /dev/vdb on the node.
      extraDisks: [assets.image, catalog.image],
      progress: (line) => process.stdout.write(`# sim: ${line}\n`),
    });
    sim = result.state;
    const node = sim.nodes[0];
    assert.ok(node);
    const serial = readLog(node.qemu.consoleLog);
    assert.match(serial, /flatgrid-init: mode os: PID 1 of the machine/);
    const ready = READY_LINE.exec(serial);
    assert.ok(ready, "the ready line");
    process.stdout.write(`# node ready ${result.seconds.toFixed(1)} s after QEMU started\n`);
    assert.equal(ready[2], "yes", "the node has a /dev/kvm of its own");
    assert.match(serial, /flatgrid-supervisor: hostname: node-1/);
    assert.match(serial, /flatgrid-supervisor: network: eth0 10\.215\.0\.1\/24/);
    assert.doesNotMatch(serial, /ERROR: configuration/);
    // Debian's generic kernel: the drivers of this (virtual) hardware came by coldplug, from
    // the devices' modaliases, before the disks and the network were needed.
    assert.match(serial, /Linux version 6\.[0-9.]+-\d+-amd64 /);
    const drivers =
      /flatgrid-supervisor: hardware drivers \(coldplug\): (.*)/.exec(serial)?.[1] ?? "";
    for (const m of ["virtio_pci", "virtio_net", "virtio_blk", "kvm_intel|kvm_amd"])
      assert.match(drivers, new RegExp(`\\b(${m})\\b`), `coldplug loaded ${m}: ${drivers}`);
    // Its own blank disk became the data partition (the simulator sets flatgrid.format=blank);
    // the disk with a file system of someone else's was left alone, and the log says so.
    assert.match(
      serial,
      /flatgrid-supervisor: data partition: \/dev\/vda formatted and mounted at \/var\/lib\/flatgrid/,
    );
    assert.match(
      serial,
      /flatgrid-supervisor: disk \/dev\/vdb \(\d+ MiB\): holds an ext4 file system labelled "assets": not ours, left alone/,
    );
    const ping = execFileSync(
      "ip",
      ["netns", "exec", sim.namespace, "ping", "-c", "2", "-W", "20", "10.215.0.1"],
      {
        encoding: "utf8",
      },
    );
    assert.match(ping, /2 received/);
  });

  it("runs a Debian cloud kernel on 2 vCPUs with its virtio disk in a microVM on the node's nested KVM: as a bzImage, through PVH, at its 64-bit ELF entry", async () => {
    const node = sim?.nodes[0];
    assert.ok(node, "the node booted");
    const sh = NodeShell.forNode(node.qemu);
    shell = sh;
    await sh.open();
    await sh.run("mkdir -p /mnt && mount -t ext4 /dev/vdb /mnt && ls /mnt", /vm2\.json/, 60_000);
    // Debian's kernels find the second vCPU only in the MADT (no X86_MPPARSE) and virtio-mmio
    // devices only in the DSDT (no VIRTIO_MMIO_CMDLINE_DEVICES): this is the VMM's ACPI.
    const started = Date.now();
    const progress = setInterval(() => {
      const seen = sh.output.match(/guest: [^\r\n]*/g) ?? [];
      process.stdout.write(
        `# microVM: ${((Date.now() - started) / 1000).toFixed(0)} s, last: ${seen.at(-1) ?? "(nothing yet)"}\n`,
      );
    }, 30_000);
    let out: string;
    try {
      // In a control group of its own: the node's cgroup v2 tree (flatgrid's init mounts it).
      out = await sh.run(
        "flatgrid vmm --config /mnt/vm2.json --cgroup flatgrid/e2e/vm2; echo vmm-exit=$?",
        /vmm-exit=\d+/,
        400_000,
      );
    } finally {
      clearInterval(progress);
    }
    process.stdout.write(
      `# microVM boot to init, disk and reset: ${((Date.now() - started) / 1000).toFixed(0)} s on the simulated node\n`,
    );
    for (const line of out.match(/guest: [^\r\n]*/g) ?? []) process.stdout.write(`# ${line}\n`);
    assert.match(out, /guest: init reached on 2 cpus/);
    assert.match(out, /guest: cpus online 0-1/);
    // CPUID as the VMM normalised it: KVM's own answer lacks the TSC-deadline bit, and two
    // vCPUs in one package are what HTT says.
    assert.match(out, /guest: timer lapic-deadline/);
    assert.match(out, /guest: cpu flags ht hypervisor tsc_deadline_timer x2apic/);
    // The disk's queue ran with event indexes for everything below (Linux takes them).
    assert.match(out, /guest: disk ring features indirect 1 event_idx 1/);
    assert.match(out, new RegExp(`guest: disk marker ${DISK_MARKER}`));
    assert.match(out, /guest: boot count 1\b/);
    assert.match(out, /guest: discard limit [1-9]\d* bytes/);
    assert.match(out, /guest: discarded, 0 bytes of it not zero/);
    assert.doesNotMatch(out, /insmod \S+ failed/);
    assert.match(out, /guest: rebooting/);
    assert.match(out, /flatgrid vmm: VM ended: reset/);
    assert.match(out, /vmm-exit=0/);
    // The guest's write went through virtio-blk into the file on the node.
    const count = await sh.run(
      "echo disk-count=$(head -c 16 /mnt/data.img | tr -dc 0-9)",
      /disk-count=\d+/,
      30_000,
    );
    assert.match(count, /disk-count=1\b/);
    // What the guest discarded reads as zeros in the file on the node too.
    const discarded = await sh.exec(
      "dd if=/mnt/data.img bs=65536 skip=8 count=1 2>/dev/null | tr -d '\\000' | wc -c",
      30_000,
    );
    assert.equal(discarded.output.trim(), "0", discarded.output);
    // Its limits were 2 CPUs and 256 MiB plus the monitor's 160; its use was charged there.
    const group = await sh.exec(
      "cd /sys/fs/cgroup/flatgrid/e2e/vm2 && cat cpu.max memory.max && grep usage_usec cpu.stat && cat memory.peak",
      30_000,
    );
    process.stdout.write(
      `# control group of the microVM:\n${group.output.replace(/^/gm, "#   ")}\n`,
    );
    assert.equal(group.status, 0, group.output);
    assert.match(group.output, /^200000 100000\n436207616\n/);
    assert.ok(Number(/usage_usec (\d+)/.exec(group.output)?.[1]) > 1_000_000, "CPU charged");
    const peak = Number(group.output.trim().split("\n").at(-1));
    assert.ok(peak > 32 * 2 ** 20 && peak <= 436207616, `memory peak ${peak}`);
    // The grid service's agent weighed the VMs' group (flatgrid) below the node's processes.
    const weight = await sh.exec("cat /sys/fs/cgroup/flatgrid/cpu.weight", 30_000);
    assert.equal(weight.output.trim(), String(VM_CPU_WEIGHT));

    assert.match(out, /flatgrid vmm: \/mnt\/vmlinuz: a bzImage, entered through the Linux 64-bit/);

    // Stopped and started again, the VM finds what it wrote: its disk is a plain file that
    // the monitor flushed before it exited. This time the same kernel boots unpacked, through
    // PVH: no decompressor runs in the guest.
    const pvhStarted = Date.now();
    const again = await sh.run(
      "flatgrid vmm --config /mnt/vm2-pvh.json; echo vmm-exit=$?",
      /vmm-exit=\d+/,
      400_000,
    );
    process.stdout.write(
      `# the same through PVH (vmlinux): ${((Date.now() - pvhStarted) / 1000).toFixed(0)} s\n`,
    );
    assert.match(again, /flatgrid vmm: \/mnt\/vmlinux: an ELF kernel with a PVH entry/);
    assert.match(again, /guest: init reached on 2 cpus/);
    assert.match(again, /guest: boot count 2\b/);
    assert.match(again, /vmm-exit=0/);

    // The host-guest channel: the guest connects to the node (context id 2) over virtio-vsock,
    // which the node's vhost-vsock serves; the node's listener sees the guest's context id.
    const vsock = await sh.run(
      `/mnt/vsock-echo listen ${VSOCK_PORT} 1 > /tmp/vsock.log 2>&1 & flatgrid vmm --config /mnt/vm-vsock.json; echo vmm-exit=$?`,
      /vmm-exit=\d+/,
      400_000,
    );
    const listener = await sh.exec("sleep 1; cat /tmp/vsock.log", 30_000);
    process.stdout.write(
      `# vsock:\n${[...(vsock.match(/guest: vsock[^\r\n]*/g) ?? []), ...listener.output.trim().split("\n")].map((l) => `#   ${l}`).join("\n")}\n`,
    );
    // This VM's kernel is the vmlinux without its PVH note: entered at its 64-bit entry.
    assert.match(vsock, /flatgrid vmm: \/mnt\/vmlinux-nopvh: an ELF kernel without a PVH entry/);
    assert.match(vsock, /guest: vsock vsock-echo: reply: echo from the host: hello from the guest/);
    assert.match(vsock, /vmm-exit=0/);
    assert.match(listener.output, /vsock-echo: from cid 3 port \d+: hello from the guest/);
    await sh.run("umount /mnt; echo umounted=$?", /umounted=\d/, 30_000);
  });

  it("keeps its identity, its grid and its data partition across a power cut", async () => {
    const node = sim?.nodes[0];
    assert.ok(node && shell, "the node booted");
    const { output: before } = await shell.exec(
      "flatgrid disks; echo node-id=$(cat /var/lib/flatgrid/grid/node-id)",
      120_000,
    );
    for (const line of before.split(/\r?\n/).filter((l) => /\/dev\/|data partition/.test(l)))
      process.stdout.write(`# ${line.trim()}\n`);
    assert.match(
      before,
      /data partition {2}\/dev\/vda at \/var\/lib\/flatgrid, 8\.0 GiB, formatted at this boot/,
    );
    assert.match(
      before,
      /\/dev\/vdb .* holds an ext4 file system labelled "assets": not ours, left alone/,
    );
    const nodeId = /node-id=([0-9a-f-]{36})/.exec(before)?.[1];
    assert.ok(nodeId, "the node has an id on its data partition");
    // The grid is up (one node: it created it) before the power is cut.
    const grid = await gridOf(shell);
    assert.equal(grid.phase, "member");
    shell.close();
    shell = null;

    kill("1", SIM_DIR);
    const ready = await start("1", {
      dir: SIM_DIR,
      progress: (line) => process.stdout.write(`# sim: ${line}\n`),
    });
    assert.match(ready.line, READY_LINE);
    // This boot's console only: start() noted where the log stood before powering on.
    const serial = readLog(node.qemu.consoleLog, loadState(SIM_DIR).nodes[0]?.consoleOffset ?? 0);
    assert.match(serial, /data partition: \/dev\/vda mounted at \/var\/lib\/flatgrid/);
    assert.doesNotMatch(serial, /formatted/);

    const sh = NodeShell.forNode(node.qemu);
    shell = sh;
    await sh.open();
    const { output: after } = await sh.exec(
      "echo node-id=$(cat /var/lib/flatgrid/grid/node-id)",
      60_000,
    );
    assert.match(after, new RegExp(`node-id=${nodeId}`));
    const regrid = await gridOf(sh);
    assert.equal(regrid.grid?.id, grid.grid?.id, "the same grid");
    assert.equal(regrid.nodeId, nodeId);
    // The console is on the simulated server's screen (its ttyS2), and has not crashed since
    // boot; its tty1 draws for nobody (QEMU has no display), so the simulator leaves it out.
    const { output: services } = await sh.exec("flatgrid services", 120_000);
    assert.match(services, /^console-ttys2 +running +\d+ +0 /m);
    assert.doesNotMatch(services, /^console-tty1 /m);
  });
  it("runs appliances of the catalog: web.0 and db.0 on one bridge, the page counts its hits in db", async () => {
    const sh = shell;
    assert.ok(sh, "the node's shell is open");
    const [db, web] = catalogVms;
    assert.ok(db && web);
    const setup = await sh.exec(
      [
        "mkdir -p /cat && mount -o ro /dev/vdc /cat",
        "ip link add fgbr0 type bridge && ip addr add 10.77.0.1/24 dev fgbr0 && ip link set fgbr0 up",
        "for t in e2et1 e2et2; do ip tuntap add $t mode tap && ip link set $t master fgbr0 && ip link set $t up; done",
        `rm -f ${DB_VOLUME} && truncate -s 64M ${DB_VOLUME} && mke2fs -q -F -t ext4 -L data -m 0 -E lazy_itable_init=1,lazy_journal_init=1 ${DB_VOLUME}`,
      ].join(" && "),
      120_000,
    );
    assert.equal(setup.status, 0, setup.output);
    /** Starts a VM in the background on the node and waits for its guest's ready line. */
    const boot = async (vm: CatalogVm): Promise<string> => {
      const log = `/tmp/${vm.name}.log`;
      // The node has no pkill: the shell's job, by its pid (`flatgrid` execs node).
      await sh.exec(
        `{ flatgrid vmm --config ${vm.config} > ${log} 2>&1 < /dev/null & echo $! > /tmp/${vm.name}.pid; }`,
        60_000,
      );
      const started = Date.now();
      for (;;) {
        const seen = (await sh.exec(`grep flatgrid ${log}`, 120_000)).output;
        if (/flatgrid-guest: ready/.test(seen)) {
          process.stdout.write(
            `# ${vm.name} ready ${((Date.now() - started) / 1000).toFixed(0)} s after start:\n${seen.trimEnd().replace(/^/gm, "#   ")}\n`,
          );
          return seen;
        }
        // "flatgrid: ..." is the command's own error (a tap in use, a disk missing).
        if (/VM ended|^flatgrid: /m.test(seen) || Date.now() - started > 400_000)
          assert.fail(
            `${vm.name} did not come up:\n${(await sh.exec(`tail -n 60 ${log}`, 60_000)).output}`,
          );
        await new Promise((r) => setTimeout(r, 3000));
      }
    };
    // db first, then web, which uses it: the order an agent starts them in.
    let logs = "";
    for (const vm of [db, web]) logs += await boot(vm);
    // The node has /dev/vhost-net: the kernel moves these VMs' frames, not the VMM.
    assert.match(logs, /flatgrid vmm: net e2et1: frames moved by vhost-net/);
    assert.match(logs, /flatgrid vmm: net e2et2: frames moved by vhost-net/);
    assert.match(logs, /flatgrid-guest: db\.0: db@1 on 1 cpus, eth0 10\.77\.0\.3\/24/);
    assert.match(logs, /db: redis on port 6379, data in \/data\/redis/);
    assert.match(logs, /flatgrid-guest: web\.0: web@1 on 1 cpus, eth0 10\.77\.0\.2\/24/);
    // The node's own HTTP client (busybox wget segfaulted on these emulated nodes).
    const get = async () =>
      (
        await sh.exec(
          `node -e "fetch('http://${web.address}/').then((r) => r.text()).then(console.log, (e) => console.log(String(e)))"`,
          180_000,
        )
      ).output;
    const first = await get();
    assert.match(first, /<h1>flatgrid shop<\/h1>/, first);
    assert.match(first, /served by <b>web\.0<\/b> of shop/);
    const n = Number(/hits: (\d+)/.exec(first)?.[1]);
    if (!(n >= 1)) {
      // Once, db.0's tap went down while web.0 booted: say what became of db.0.
      const dbLog = (await sh.exec(`tail -n 30 /tmp/${db.name}.log; flatgrid services`, 120_000))
        .output;
      assert.fail(`web.0 read no counter from db.0: ${first}\ndb.0's log:\n${dbLog}`);
    }
    const second = await get();
    assert.match(second, new RegExp(`hits: ${n + 1}\\b`), "the counter went up in db.0");
    process.stdout.write(`# GET http://${web.address}/ twice: hits ${n}, then ${n + 1}\n`);
    // db.0's VM killed and started again: the counter is on its data volume, not in its RAM.
    const killed = await sh.exec(
      `pid=$(cat /tmp/${db.name}.pid); kill -9 $pid; wait $pid; [ -e /proc/$pid ] && echo still there || echo gone`,
      60_000,
    );
    assert.match(killed.output, /^gone$/m, killed.output);
    await boot(db);
    // redis reads its append-only file after the guest says ready: ask again for a while.
    let third = "";
    for (let i = 0; i < 12; i++) {
      third = await get();
      if (/hits: \d+/.test(third)) break;
      await new Promise((r) => setTimeout(r, 5000));
    }
    const after = Number(/hits: (\d+)/.exec(third)?.[1]);
    if (!(after >= n + 2)) {
      const dbLog = (await sh.exec(`tail -n 30 /tmp/${db.name}.log`, 120_000)).output;
      // Lost data would count from 1 again.
      assert.fail(`the counter did not outlive db.0's VM: ${third}\ndb.0's log:\n${dbLog}`);
    }
    process.stdout.write(`# db.0 killed and started again: hits ${after}, from its data volume\n`);
    await sh.exec(
      `for n in ${db.name} ${web.name}; do pid=$(cat /tmp/$n.pid); kill $pid; wait $pid; done; echo stopped`,
      60_000,
    );
  });

  it("`flatgrid config set` applies network settings at once: a new address, gateway and name server; the grid follows the node to its new address", async () => {
    const sh = shell;
    assert.ok(sh, "the node's shell is open");
    assert.ok(sim);
    const gridBefore = await gridOf(sh);
    const set = await sh.exec(
      "flatgrid config set flatgrid.ip=10.215.0.9/24 flatgrid.gateway=10.215.0.254 flatgrid.dns=10.215.0.53 --new-password e2e-console-pw; echo rc=$?; ip -4 addr show dev eth0; ip route show default; cat /etc/resolv.conf",
      180_000,
    );
    for (const line of set.output.trimEnd().split("\n")) process.stdout.write(`#   ${line}\n`);
    assert.match(
      set.output,
      /^stored in \/var\/lib\/flatgrid\/node\.conf: flatgrid\.ip, flatgrid\.gateway, flatgrid\.dns$/m,
    );
    assert.match(
      set.output,
      /^the network settings apply now \(flatgrid\.ip, flatgrid\.gateway, flatgrid\.dns\)$/m,
    );
    assert.match(set.output, /^restarted: grid$/m);
    assert.match(set.output, /^rc=0$/m);
    assert.match(set.output, /inet 10\.215\.0\.9\/24/);
    assert.doesNotMatch(set.output, /inet 10\.215\.0\.1\//);
    assert.match(set.output, /^default via 10\.215\.0\.254 dev eth0/m);
    assert.match(set.output, /^nameserver 10\.215\.0\.53$/m);
    // Reached at its new address only.
    const ping = (address: string) =>
      spawnSync(
        "ip",
        ["netns", "exec", sim?.namespace ?? "", "ping", "-c", "1", "-W", "5", address],
        {
          encoding: "utf8",
        },
      ).status;
    assert.equal(ping("10.215.0.9"), 0);
    assert.notEqual(ping("10.215.0.1"), 0);
    // Its grid, the same one, at the new address: alone, it signed its own certificate.
    const grid = await gridOf(sh);
    assert.equal(grid.grid?.id, gridBefore.grid?.id);
    assert.equal(grid.address, "10.215.0.9");
    const { output: log } = await sh.exec("flatgrid logs grid -n 200", 120_000);
    assert.match(
      log,
      /a new grid certificate for this node's address 10\.215\.0\.9 .*signed through its own etcd's CA key/,
    );
    assert.match(log, /etcd: this node's member moved to https:\/\/10\.215\.0\.9:2380/);
  });
});

/** `flatgrid grid status --json` on the node, once it is a member with a quorum. */
async function gridOf(sh: NodeShell): Promise<GridStatus> {
  const started = Date.now();
  for (;;) {
    const { output } = await sh.exec("flatgrid grid status --json", 180_000);
    const json = output.split("\n").find((l) => l.startsWith("{")) ?? "{}";
    const s = JSON.parse(json) as GridStatus;
    if (s.phase === "member" && s.quorum) return s;
    if (Date.now() - started > 300_000)
      assert.fail(`the node did not become a member of its grid: ${json.slice(0, 500)}`);
    await new Promise((r) => setTimeout(r, 3000));
  }
}

// The VMM on this machine's /dev/kvm, running the freestanding guests of native/testguest:
// real KVM VMs, real vCPU threads, real port I/O and MMIO exits.
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Kvm, KvmUnavailableError } from "../../src/kvm/index.js";
import {
  DiskError,
  ElfError,
  Vm,
  type VmConfig,
  VmConfigError,
  VsockError,
} from "../../src/vmm/index.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const guest = (name: string) => join(ROOT, "native/out", `testguest-${name}.elf`);

async function run(config: Partial<VmConfig> & { kernel: string }, limitMs = 30_000) {
  const vm = new Vm({ memoryMiB: 16, vcpus: 1, debugExit: true, ...config });
  vm.start();
  const timer = setTimeout(() => void vm.stop(), limitMs);
  const end = await vm.ended;
  clearTimeout(timer);
  return { end, console: vm.console.text(), stats: vm.stats() };
}

describe("VMM with test guests on /dev/kvm", { timeout: 120_000 }, () => {
  it("boots a long-mode guest that prints on the serial port and resets", async () => {
    const r = await run({ kernel: guest("hello") });
    assert.equal(r.console, "hello from the flatgrid test guest\n");
    assert.deepEqual(r.end, { reason: "reset", resultCode: 0 });
    // Each of the 35 bytes is an LSR read and a THR write, all answered on the vCPU thread;
    // the main thread sees the other port I/O (the boot timer, the result, the reset).
    assert.equal(r.stats.exits.io_console, 70);
    assert.ok(
      (r.stats.exits.io ?? 0) < 10,
      `the main thread saw ${r.stats.exits.io} port I/O exits`,
    );
    assert.ok(r.stats.bootMs !== null && r.stats.bootMs > 0, "the boot timer port was written");
    assert.equal(r.stats.unclaimedPio, 0);
  });

  it("gives the guest normalised CPUID: the host's vendor, the hypervisor bit, APIC id 0", async () => {
    const r = await run({ kernel: guest("cpuid") });
    const vendor = /^vendor_id\s*:\s*(\S+)/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1];
    // The TSC-deadline and HTT bits are printed, not checked here: this machine's PVM does not
    // trap the guest's CPUID (the guest saw HTT with one vCPU, where our table clears it).
    // test/unit/cpuid.test.ts checks the table, and the e2e test a Linux guest on nested KVM.
    assert.match(
      r.console,
      new RegExp(
        `^cpuid vendor=${vendor} family=\\d+ model=\\d+ hypervisor=1 apic=0 tsc_deadline=[01] htt=[01]\\n$`,
      ),
    );
    assert.equal(r.end.resultCode, 0);
  });

  it("runs its vCPU threads at nice 5, below the monitor's own threads, each named for top -H", async () => {
    const niceOf = (tid: string) => {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      // Fields after the command's closing parenthesis start at field 3; nice is field 19.
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
    };
    // KVM's own per-VM kernel thread (kvm-nx-lpage-recovery) is created by the first vCPU
    // and takes its nice value: only the process's own threads count here.
    const commOf = (tid: string) => readFileSync(`/proc/self/task/${tid}/comm`, "utf8").trim();
    const niceThreads = () =>
      readdirSync("/proc/self/task").filter((tid) => {
        try {
          return niceOf(tid) === 5 && !commOf(tid).startsWith("kvm");
        } catch {
          return false; // a thread that ended meanwhile
        }
      });
    assert.equal(niceThreads().length, 0, "nothing at nice 5 before the VM");
    const vm = new Vm({ memoryMiB: 16, vcpus: 2, kernel: guest("idle") });
    vm.start();
    try {
      await vm.refreshCpuTimes(); // resolves once every vCPU thread has said its thread id
      const niced = niceThreads();
      assert.equal(niced.length, 2);
      assert.deepEqual(niced.map(commOf).sort(), ["fg-vcpu0", "fg-vcpu1"]);
      assert.equal(niceOf(String(process.pid)), 0, "the main thread keeps its priority");
    } finally {
      await vm.stop();
    }
  });

  it("maps guest RAM where the guest expects it", async () => {
    // Touching guest pages is slow on this machine's paravirtual KVM, so the RAM is small.
    const r = await run({ kernel: guest("memcheck"), memoryMiB: 8 }, 60_000);
    assert.equal(r.console, "memcheck ok 8 MiB\n");
    assert.deepEqual(r.end, { reason: "reset", resultCode: 0 });
  });

  it("survives a guest that pokes at unassigned ports and addresses outside RAM", async () => {
    const r = await run({ kernel: guest("bad") });
    assert.match(r.console, /^bad guest\n/);
    assert.deepEqual(r.end, { reason: "reset", resultCode: 0 });
    assert.ok(r.stats.unclaimedMmio > 0, "MMIO outside RAM reached the VMM and was refused");
    assert.ok(r.stats.unclaimedPio > 0);
  });

  it("runs a guest's virtio-blk driver against an image, and the data outlives the VM", async () => {
    const disk = join(ROOT, "dist", "testguest-disk.img");
    const image = Buffer.alloc(1024 * 1024);
    image.write("flatgrid test disk\n", 0);
    writeFileSync(disk, image);
    const first = await run({ kernel: guest("blk"), disks: [{ path: disk, id: "t" }] }, 60_000);
    assert.equal(
      first.console,
      "blk: event idx on\nblk: capacity 2048 sectors\nblk: label flatgrid test disk\nblk: rw ok\nblk: flush ok\nblk: range ok\nblk: boot count 1\n",
    );
    assert.equal(first.end.resultCode, 0);
    // What the guest wrote is on the host's disk, where a second VM finds it.
    const written = readFileSync(disk);
    assert.equal(written.readUInt32LE(9 * 512), 1);
    assert.equal(written.readUInt32LE(512), (512 * 0x9e3779b1 + 0x5a5a5a5a) >>> 0);
    const second = await run({ kernel: guest("blk"), disks: [{ path: disk }] }, 60_000);
    assert.match(second.console, /blk: boot count 2\n$/);
    const readOnly = await run(
      { kernel: guest("blk"), disks: [{ path: disk, readOnly: true }] },
      60_000,
    );
    assert.match(readOnly.console, /blk: read-only ok\nblk: boot count 2\n$/);
    assert.equal(readOnly.end.resultCode, 0);
  });

  it("puts a device whose queue the guest breaks into NEEDS_RESET, and the guest recovers it", async () => {
    const disk = join(ROOT, "dist", "testguest-disk2.img");
    writeFileSync(disk, Buffer.alloc(64 * 1024));
    const vm = new Vm({
      memoryMiB: 16,
      vcpus: 1,
      kernel: guest("virtio-bad"),
      debugExit: true,
      disks: [{ path: disk }],
    });
    const deviceErrors: string[] = [];
    vm.on("device-error", (m: string) => deviceErrors.push(m));
    vm.start();
    const end = await vm.ended;
    assert.equal(
      vm.console.text(),
      "virtio-bad: needs reset ok\nvirtio-bad: recovered ok\nvirtio-bad: bad index ok\n",
    );
    assert.deepEqual(end, { reason: "reset", resultCode: 0 });
    assert.equal(deviceErrors.length, 2);
    assert.match(deviceErrors[0] ?? "", /loops or is too long; the device needs a reset/);
    assert.match(deviceErrors[1] ?? "", /available index \d+ is \d+ ahead/);
  });

  it("lets a network namespace ping a guest through virtio-net on a tap", async () => {
    const id = randomBytes(3).toString("hex");
    const ns = `fg-vm-${id}`;
    const tap = `fgp${id}`;
    const ip = (...args: string[]) =>
      execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"] });
    ip("netns", "add", ns);
    try {
      const vm = new Vm({
        memoryMiB: 16,
        vcpus: 1,
        kernel: guest("net"),
        debugExit: true,
        nics: [{ tap, mac: "02:00:00:00:00:07" }],
      });
      ip("link", "set", tap, "netns", ns);
      ip("-n", ns, "addr", "add", "10.214.0.1/24", "dev", tap);
      ip("-n", ns, "link", "set", tap, "up");
      vm.start();
      const ping = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const p = spawn("ip", [
          "netns",
          "exec",
          ns,
          "ping",
          "-c",
          "3",
          "-i",
          "0.5",
          "-W",
          "10",
          "10.214.0.2",
        ]);
        let out = "";
        p.stdout.on("data", (d) => {
          out += d;
        });
        p.on("exit", (code) => resolve({ code, out }));
      });
      const end = await vm.ended;
      assert.equal(ping.code, 0, ping.out);
      assert.match(ping.out, /3 packets transmitted, 3 received/);
      assert.match(
        vm.console.text(),
        /^net: mac 02:00:00:00:00:07\nnet: event idx on\n[\s\S]*net: arp reply sent\n[\s\S]*net: answered 3 pings\n$/,
      );
      assert.deepEqual(end, { reason: "reset", resultCode: 0 });
    } finally {
      ip("netns", "del", ns);
    }
  });

  it("brings up secondary vCPUs with INIT-SIPI-SIPI (SMP)", async () => {
    const r = await run({ kernel: guest("smp"), vcpus: 4 }, 60_000);
    const lines = r.console.trim().split("\n");
    assert.equal(lines.at(-1), "smp: 4 cpus up");
    assert.deepEqual(lines.slice(0, -1).sort(), [
      "smp: cpu 1 up",
      "smp: cpu 2 up",
      "smp: cpu 3 up",
    ]);
    assert.deepEqual(r.end, { reason: "reset", resultCode: 0 });
  });

  it("stops a busy guest at once: stop() kicks the vCPU out of KVM_RUN", async () => {
    const vm = new Vm({ memoryMiB: 64, vcpus: 1, kernel: guest("memcheck"), debugExit: true });
    vm.start();
    await new Promise((r) => setTimeout(r, 300));
    const asked = performance.now();
    const end = await vm.stop();
    assert.equal(end.reason, "stopped");
    assert.ok(performance.now() - asked < 5000, `stopped after ${performance.now() - asked} ms`);
  });

  it("creates VMs while signals keep arriving (an ioctl interrupted by one is asked again)", () => {
    // The CPU profiler's SIGPROF every 50 µs: KVM_CREATE_VM used to fail with EINTR under it.
    const kvm = fileURLToPath(new URL("../../src/kvm/index.js", import.meta.url));
    const profiles = join(ROOT, "dist", "cpu-prof-eintr");
    const out = execFileSync(
      process.execPath,
      [
        "--cpu-prof",
        "--cpu-prof-dir",
        profiles,
        "--cpu-prof-interval",
        "50",
        "--input-type=module",
        "-e",
        `import { Kvm } from ${JSON.stringify(kvm)};
        const kvm = Kvm.open();
        const until = Date.now() + 1500;
        let n = 0;
        while (Date.now() < until) { kvm.createVm().close(); n++; }
        console.log("created " + n);`,
      ],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    );
    rmSync(profiles, { recursive: true, force: true });
    assert.match(out, /^created \d+/);
  });

  it("lets the process exit while a VM runs: process.exit() gets every thread out of the kernel", () => {
    const vmm = fileURLToPath(new URL("../../src/vmm/index.js", import.meta.url));
    const disk = join(ROOT, "dist", "testguest-exit.img");
    writeFileSync(disk, Buffer.alloc(64 * 1024));
    // The idle guest never exits to the VMM: its vCPU stays in KVM_RUN, the disks' queue
    // thread and the fd watcher in poll(2), until the exit handler kicks them out.
    const started = performance.now();
    const r = spawnSync(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `import { Vm } from ${JSON.stringify(vmm)};
        const vm = new Vm({ memoryMiB: 16, vcpus: 1, kernel: ${JSON.stringify(guest("idle"))}, disks: [{ path: ${JSON.stringify(disk)} }] });
        vm.start();
        setTimeout(() => process.exit(7), 300);`,
      ],
      { encoding: "utf8", timeout: 20_000 },
    );
    assert.equal(r.status, 7, `exit status ${r.status}, signal ${r.signal}: ${r.stderr}`);
    assert.ok(performance.now() - started < 15_000);
  });

  it("refuses bad configurations and images with errors that say what is wrong", async () => {
    assert.throws(
      () => new Vm({ memoryMiB: 3, vcpus: 1, kernel: guest("hello") }),
      (e: unknown) =>
        e instanceof VmConfigError &&
        /field memoryMiB: must be a whole number from 8/.test(e.message),
    );
    assert.throws(() => new Vm({ memoryMiB: 16, vcpus: 0, kernel: guest("hello") }), /field vcpus/);
    assert.throws(
      () =>
        new Vm({
          memoryMiB: 16,
          vcpus: 1,
          kernel: guest("hello"),
          disks: [{ path: "/nonexistent/disk.img" }],
        }),
      (e: unknown) =>
        e instanceof DiskError && e.message === "disk /nonexistent/disk.img: no such file",
    );
    assert.throws(
      () => new Vm({ memoryMiB: 16, vcpus: 1, kernel: guest("hello"), vsock: { cid: 2 } }),
      (e: unknown) =>
        e instanceof VsockError &&
        e.code === "bad-cid" &&
        /context id 2 is not one/.test(e.message),
    );
    // vhost-vsock is the node kernel's (the e2e boot test makes a round trip through it); a
    // host without it gets this error, and nothing of the VM is left behind.
    if (!existsSync("/dev/vhost-vsock")) {
      assert.throws(
        () => new Vm({ memoryMiB: 16, vcpus: 1, kernel: guest("hello"), vsock: { cid: 3 } }),
        (e: unknown) =>
          e instanceof VsockError &&
          e.code === "no-vhost" &&
          e.message === "vsock: no /dev/vhost-vsock on this host (modprobe vhost_vsock)",
      );
    }
    assert.throws(
      () => Kvm.open("/nonexistent/kvm"),
      (e: unknown) =>
        e instanceof KvmUnavailableError &&
        /cannot use \/nonexistent\/kvm: no such device: load kvm_intel or kvm_amd/.test(e.message),
    );
    const garbage = join(ROOT, "dist", "garbage.elf");
    writeFileSync(garbage, Buffer.alloc(200, 0x41));
    const vm = new Vm({ memoryMiB: 16, vcpus: 1, kernel: garbage });
    assert.throws(
      () => vm.start(),
      (e: unknown) => e instanceof ElfError && /garbage\.elf: .*no ELF magic/.test(e.message),
    );
    // The VM ended there, with the reason; stop() after it says the same and frees nothing twice.
    const ended = {
      reason: "error",
      message: `${garbage}: not a bootable ELF64 x86-64 image: no ELF magic`,
      resultCode: null,
    };
    assert.deepEqual(await vm.ended, ended);
    assert.deepEqual(await vm.stop(), ended);
  });
});

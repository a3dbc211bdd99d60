// The node image booted for real: QEMU (software emulation with -cpu max, so the node gets
// hardware virtualisation of its own) starts build/image/vmlinuz and initrd.img with a NIC
// on a tap inside a private network namespace. Nothing leaves that namespace.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { debianCloudKernel } from "../../image/debian.js";
import { buildGuestAssets, DISK_MARKER } from "./guest-assets.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const IMAGE = join(ROOT, "build/image");
const id = randomBytes(3).toString("hex");
const NS = `fg-e2e-${id}`;
const TAP = `fge${id}`;
const ip = (...args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"] });
const WORK = `/var/tmp/flatgrid-e2e-${id}`;
const SHELL_SOCKET = join(WORK, "ttyS1.sock");

let qemu: ChildProcess | null = null;
let serial = "";

/**
 * The node's debug shell (flatgrid.debugshell=ttyS1), reached through QEMU's second serial
 * port. Input goes a byte at a time: the emulated UART has a 16-byte FIFO and no flow
 * control. busybox asks the terminal for its cursor position; we answer so that the reply
 * is not mistaken for typed input.
 */
class NodeShell {
  private socket: Socket | null = null;
  output = "";

  async open(): Promise<void> {
    this.socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(SHELL_SOCKET);
      s.once("connect", () => resolve(s));
      s.once("error", reject);
    });
    this.socket.on("data", (d: Buffer) => {
      const text = d.toString("latin1");
      if (text.includes("\x1b[6n")) this.socket?.write("\x1b[1;1R");
      this.output += text;
    });
    await new Promise((r) => setTimeout(r, 1500));
  }

  async run(command: string, until: RegExp, timeoutMs: number): Promise<string> {
    const from = this.output.length;
    for (const ch of `${command}\n`) {
      this.socket?.write(ch);
      await new Promise((r) => setTimeout(r, 5));
    }
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const out = this.output.slice(from);
      if (until.test(out)) return out;
      if (Date.now() > deadline)
        throw new Error(`no ${until} after "${command}"; the shell says:\n${out.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  close(): void {
    this.socket?.destroy();
  }
}
const shell = new NodeShell();

before(() => {
  // The image is built by the e2e suite's first step (npm run image); build it if missing.
  if (!existsSync(join(IMAGE, "initrd.img"))) {
    execFileSync(process.execPath, [join(ROOT, "dist/image/build.js")], { stdio: "inherit" });
  }
  mkdirSync(WORK, { recursive: true });
  ip("netns", "add", NS);
});

after(() => {
  shell.close();
  qemu?.kill("SIGKILL");
  rmSync(WORK, { recursive: true, force: true });
  try {
    ip("netns", "del", NS);
  } catch {
    // Already gone.
  }
});

async function serialLine(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = pattern.exec(serial);
    if (m) return m;
    if (Date.now() > deadline || qemu?.exitCode !== null) {
      throw new Error(`no ${pattern} on the serial console; it says:\n${serial.slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe("the node image in QEMU", { timeout: 900_000 }, () => {
  it("boots to the supervisor's ready line with /dev/kvm, static network and services", async () => {
    // Test assets for the microVM test below, on a disk the node sees as /dev/vda.
    const assets = buildGuestAssets(WORK, debianCloudKernel());
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
    const started = Date.now();
    qemu = spawn(
      "qemu-system-x86_64",
      [
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "3072",
        "-smp",
        "2",
        "-kernel",
        join(IMAGE, "vmlinuz"),
        "-initrd",
        join(IMAGE, "initrd.img"),
        "-append",
        "console=ttyS0 panic=-1 flatgrid.grid=e2e flatgrid.token=e2e-token-0123456789 flatgrid.hostname=node1 flatgrid.net=static flatgrid.ip=10.216.0.5/24 flatgrid.gateway=10.216.0.1 flatgrid.debugshell=ttyS1",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-serial",
        `unix:${SHELL_SOCKET},server=on,wait=off`,
        "-drive",
        `file=${assets.image},if=virtio,format=raw`,
        "-no-reboot",
        // A tap NIC only: never QEMU user networking.
        "-nic",
        `tap,ifname=${TAP},script=no,downscript=no,model=virtio-net-pci`,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    qemu.stdout?.on("data", (d) => {
      serial += d;
    });
    qemu.stderr?.on("data", (d) => {
      serial += d;
    });
    // Move the host end of the NIC into the private namespace as soon as QEMU made it.
    for (let i = 0; ; i++) {
      try {
        ip("link", "set", TAP, "netns", NS);
        break;
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    ip("-n", NS, "addr", "add", "10.216.0.1/24", "dev", TAP);
    ip("-n", NS, "link", "set", TAP, "up");

    await serialLine(/flatgrid-init: mode os: PID 1 of the machine/, 300_000);
    const ready = await serialLine(
      /flatgrid-supervisor: ready in (\d+) ms \(kvm: (yes|no)\)/,
      300_000,
    );
    process.stdout.write(
      `# node ready ${((Date.now() - started) / 1000).toFixed(1)} s after QEMU started\n`,
    );
    assert.equal(ready[2], "yes", "the node has a /dev/kvm of its own");
    assert.match(serial, /flatgrid-supervisor: hostname: node1/);
    assert.match(serial, /flatgrid-supervisor: network: eth0 10\.216\.0\.5\/24 via 10\.216\.0\.1/);
    assert.doesNotMatch(serial, /ERROR: configuration/);
    const ping = execFileSync(
      "ip",
      ["netns", "exec", NS, "ping", "-c", "2", "-W", "20", "10.216.0.5"],
      {
        encoding: "utf8",
      },
    );
    assert.match(ping, /2 received/);
  });

  it("runs a Debian cloud kernel on 2 vCPUs with its virtio disk in a microVM on the node's nested KVM", async () => {
    await shell.open();
    await shell.run("mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && ls /mnt", /vm2\.json/, 60_000);
    // Debian's kernels find the second vCPU only in the MADT (no X86_MPPARSE) and virtio-mmio
    // devices only in the DSDT (no VIRTIO_MMIO_CMDLINE_DEVICES): this is the VMM's ACPI.
    const started = Date.now();
    const progress = setInterval(() => {
      const seen = shell.output.match(/guest: [^\r\n]*/g) ?? [];
      process.stdout.write(
        `# microVM: ${((Date.now() - started) / 1000).toFixed(0)} s, last: ${seen.at(-1) ?? "(nothing yet)"}\n`,
      );
    }, 30_000);
    let out: string;
    try {
      out = await shell.run(
        "flatgrid vmm --config /mnt/vm2.json; echo vmm-exit=$?",
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
    assert.match(out, new RegExp(`guest: disk marker ${DISK_MARKER}`));
    assert.match(out, /guest: boot count 1\b/);
    assert.doesNotMatch(out, /insmod \S+ failed/);
    assert.match(out, /guest: rebooting/);
    assert.match(out, /flatgrid vmm: VM ended: reset/);
    assert.match(out, /vmm-exit=0/);
    // The guest's write went through virtio-blk into the file on the node.
    const count = await shell.run(
      "echo disk-count=$(head -c 16 /mnt/data.img | tr -dc 0-9)",
      /disk-count=\d+/,
      30_000,
    );
    assert.match(count, /disk-count=1\b/);
  });
});

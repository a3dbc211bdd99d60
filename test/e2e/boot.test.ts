// The node image booted for real: QEMU (software emulation with -cpu max, so the node gets
// hardware virtualisation of its own) starts build/image/vmlinuz and initrd.img with a NIC
// on a tap inside a private network namespace. Nothing leaves that namespace.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const IMAGE = join(ROOT, "build/image");
const id = randomBytes(3).toString("hex");
const NS = `fg-e2e-${id}`;
const TAP = `fge${id}`;
const ip = (...args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"] });

let qemu: ChildProcess | null = null;
let serial = "";

before(() => {
  // The image is built by the e2e suite's first step (npm run image); build it if missing.
  if (!existsSync(join(IMAGE, "initrd.img"))) {
    execFileSync(process.execPath, [join(ROOT, "dist/image/build.js")], { stdio: "inherit" });
  }
  ip("netns", "add", NS);
});

after(() => {
  qemu?.kill("SIGKILL");
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

describe("the node image in QEMU", { timeout: 600_000 }, () => {
  it("boots to the supervisor's ready line with /dev/kvm, static network and services", async () => {
    const manifest = JSON.parse(readFileSync(join(IMAGE, "manifest.json"), "utf8"));
    assert.match(manifest.outputs["initrd.img"].sha256, /^[0-9a-f]{64}$/);
    const started = Date.now();
    qemu = spawn(
      "qemu-system-x86_64",
      [
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "2048",
        "-smp",
        "2",
        "-kernel",
        join(IMAGE, "vmlinuz"),
        "-initrd",
        join(IMAGE, "initrd.img"),
        "-append",
        "console=ttyS0 panic=-1 flatgrid.grid=e2e flatgrid.token=e2e-token-0123456789 flatgrid.hostname=node1 flatgrid.net=static flatgrid.ip=10.216.0.5/24 flatgrid.gateway=10.216.0.1",
        "-display",
        "none",
        "-serial",
        "stdio",
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
});

// The hybrid ISO (build/image/flatgrid.iso) boots the node the three ways an operator would
// use it: from a CD on a BIOS machine (SeaBIOS), from a USB stick written with dd (the same
// file as a plain disk), and from a CD on a UEFI machine (OVMF). Each time GRUB's menu shows
// on the serial port and the node reaches the supervisor's ready line. The UEFI one is a
// simulated server (`flatgrid sim up --boot iso --firmware uefi`) whose data partition holds
// its grid configuration, as the console's first-boot form leaves it: it takes its name,
// address and grid from there.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { bootUntil, down, READY_LINE, readLog, up } from "../../src/sim/index.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const ISO = join(ROOT, "build/image/flatgrid.iso");

function check(console: string, how: string): void {
  assert.match(console, /flatgrid: format a blank disk as the data partition/, `${how}: GRUB menu`);
  assert.match(console, /flatgrid-init: mode os: PID 1 of the machine/, `${how}: init`);
  const ready = READY_LINE.exec(console);
  assert.ok(ready, `${how}: ready line`);
  assert.equal(ready[2], "yes", `${how}: /dev/kvm inside`);
}

describe("the hybrid ISO", { timeout: 1_200_000 }, () => {
  it("is in the manifest with its sha256", () => {
    assert.ok(existsSync(ISO), "npm run image built flatgrid.iso");
    const manifest = JSON.parse(readFileSync(join(ROOT, "build/image/manifest.json"), "utf8"));
    assert.match(manifest.outputs["flatgrid.iso"].sha256, /^[0-9a-f]{64}$/);
    // The El Torito catalogue for BIOS and an EFI system partition for UEFI.
    const head = readFileSync(ISO).subarray(0, 0x20000);
    assert.ok(head.includes(Buffer.from("CD001")), "an ISO 9660 volume");
    assert.equal(head[510], 0x55, "an MBR, for booting from a USB stick");
    assert.equal(head[511], 0xaa);
  });

  it("is reproducible: a second build of the same inputs gives the same bytes", () => {
    // The image the suite built, and another one now, from the same packages and code.
    const again = mkdtempSync(join(tmpdir(), "fg-image-"));
    try {
      execFileSync(process.execPath, [join(ROOT, "dist/image/build.js"), "--out", again], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      const first = JSON.parse(readFileSync(join(ROOT, "build/image/manifest.json"), "utf8"));
      const second = JSON.parse(readFileSync(join(again, "manifest.json"), "utf8"));
      assert.deepEqual(Object.keys(second.outputs), Object.keys(first.outputs));
      for (const [name, out] of Object.entries(first.outputs) as [string, { sha256: string }][])
        assert.equal(second.outputs[name].sha256, out.sha256, `${name}: the same sha256`);
      assert.deepEqual(second.packages, first.packages);
      process.stdout.write(
        `# two builds, same sha256: ${Object.keys(first.outputs).length} outputs (initrd.img ${first.outputs["initrd.img"].sha256.slice(0, 16)}...)\n`,
      );
    } finally {
      rmSync(again, { recursive: true, force: true });
    }
  });

  it("has the network boot set beside it, in the manifest", () => {
    const manifest = JSON.parse(readFileSync(join(ROOT, "build/image/manifest.json"), "utf8"));
    const out = manifest.outputs as Record<string, { sha256: string; bytes: number }>;
    for (const f of [
      "boot.ipxe",
      "undionly.kpxe",
      "ipxe.efi",
      "pxelinux.0",
      "ldlinux.c32",
      "pxelinux.cfg/default",
      "dnsmasq.conf",
    ])
      assert.ok((out[`pxe/${f}`]?.bytes ?? 0) > 0, `pxe/${f} in the manifest`);
    // The same kernel and initrd as the ISO's.
    assert.equal(out["pxe/initrd.img"]?.sha256, out["initrd.img"]?.sha256);
    assert.equal(out["pxe/vmlinuz"]?.sha256, out.vmlinuz?.sha256);
    const script = readFileSync(join(ROOT, "build/image/pxe/boot.ipxe"), "utf8");
    assert.match(script, /^kernel vmlinuz initrd=initrd\.img console=tty0 console=ttyS0,115200 /m);
    assert.ok(
      (manifest.packages as string[]).some((p) => /^ipxe \S+$/.test(p)),
      "the loaders' packages are listed",
    );
  });

  for (const [how, options] of [
    ["a CD on SeaBIOS", { cdrom: ISO }],
    ["a USB stick (dd) on SeaBIOS", { disk: ISO }],
  ] as const) {
    it(`boots from ${how} to the supervisor's ready line`, async () => {
      const r = await bootUntil({ ...options, memoryMiB: 1536, timeoutMs: 600_000 }, READY_LINE);
      process.stdout.write(
        `# ${how}: kernel after ${((r.kernelMs ?? 0) / 1000).toFixed(1)} s, ready after ${(r.totalMs / 1000).toFixed(1)} s\n`,
      );
      check(r.console, how);
    });
  }

  it("boots a simulated server from a CD on UEFI (OVMF), configured by node.conf on its disk", async () => {
    const dir = `/var/tmp/flatgrid-e2e-iso-${randomBytes(3).toString("hex")}`;
    try {
      const r = await up({
        nodes: 1,
        dir,
        boot: "iso",
        firmware: "uefi",
        memoryMiB: 1536,
        timeoutMs: 600_000,
        progress: (line) => process.stdout.write(`# ${line}\n`),
      });
      const node = r.state.nodes[0];
      assert.ok(node);
      assert.deepEqual([r.state.boot, r.state.firmware], ["iso", "uefi"]);
      assert.ok(node.qemu.uefi?.endsWith("OVMF.fd"));
      const text = readLog(node.qemu.consoleLog, node.consoleOffset);
      check(text, "a CD on UEFI");
      // Nothing on the kernel line but the console: the rest came from node.conf.
      assert.match(text, /Command line: \S*vmlinuz console=tty0 console=ttyS0,115200\s*$/m);
      assert.match(
        text,
        /flatgrid-supervisor: data partition: \/dev\/vda mounted at \/var\/lib\/flatgrid/,
      );
      assert.match(text, /flatgrid-supervisor: hostname: node-1/);
      assert.match(text, /flatgrid-supervisor: network: eth0 10\.215\.0\.1\/24/);
      assert.doesNotMatch(text, /no grid configured yet/);
      process.stdout.write(`# UEFI CD, simulated: ready after ${r.seconds.toFixed(1)} s\n`);
    } finally {
      down({ dir });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

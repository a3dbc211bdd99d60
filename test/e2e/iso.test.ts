// The hybrid ISO (build/image/flatgrid.iso) boots the node the three ways an operator would
// use it: from a CD on a BIOS machine (SeaBIOS), from a USB stick written with dd (the same
// file as a plain disk), and from a CD on a UEFI machine (OVMF). Each time GRUB's menu shows
// on the serial port and the node reaches the supervisor's ready line.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { bootUntil, READY_LINE } from "../../src/sim/index.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const ISO = join(ROOT, "build/image/flatgrid.iso");
const OVMF = "/usr/share/ovmf/OVMF.fd";

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

  for (const [how, options] of [
    ["a CD on SeaBIOS", { cdrom: ISO }],
    ["a USB stick (dd) on SeaBIOS", { disk: ISO }],
    ["a CD on UEFI (OVMF)", { cdrom: ISO, uefi: OVMF }],
  ] as const) {
    it(`boots from ${how} to the supervisor's ready line`, async () => {
      const r = await bootUntil({ ...options, memoryMiB: 1536, timeoutMs: 600_000 }, READY_LINE);
      process.stdout.write(
        `# ${how}: kernel after ${((r.kernelMs ?? 0) / 1000).toFixed(1)} s, ready after ${(r.totalMs / 1000).toFixed(1)} s\n`,
      );
      check(r.console, how);
    });
  }
});

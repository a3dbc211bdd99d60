import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { closure, isCurated, readModulesDep } from "../../image/modules.js";
import { coldplug, readModaliases } from "../../src/os/coldplug.js";

describe("node image: the curated module set", () => {
  const dep = readModulesDep(
    [
      "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko: kernel/drivers/net/ethernet/intel/ptp.ko",
      "kernel/drivers/net/ethernet/intel/ptp.ko: kernel/drivers/pps/pps_core.ko",
      "kernel/drivers/pps/pps_core.ko:",
      "kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko",
      "kernel/fs/mbcache.ko:",
      "kernel/fs/jbd2/jbd2.ko:",
      "kernel/sound/pci/hda/snd-hda-intel.ko: kernel/sound/core/snd.ko",
      "kernel/sound/core/snd.ko:",
      "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko",
      "kernel/drivers/net/net_failover.ko:",
      "",
    ].join("\n"),
  );

  it("takes NICs, file systems and virtio, not sound cards", () => {
    assert.ok(isCurated("kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko"));
    assert.ok(isCurated("kernel/fs/ext4/ext4.ko"));
    assert.ok(isCurated("kernel/drivers/net/virtio_net.ko"));
    assert.ok(isCurated("kernel/arch/x86/kvm/kvm-intel.ko"));
    assert.ok(isCurated("kernel/drivers/nvme/host/nvme.ko"));
    assert.ok(isCurated("kernel/drivers/usb/host/xhci-pci.ko"));
    assert.ok(!isCurated("kernel/sound/pci/hda/snd-hda-intel.ko"));
    assert.ok(!isCurated("kernel/drivers/net/wireless/intel/iwlwifi/iwlwifi.ko"));
  });

  it("brings along what the chosen ones depend on, and nothing else", () => {
    assert.deepEqual(closure(dep, isCurated), [
      "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
      "kernel/drivers/net/ethernet/intel/ptp.ko",
      "kernel/drivers/net/net_failover.ko",
      "kernel/drivers/net/virtio_net.ko",
      "kernel/drivers/pps/pps_core.ko",
      "kernel/fs/ext4/ext4.ko",
      "kernel/fs/jbd2/jbd2.ko",
      "kernel/fs/mbcache.ko",
    ]);
  });
});

describe("supervisor: coldplug", () => {
  function fakeSys(): {
    sys: string;
    proc: string;
    add: (bus: string, dev: string, alias?: string) => void;
  } {
    const dir = mkdtempSync(join(tmpdir(), "flatgrid-sys-"));
    const sys = join(dir, "sys");
    const proc = join(dir, "modules");
    writeFileSync(proc, "ext4 100 0 - Live 0x0\n");
    const add = (bus: string, dev: string, alias?: string) => {
      const d = join(sys, "bus", bus, "devices", dev);
      mkdirSync(d, { recursive: true });
      if (alias !== undefined) writeFileSync(join(d, "modalias"), `${alias}\n`);
    };
    return { sys, proc, add };
  }

  it("reads every device's modalias once, and skips devices without one", () => {
    const { sys, add } = fakeSys();
    add("pci", "0000:00:03.0", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00");
    add("pci", "0000:00:04.0", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00");
    add("platform", "serial8250");
    mkdirSync(join(sys, "devices/system/cpu"), { recursive: true });
    writeFileSync(
      join(sys, "devices/system/cpu/modalias"),
      "cpu:type:x86,ven0000fam0006mod003F:feature:,0085\n",
    );
    assert.deepEqual(readModaliases(sys), [
      "cpu:type:x86,ven0000fam0006mod003F:feature:,0085",
      "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
    ]);
    assert.deepEqual(readModaliases(join(sys, "nowhere")), []);
    rmSync(join(sys, ".."), { recursive: true, force: true });
  });

  it("goes round while loading drivers makes new devices appear, and says what it loaded", async () => {
    const { sys, proc, add } = fakeSys();
    add("pci", "0000:00:03.0", "pci:virtio-net-function");
    const calls: string[][] = [];
    const loaded = await coldplug(
      async (aliases) => {
        calls.push(aliases);
        // virtio_pci brings the virtio bus and its device, whose driver is virtio_net.
        if (aliases.includes("pci:virtio-net-function")) {
          add("virtio", "virtio0", "virtio:d00000001v00001AF4");
          writeFileSync(proc, "ext4 100 0 - Live 0x0\nvirtio_pci 1 0 - Live 0x0\n", {
            flag: "w",
          });
        }
        if (aliases.includes("virtio:d00000001v00001AF4"))
          writeFileSync(
            proc,
            "ext4 1 0 - Live 0x0\nvirtio_pci 1 0 - Live 0x0\nvirtio_net 1 0 - Live 0x0\n",
          );
      },
      sys,
      proc,
    );
    assert.deepEqual(calls, [["pci:virtio-net-function"], ["virtio:d00000001v00001AF4"]]);
    assert.deepEqual(loaded, ["virtio_net", "virtio_pci"]);
    rmSync(join(sys, ".."), { recursive: true, force: true });
  });
});

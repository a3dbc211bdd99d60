// The Linux 64-bit boot protocol against a real Debian cloud kernel: where the kernel,
// zero page, command line, initrd and memory map land in guest RAM. Stock kernels do not
// run on this machine's paravirtual KVM (see DESIGN.md); booting them to init is tested in
// the simulator. Here the VM is started briefly to check the entry does not fault at once.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import {
  boot_params,
  E820_RAM,
  E820_RESERVED,
  SETUP_HEADER_MAGIC,
  Struct,
} from "../../src/kvm/index.js";
import {
  ACPI_TABLES_END,
  ACPI_TABLES_START,
  GuestMemory,
  KernelImageError,
  loadBzImage,
  Vm,
  writeAcpiTables,
} from "../../src/vmm/index.js";
import { debianCloudKernel, runBriefly } from "./debian-kernel.js";

let kernelPath = "";
let kernel = Buffer.alloc(0);

before(() => {
  kernelPath = debianCloudKernel();
  kernel = readFileSync(kernelPath);
});

describe("Linux boot protocol with a Debian cloud kernel", { timeout: 180_000 }, () => {
  it("lays out kernel, zero page, command line, initrd and e820 as the protocol says", () => {
    const memory = new GuestMemory(256 * 1024 * 1024);
    const initrd = Buffer.alloc(3 * 1024 * 1024 + 123, 0xa5);
    const loaded = loadBzImage(kernel, kernelPath, memory, {
      cmdline: "console=ttyS0 root=/dev/vda",
      initrd,
    });
    assert.equal(loaded.entry, 0x100200);
    const setupSects = kernel[0x1f1] || 4;
    const pm = kernel.subarray((setupSects + 1) * 512);
    assert.deepEqual(memory.slice(0x100000, 4096), pm.subarray(0, 4096));
    const zero = new Struct(boot_params, memory.slice(loaded.zeroPage, 4096));
    assert.equal(zero.get("hdr.header"), SETUP_HEADER_MAGIC);
    assert.equal(zero.get("hdr.type_of_loader"), 0xff);
    const cmdlinePtr = zero.get("hdr.cmd_line_ptr");
    assert.equal(memory.slice(cmdlinePtr, 28).toString("latin1"), "console=ttyS0 root=/dev/vda\0");
    const rd = zero.get("hdr.ramdisk_image");
    assert.equal(rd % 4096, 0);
    assert.equal(zero.get("hdr.ramdisk_size"), initrd.length);
    assert.ok(rd >= loaded.kernelEnd, "initrd above the decompressed kernel");
    assert.ok(rd + initrd.length <= memory.lowEnd);
    assert.deepEqual(memory.slice(rd, 16), initrd.subarray(0, 16));
    assert.equal(zero.get("e820_entries"), 3);
    const e820 = memory.slice(loaded.zeroPage + 0x2d0, 60);
    const entry = (i: number) => [
      Number(e820.readBigUInt64LE(20 * i)),
      Number(e820.readBigUInt64LE(20 * i + 8)),
      e820.readUInt32LE(20 * i + 16),
    ];
    assert.deepEqual(entry(0), [0, 0x9fc00, E820_RAM]);
    assert.deepEqual(entry(1), [0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED]);
    assert.deepEqual(entry(2), [0x100000, 256 * 1024 * 1024 - 0x100000, E820_RAM]);
    assert.equal(zero.get("acpi_rsdp_addr"), 0, "no RSDP unless one is given");
    memory.close();
  });

  it("points boot_params at the ACPI tables, which the e820 map keeps out of RAM", () => {
    const memory = new GuestMemory(256 * 1024 * 1024);
    const rsdp = writeAcpiTables(memory, {
      vcpus: 2,
      virtio: [{ address: 0xd000_0000, size: 0x1000, gsi: 5 }],
      serial: [{ port: 0x3f8, irq: 4 }],
    });
    assert.equal(rsdp, ACPI_TABLES_START);
    assert.equal(memory.slice(rsdp, 8).toString("latin1"), "RSD PTR ");
    const loaded = loadBzImage(kernel, kernelPath, memory, { cmdline: "", acpiRsdp: rsdp });
    const zero = new Struct(boot_params, memory.slice(loaded.zeroPage, 4096));
    assert.equal(zero.get("acpi_rsdp_addr"), rsdp);
    // Loading the kernel left the tables alone.
    assert.equal(memory.slice(rsdp, 8).toString("latin1"), "RSD PTR ");
    const e820 = memory.slice(loaded.zeroPage + 0x2d0, 20 * zero.get("e820_entries"));
    const covering = Array.from({ length: zero.get("e820_entries") }, (_, i) => ({
      addr: Number(e820.readBigUInt64LE(20 * i)),
      size: Number(e820.readBigUInt64LE(20 * i + 8)),
      type: e820.readUInt32LE(20 * i + 16),
    })).filter((e) => e.addr < ACPI_TABLES_END && ACPI_TABLES_START < e.addr + e.size);
    assert.deepEqual(
      covering.map((e) => e.type),
      [E820_RESERVED],
    );
    assert.ok(covering[0]!.addr <= ACPI_TABLES_START);
    assert.ok(covering[0]!.addr + covering[0]!.size >= ACPI_TABLES_END);
    memory.close();
  });

  it("says how much memory the kernel needs when the VM has too little", () => {
    const memory = new GuestMemory(8 * 1024 * 1024);
    assert.throws(
      () => loadBzImage(kernel, kernelPath, memory, { cmdline: "" }),
      (e: unknown) =>
        e instanceof KernelImageError &&
        /needs \d+ MiB of RAM to decompress; the VM has 8 MiB/.test(e.message),
    );
    memory.close();
  });

  it("refuses an image without a setup header, and a command line longer than the kernel's", () => {
    const memory = new GuestMemory(256 * 1024 * 1024);
    const broken = Buffer.from(kernel);
    broken.write("XXXX", 0x202, "latin1");
    assert.throws(
      () => loadBzImage(broken, "broken", memory, { cmdline: "" }),
      /broken: no "HdrS" setup header/,
    );
    assert.throws(
      () => loadBzImage(kernel, kernelPath, memory, { cmdline: "x".repeat(70_000) }),
      /command line of 70000 bytes is longer than the kernel's/,
    );
    memory.close();
  });

  it("enters the kernel in long mode without faulting (then stops it)", async () => {
    const initrd = join(tmpdir(), "flatgrid-empty-initrd");
    writeFileSync(initrd, Buffer.alloc(4096));
    const vm = new Vm({ memoryMiB: 256, vcpus: 2, kernel: kernelPath, initrd, cmdline: "quiet" });
    // The virtio devices are in the DSDT, not on the command line.
    assert.match(
      vm.kernelCmdline(),
      /^console=ttyS0 reboot=k panic=1 pci=off .*i8042\.dumbkbd quiet$/,
    );
    vm.start();
    const zero = new Struct(boot_params, vm.memory.slice(0x7000, 4096));
    const rsdp = zero.get("acpi_rsdp_addr");
    assert.equal(vm.memory.slice(rsdp, 8).toString("latin1"), "RSD PTR ");
    const { end, cpuMs } = await runBriefly(vm);
    assert.deepEqual(end, { reason: "stopped", resultCode: null });
    assert.ok(cpuMs > 0, "the vCPU ran");
  });
});

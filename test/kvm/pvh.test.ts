// PVH boot: an ELF kernel with a XEN_ELFNOTE_PHYS32_ENTRY note is entered in 32-bit
// protected mode with EBX pointing at a struct hvm_start_info. testguest-pvh switches to long
// mode by itself and prints what the start info says; the Debian cloud kernel's vmlinux,
// unpacked from its bzImage by extractVmlinux, has that note too, and its start info is
// checked in guest RAM (stock kernels run only in the simulator: see DESIGN.md).
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { ClassImages } from "../../src/agent/index.js";
import {
  boot_params,
  E820_RAM,
  E820_RESERVED,
  hvm_memmap_table_entry,
  hvm_modlist_entry,
  hvm_start_info,
  SETUP_HEADER_MAGIC,
  Struct,
  XEN_HVM_START_MAGIC_VALUE,
} from "../../src/kvm/index.js";
import {
  ElfError,
  e820Map,
  extractVmlinux,
  GuestMemory,
  KernelImageError,
  loadElf,
  lz4LegacyDecode,
  START_INFO_ADDRESS,
  Vm,
  writePvhStartInfo,
  writeVmlinuxZeroPage,
  ZERO_PAGE_ADDRESS,
} from "../../src/vmm/index.js";
import { debianCloudKernel, runBriefly } from "./debian-kernel.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(ROOT, "dist/src/cli/main.js");
const guest = (name: string) => join(ROOT, "native/out", `testguest-${name}.elf`);
const dir = mkdtempSync(join(tmpdir(), "flatgrid-pvh-"));
let vmlinux = "";

before(() => {
  vmlinux = join(dir, "vmlinux");
  writeFileSync(vmlinux, extractVmlinux(readFileSync(debianCloudKernel()), "vmlinuz"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const hex = (n: number) => `0x${n.toString(16)}`;

describe("PVH boot", { timeout: 180_000 }, () => {
  it("enters a PVH guest at its note's address with the start info in EBX", async () => {
    const initrd = join(dir, "initrd");
    const bytes = randomBytes(300_001);
    writeFileSync(initrd, bytes);
    const vm = new Vm({
      memoryMiB: 32,
      debugExit: true,
      vcpus: 1,
      kernel: guest("pvh"),
      initrd,
      cmdline: "pvh=yes",
    });
    // Before the VM ends and gives its memory back.
    const memmap = e820Map(vm.memory).map(([a, s, t]) => `pvh memmap ${hex(a)} ${hex(s)} ${t}`);
    vm.start();
    const timer = setTimeout(() => void vm.stop(), 30_000);
    const end = await vm.ended;
    clearTimeout(timer);
    const out = vm.console.text();
    assert.deepEqual(end, { reason: "reset", resultCode: 0 }, out);
    assert.equal(vm.stats().bootProtocol, "pvh");
    const lines = out.split("\n");
    assert.equal(lines[0], `pvh magic ${hex(XEN_HVM_START_MAGIC_VALUE)} version 1`);
    assert.equal(lines[1], `pvh cmdline ${vm.kernelCmdline()}`);
    assert.equal(memmap.length, 3);
    assert.deepEqual(lines.slice(2, 2 + memmap.length), memmap);
    const sum = bytes.reduce((s, b) => (s + b) >>> 0, 0);
    assert.match(
      lines[2 + memmap.length] ?? "",
      new RegExp(`^pvh module 0x[0-9a-f]+ 300001 ${sum}$`),
    );
    assert.equal(lines[3 + memmap.length], "pvh rsdp RSD PTR ");
  });

  it("lays out the Debian kernel's vmlinux and its start info as Linux reads them", () => {
    const memory = new GuestMemory(256 * 1024 * 1024);
    const elf = loadElf(readFileSync(vmlinux), vmlinux, memory);
    assert.ok(elf.pvhEntry !== null, "Debian's cloud kernel has a PVH entry note");
    assert.ok(elf.pvhEntry >= elf.low && elf.pvhEntry < elf.high);
    const initrd = Buffer.alloc(2 * 1024 * 1024 + 5, 0x5a);
    const pvh = writePvhStartInfo(
      memory,
      vmlinux,
      { cmdline: "console=ttyS0 quiet", initrd, acpiRsdp: 0xe0000 },
      elf.high,
    );
    assert.equal(pvh.startInfo, START_INFO_ADDRESS);
    const info = new Struct(hvm_start_info, memory.slice(pvh.startInfo, hvm_start_info.size));
    assert.equal(info.get("magic"), XEN_HVM_START_MAGIC_VALUE);
    assert.equal(info.get("version"), 1, "version 1: Linux needs the memory map outside Xen");
    assert.equal(info.get("rsdp_paddr"), 0xe0000);
    const cmdline = info.get("cmdline_paddr");
    assert.equal(memory.slice(cmdline, 20).toString("latin1"), "console=ttyS0 quiet\0");
    assert.equal(info.get("nr_modules"), 1);
    const mod = new Struct(
      hvm_modlist_entry,
      memory.slice(info.get("modlist_paddr"), hvm_modlist_entry.size),
    );
    assert.equal(mod.get("size"), initrd.length);
    assert.ok(mod.get("paddr") >= elf.high, "the initrd is above the kernel");
    assert.ok(mod.get("paddr") + initrd.length <= memory.lowEnd);
    assert.deepEqual(memory.slice(mod.get("paddr"), initrd.length), initrd);
    const entries = Array.from({ length: info.get("memmap_entries") }, (_, i) => {
      const e = new Struct(
        hvm_memmap_table_entry,
        memory.slice(info.get("memmap_paddr") + i * 24, hvm_memmap_table_entry.size),
      );
      return [e.get("addr"), e.get("size"), e.get("type")];
    });
    assert.deepEqual(entries, [
      [0, 0x9fc00, E820_RAM],
      [0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED],
      [0x100000, 256 * 1024 * 1024 - 0x100000, E820_RAM],
    ]);
    memory.close();
  });

  it("gives a vmlinux without a PVH note a zero page for its 64-bit entry", () => {
    const memory = new GuestMemory(256 * 1024 * 1024);
    const elf = loadElf(readFileSync(vmlinux), vmlinux, memory);
    const initrd = Buffer.alloc(3 * 1024 * 1024 + 7, 0x3c);
    const placed = writeVmlinuxZeroPage(
      memory,
      vmlinux,
      { cmdline: "console=ttyS0", initrd, acpiRsdp: 0xe0000 },
      elf.high,
    );
    const zero = new Struct(boot_params, memory.slice(ZERO_PAGE_ADDRESS, boot_params.size));
    assert.equal(zero.get("hdr.boot_flag"), 0xaa55);
    assert.equal(zero.get("hdr.header"), SETUP_HEADER_MAGIC);
    assert.equal(zero.get("hdr.type_of_loader"), 0xff);
    assert.equal(zero.get("acpi_rsdp_addr"), 0xe0000);
    const cmdline = zero.get("hdr.cmd_line_ptr");
    assert.equal(memory.slice(cmdline, 14).toString("latin1"), "console=ttyS0\0");
    assert.equal(zero.get("hdr.ramdisk_image"), placed?.address);
    assert.equal(zero.get("hdr.ramdisk_size"), initrd.length);
    assert.ok((placed?.address ?? 0) >= elf.high, "the initrd is above the kernel");
    assert.ok((placed?.address ?? 0) + initrd.length <= memory.lowEnd);
    assert.deepEqual(memory.slice(placed?.address ?? 0, initrd.length), initrd);
    assert.equal(zero.get("e820_entries"), 3);
    memory.close();
  });

  it("says when a vmlinux does not fit, or its initrd does not fit above it", () => {
    const small = new GuestMemory(32 * 1024 * 1024);
    assert.throws(
      () => loadElf(readFileSync(vmlinux), vmlinux, small),
      (e: unknown) =>
        e instanceof ElfError && /does not fit in 32 MiB of guest RAM/.test(e.message),
    );
    small.close();
    const memory = new GuestMemory(72 * 1024 * 1024);
    const elf = loadElf(readFileSync(vmlinux), vmlinux, memory);
    assert.throws(
      () =>
        writePvhStartInfo(
          memory,
          vmlinux,
          { cmdline: "", initrd: Buffer.alloc(16 * 1024 * 1024) },
          elf.high,
        ),
      (e: unknown) =>
        e instanceof KernelImageError &&
        /an initrd of 16 MiB does not fit above the kernel/.test(e.message),
    );
    assert.throws(
      () => writePvhStartInfo(memory, vmlinux, { cmdline: "x".repeat(3000) }, elf.high),
      /command line of 3000 bytes is longer than the kernel's 2047/,
    );
    memory.close();
  });

  it("enters the Debian vmlinux through PVH without faulting (then stops it)", async () => {
    const vm = new Vm({ memoryMiB: 256, vcpus: 1, kernel: vmlinux, cmdline: "quiet" });
    vm.start();
    assert.equal(vm.stats().bootProtocol, "pvh");
    const { end, cpuMs } = await runBriefly(vm);
    assert.deepEqual(end, { reason: "stopped", resultCode: null });
    assert.ok(cpuMs > 0, "the vCPU ran");
  });
});

describe("vmlinux from a bzImage", () => {
  it("unpacks LZ4 as lz4 -l packs it, across blocks and with overlapping matches", () => {
    // 20 MiB: more than two 8 MiB legacy blocks; runs and repeats make long, overlapping matches.
    const data = Buffer.alloc(20 * 1024 * 1024);
    const noise = randomBytes(4096);
    for (let i = 0; i < data.length; i += 4096) {
      if ((i >> 12) % 3 === 0) noise.copy(data, i);
      else data.fill(i & 0xff, i, i + 4096);
    }
    const packed = execFileSync("lz4", ["-l", "-c", "-1"], { input: data, maxBuffer: 64 << 20 });
    assert.deepEqual(lz4LegacyDecode(packed, data.length), data);
    assert.throws(
      () => lz4LegacyDecode(packed.subarray(0, packed.length - 100), data.length),
      /Lz4Error|runs past/,
    );
  });

  it("flatgrid kernel unpack writes the vmlinux and says how the VMM will boot it", () => {
    const out = join(dir, "unpacked");
    const said = execFileSync(
      process.execPath,
      [CLI, "kernel", "unpack", debianCloudKernel(), "--out", out],
      { encoding: "utf8" },
    );
    assert.match(
      said,
      /unpacked: \d+\.\d MiB, PVH entry 0x[0-9a-f]+: the VMM will boot it through PVH/,
    );
    assert.deepEqual(readFileSync(out), readFileSync(vmlinux));
    const again = spawnSync(process.execPath, [CLI, "kernel", "unpack", out, "--out", `${out}2`], {
      encoding: "utf8",
    });
    assert.equal(again.status, 1);
    assert.match(
      again.stderr,
      /already an uncompressed ELF kernel \(a vmlinux\): boot it as it is/,
    );
  });

  it("names the compression it cannot unpack, and a payload that is not a kernel", () => {
    const kernel = readFileSync(debianCloudKernel());
    const start = ((kernel[0x1f1] || 4) + 1) * 512 + kernel.readUInt32LE(0x248);
    const xz = Buffer.from(kernel);
    Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]).copy(xz, start);
    assert.throws(() => extractVmlinux(xz, "xz-kernel"), /xz-kernel: its payload is xz-compressed/);
    const truncated = Buffer.from(kernel);
    truncated.writeUInt32LE(truncated.readUInt32LE(0x24c) - 4096, 0x24c);
    assert.throws(
      () => extractVmlinux(truncated, "cut"),
      (e: unknown) => e instanceof KernelImageError,
    );
    assert.throws(
      () => extractVmlinux(Buffer.alloc(8192), "zeros"),
      /zeros: no "HdrS" setup header/,
    );
  });
});

describe("class kernels through PVH on a node", () => {
  it("the agent's class images boot a bzImage through its vmlinux, unpacked once and checked", async () => {
    const catalog = join(dir, "catalog");
    const cache = join(dir, "image-cache");
    mkdirSync(catalog, { recursive: true });
    const kernel = readFileSync(debianCloudKernel());
    writeFileSync(join(catalog, "vmlinuz"), kernel);
    writeFileSync(join(catalog, "initrd.img"), "the initrd");
    writeFileSync(join(catalog, "web.ext4"), "the root disk");
    const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");
    writeFileSync(
      join(catalog, "manifest.json"),
      JSON.stringify({
        kernel: { sha256: sha(kernel) },
        initrd: { sha256: sha("the initrd") },
        classes: {
          "web@1": {
            id: "x",
            rootfs: "web.ext4",
            sha256: sha("the root disk"),
            kernel: "vmlinuz",
            initrd: "initrd.img",
          },
        },
      }),
    );
    const logged: string[] = [];
    const images = () => new ClassImages(catalog, cache, null, (_, msg) => logged.push(msg));
    const unpacked = join(cache, `${sha(kernel)}.vmlinux`);
    const first = await images().resolve("web@1");
    assert.equal(first.kernel, unpacked);
    assert.deepEqual(readFileSync(unpacked), readFileSync(vmlinux));
    assert.match(logged.join("\n"), /unpacked to .*, booted through PVH/);
    assert.equal(first.rootfs, join(catalog, "web.ext4"), "other parts stay where they are");
    // A new agent finds it, checked, and unpacks nothing.
    const made = statSync(unpacked).mtimeMs;
    assert.equal((await images().resolve("web@1")).kernel, unpacked);
    assert.equal(statSync(unpacked).mtimeMs, made);
    // Damaged on disk: made again, whole.
    const fd = openSync(unpacked, "r+");
    writeSync(fd, Buffer.from("garbage"), 0, 7, 4096);
    closeSync(fd);
    assert.equal((await images().resolve("web@1")).kernel, unpacked);
    assert.deepEqual(readFileSync(unpacked), readFileSync(vmlinux));
    // Without an image cache, or for a kernel that is no bzImage, the part boots as it is.
    assert.equal(
      (await new ClassImages(catalog).resolve("web@1")).kernel,
      join(catalog, "vmlinuz"),
    );
    const elf = join(dir, "guest.elf");
    writeFileSync(elf, readFileSync(guest("hello")));
    assert.equal(await images().bootKernel(elf, sha("x")), elf);
  });
});

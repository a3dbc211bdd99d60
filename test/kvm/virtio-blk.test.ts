// virtio-blk through the virtio-mmio transport, driven by a TypeScript driver over real
// guest memory and a real (sparse) image file. No vCPU: these check the device model.
import assert from "node:assert/strict";
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VERSION,
  virtio_blk_config,
} from "../../src/kvm/index.js";
import { GuestMemory, MmioTransport, VirtioBlock } from "../../src/vmm/index.js";
import { AVAIL, DATA, DESC, discardRanges, TestDriver } from "./virtio-driver.js";

const dir = mkdtempSync(join(tmpdir(), "flatgrid-blk-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const V1 = 1n << BigInt(VIRTIO_F_VERSION_1);
const DISCARD = 1n << BigInt(VIRTIO_BLK_F_DISCARD);
const WRITE_ZEROES = 1n << BigInt(VIRTIO_BLK_F_WRITE_ZEROES);
const UNMAP = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;

/** Bytes of the file's blocks on the host's file system. */
const allocated = (path: string) => statSync(path).blocks * 512;

function setup(options: { readOnly?: boolean; sizeMiB?: number; dir?: string } = {}) {
  const path = join(options.dir ?? dir, `disk-${Math.random().toString(36).slice(2)}.img`);
  const image = Buffer.alloc((options.sizeMiB ?? 1) * 1024 * 1024);
  image.write("flatgrid disk label\n", 0);
  writeFileSync(path, image);
  const memory = new GuestMemory(2 * 1024 * 1024);
  const blk = new VirtioBlock({ path, readOnly: options.readOnly, id: "fg-test-disk" });
  let interrupts = 0;
  const errors: string[] = [];
  const transport = new MmioTransport(
    blk,
    memory,
    () => interrupts++,
    (e) => errors.push(e),
  );
  return {
    path,
    memory,
    blk,
    transport,
    driver: new TestDriver(transport, memory),
    irqs: () => interrupts,
    errors,
  };
}

describe("virtio-blk over virtio-mmio", () => {
  it("identifies itself as a version 2 virtio-mmio block device with its capacity", () => {
    const { driver, blk } = setup({ sizeMiB: 2 });
    assert.equal(driver.reg(VIRTIO_MMIO_MAGIC_VALUE), VIRTIO_MMIO_MAGIC);
    assert.equal(driver.reg(VIRTIO_MMIO_VERSION), 2);
    assert.equal(driver.reg(VIRTIO_MMIO_DEVICE_ID), 2);
    assert.equal(driver.reg(VIRTIO_MMIO_CONFIG), 4096);
    assert.equal(driver.reg(VIRTIO_MMIO_CONFIG + 4), 0);
    assert.ok(driver.deviceFeatures() & V1);
    assert.ok(driver.deviceFeatures() & (1n << BigInt(VIRTIO_BLK_F_FLUSH)));
    blk.close();
  });

  it("reads, writes, flushes and reports its id, with an interrupt per request", () => {
    const { driver, memory, path, blk, irqs } = setup();
    assert.ok(driver.init(V1) & VIRTIO_CONFIG_S_DRIVER_OK);
    const buf = DATA + 0x1000;
    assert.equal(driver.block(VIRTIO_BLK_T_IN, 0n, [[buf, 512, true]]), VIRTIO_BLK_S_OK);
    assert.equal(memory.slice(buf, 20).toString(), "flatgrid disk label\n");
    assert.deepEqual(driver.used(), [0, 513]);
    const pattern = Buffer.alloc(4096, 0).map((_, i) => (i * 7) & 0xff);
    memory.write(buf, pattern);
    assert.equal(driver.block(VIRTIO_BLK_T_OUT, 8n, [[buf, 4096, false]]), VIRTIO_BLK_S_OK);
    assert.deepEqual(readFileSync(path).subarray(8 * 512, 8 * 512 + 4096), Buffer.from(pattern));
    memory.slice(buf, 4096).fill(0);
    // Read back split over two buffers.
    assert.equal(
      driver.block(VIRTIO_BLK_T_IN, 8n, [
        [buf, 1024, true],
        [buf + 1024, 3072, true],
      ]),
      VIRTIO_BLK_S_OK,
    );
    assert.deepEqual(memory.slice(buf, 4096), Buffer.from(pattern));
    assert.equal(driver.block(VIRTIO_BLK_T_FLUSH, 0n), VIRTIO_BLK_S_OK);
    assert.equal(driver.block(VIRTIO_BLK_T_GET_ID, 0n, [[buf, 20, true]]), VIRTIO_BLK_S_OK);
    assert.equal(memory.slice(buf, 12).toString(), "fg-test-disk");
    assert.equal(driver.block(99, 0n), VIRTIO_BLK_S_UNSUPP);
    assert.ok(irqs() >= 6);
    assert.equal(driver.reg(VIRTIO_MMIO_INTERRUPT_STATUS) & 1, 1);
    assert.equal(blk.stats.writes, 1);
    blk.close();
  });

  it("moves a request scattered over 200 buffers in order, in one preadv or pwritev", () => {
    const { transport, memory, path, blk } = setup();
    // A chain of 202 descriptors needs a ring that long.
    const driver = new TestDriver(transport, memory, 256);
    driver.init(V1);
    // 200 buffers of 512 bytes, each at the next KiB of guest RAM going down: the file's
    // order is the chain's, not guest RAM's.
    const top = DATA + 0x40000;
    const buffers = Array.from({ length: 200 }, (_, i) => top - 1024 * i);
    const pattern = Buffer.alloc(200 * 512).map((_, i) => (i * 13 + (i >> 9)) & 0xff);
    for (const [i, at] of buffers.entries()) {
      memory.write(at, pattern.subarray(512 * i, 512 * (i + 1)));
    }
    const out = buffers.map((at): [number, number, boolean] => [at, 512, false]);
    assert.equal(driver.block(VIRTIO_BLK_T_OUT, 16n, out), VIRTIO_BLK_S_OK);
    assert.deepEqual(driver.used(), [0, 1]);
    assert.deepEqual(readFileSync(path).subarray(16 * 512, 216 * 512), pattern);
    for (const at of buffers) memory.slice(at, 512).fill(0);
    const into = buffers.map((at): [number, number, boolean] => [at, 512, true]);
    assert.equal(driver.block(VIRTIO_BLK_T_IN, 16n, into), VIRTIO_BLK_S_OK);
    assert.deepEqual(driver.used(), [0, 200 * 512 + 1]);
    assert.deepEqual(Buffer.concat(buffers.map((at) => memory.slice(at, 512))), pattern);
    assert.equal(blk.stats.bytesRead, 200 * 512);
    assert.equal(blk.stats.bytesWritten, 200 * 512);
    blk.close();
  });

  it("reads past the end of an image file that shrank under it as zeros", () => {
    const { driver, memory, path, blk } = setup();
    driver.init(V1);
    truncateSync(path, 512 + 100);
    const buf = DATA + 0x1000;
    memory.slice(buf, 2048).fill(0xee);
    const into: [number, number, boolean][] = [
      [buf, 1024, true],
      [buf + 1024, 1024, true],
    ];
    assert.equal(driver.block(VIRTIO_BLK_T_IN, 0n, into), VIRTIO_BLK_S_OK);
    assert.equal(memory.slice(buf, 20).toString(), "flatgrid disk label\n");
    assert.ok(memory.slice(buf + 612, 2048 - 612).every((b) => b === 0));
    blk.close();
  });

  it("refuses I/O past the end, and writes to a read-only disk, with IOERR", () => {
    const { driver, memory, blk } = setup();
    driver.init(V1);
    const buf = DATA + 0x1000;
    assert.equal(driver.block(VIRTIO_BLK_T_IN, 2048n, [[buf, 512, true]]), VIRTIO_BLK_S_IOERR);
    assert.equal(driver.block(VIRTIO_BLK_T_IN, 2047n, [[buf, 1024, true]]), VIRTIO_BLK_S_IOERR);
    assert.equal(driver.block(VIRTIO_BLK_T_IN, 2n ** 63n, [[buf, 512, true]]), VIRTIO_BLK_S_IOERR);
    assert.equal(driver.block(VIRTIO_BLK_T_IN, 2047n, [[buf, 512, true]]), VIRTIO_BLK_S_OK);
    blk.close();
    const ro = setup({ readOnly: true });
    assert.ok(ro.driver.deviceFeatures() & (1n << BigInt(VIRTIO_BLK_F_RO)));
    ro.driver.init(V1 | (1n << BigInt(VIRTIO_BLK_F_RO)));
    memory.write(buf, Buffer.alloc(512, 1));
    assert.equal(ro.driver.block(VIRTIO_BLK_T_OUT, 1n, [[buf, 512, false]]), VIRTIO_BLK_S_IOERR);
    ro.blk.close();
  });

  it("refuses features it did not offer, and a driver without VERSION_1", () => {
    const { driver, blk } = setup();
    assert.equal(driver.init(V1 | (1n << 40n)) & VIRTIO_CONFIG_S_FEATURES_OK, 0);
    assert.equal(driver.init(0n) & VIRTIO_CONFIG_S_FEATURES_OK, 0);
    assert.ok(driver.init(V1) & VIRTIO_CONFIG_S_FEATURES_OK);
    blk.close();
  });

  it("keeps the image sparse: a write at the end does not fill the file", () => {
    const path = join(dir, "sparse.img");
    writeFileSync(path, "");
    truncateSync(path, 1024 * 1024 * 1024);
    const memory = new GuestMemory(2 * 1024 * 1024);
    const blk = new VirtioBlock({ path });
    const driver = new TestDriver(new MmioTransport(blk, memory, () => {}), memory);
    driver.init(V1);
    memory.write(DATA + 0x1000, Buffer.alloc(512, 0x5a));
    assert.equal(
      driver.block(VIRTIO_BLK_T_OUT, 2n * 1024n * 1024n - 1n, [[DATA + 0x1000, 512, false]]),
      VIRTIO_BLK_S_OK,
    );
    const st = statSync(path);
    assert.equal(st.size, 1024 * 1024 * 1024);
    assert.ok(st.blocks * 512 < 1024 * 1024, `${st.blocks} blocks allocated`);
    blk.close();
  });

  it("discards and zeroes ranges: a discard gives the file's space back and reads as zeros; write-zeroes keeps it allocated unless the driver allows unmapping", () => {
    const { driver, memory, path, blk } = setup({ sizeMiB: 4 });
    assert.ok(driver.deviceFeatures() & DISCARD);
    assert.ok(driver.deviceFeatures() & WRITE_ZEROES);
    assert.ok(driver.init(V1 | DISCARD | WRITE_ZEROES) & VIRTIO_CONFIG_S_DRIVER_OK);
    const cfg = (field: keyof typeof virtio_blk_config.fields) =>
      driver.reg(VIRTIO_MMIO_CONFIG + virtio_blk_config.fields[field][0]);
    assert.equal(cfg("max_discard_seg"), 16);
    assert.equal(cfg("discard_sector_alignment"), 8);
    assert.ok(cfg("max_discard_sectors") >= 2048 * 1024);
    assert.equal(cfg("write_zeroes_may_unmap") & 0xff, 1);

    const before = allocated(path);
    assert.ok(before >= 4 * 1024 * 1024, `the image starts filled (${before} bytes allocated)`);
    // 1 MiB from 4 KiB, and 512 KiB from 2 MiB, in one request.
    const req = DATA + 0x1000;
    const discard = discardRanges(memory, req, [
      [8, 2048, 0],
      [4096, 1024, 0],
    ]);
    assert.equal(driver.block(VIRTIO_BLK_T_DISCARD, 0n, discard), VIRTIO_BLK_S_OK);
    const freed = before - allocated(path);
    assert.ok(freed >= 1.5 * 1024 * 1024, `the discard freed ${freed} bytes`);
    const image = readFileSync(path);
    assert.equal(image.subarray(0, 20).toString(), "flatgrid disk label\n", "sector 0 kept");
    assert.ok(image.subarray(4096, 4096 + 1024 * 1024).every((b) => b === 0));

    // Write-zeroes without unmap over written data: zeros, and the space stays allocated.
    const buf = DATA + 0x10000;
    memory.write(buf, Buffer.alloc(64 * 1024, 0xa5));
    assert.equal(driver.block(VIRTIO_BLK_T_OUT, 6144n, [[buf, 64 * 1024, false]]), VIRTIO_BLK_S_OK);
    const written = allocated(path);
    assert.equal(
      driver.block(VIRTIO_BLK_T_WRITE_ZEROES, 0n, discardRanges(memory, req, [[6144, 128, 0]])),
      VIRTIO_BLK_S_OK,
    );
    assert.ok(
      readFileSync(path)
        .subarray(6144 * 512, 6272 * 512)
        .every((b) => b === 0),
    );
    assert.ok(allocated(path) >= written, "zeroed without unmap, the range stays allocated");
    // With unmap allowed: zeros, and a hole.
    assert.equal(driver.block(VIRTIO_BLK_T_OUT, 6144n, [[buf, 64 * 1024, false]]), VIRTIO_BLK_S_OK);
    assert.equal(
      driver.block(VIRTIO_BLK_T_WRITE_ZEROES, 0n, discardRanges(memory, req, [[6144, 128, UNMAP]])),
      VIRTIO_BLK_S_OK,
    );
    assert.ok(
      readFileSync(path)
        .subarray(6144 * 512, 6272 * 512)
        .every((b) => b === 0),
    );
    assert.ok(allocated(path) < written, "zeroed with unmap, the range is a hole");
    assert.equal(blk.stats.discards, 1);
    assert.equal(blk.stats.writeZeroes, 2);
    blk.close();
  });

  it("zeroes by writing zeros where the file system has no zero-range (tmpfs)", (t) => {
    if (!existsSync("/dev/shm")) return t.skip("no tmpfs at /dev/shm");
    const shm = mkdtempSync("/dev/shm/flatgrid-blk-");
    try {
      const { driver, memory, path, blk } = setup({ sizeMiB: 1, dir: shm });
      driver.init(V1 | WRITE_ZEROES);
      const buf = DATA + 0x10000;
      memory.write(buf, Buffer.alloc(8192, 0x3c));
      assert.equal(driver.block(VIRTIO_BLK_T_OUT, 64n, [[buf, 8192, false]]), VIRTIO_BLK_S_OK);
      const req = DATA + 0x1000;
      const zero = discardRanges(memory, req, [[64, 16, 0]]);
      assert.equal(driver.block(VIRTIO_BLK_T_WRITE_ZEROES, 0n, zero), VIRTIO_BLK_S_OK);
      const image = readFileSync(path);
      assert.ok(image.subarray(64 * 512, 80 * 512).every((b) => b === 0));
      assert.equal(image.subarray(0, 20).toString(), "flatgrid disk label\n");
      blk.close();
    } finally {
      rmSync(shm, { recursive: true, force: true });
    }
  });

  it("refuses malformed discards as the spec says, and applies none of a request with one bad range", () => {
    const { driver, memory, path, blk } = setup({ sizeMiB: 1 });
    driver.init(V1 | DISCARD | WRITE_ZEROES);
    const req = DATA + 0x1000;
    const before = allocated(path);
    const status = (type: number, list: [number, number, number][]) =>
      driver.block(type, 0n, discardRanges(memory, req, list));
    // "unmap" on a discard, and flags nobody defined: UNSUPP.
    assert.equal(status(VIRTIO_BLK_T_DISCARD, [[8, 8, UNMAP]]), VIRTIO_BLK_S_UNSUPP);
    assert.equal(status(VIRTIO_BLK_T_WRITE_ZEROES, [[8, 8, 2]]), VIRTIO_BLK_S_UNSUPP);
    // Past the end of the disk, or too many ranges: IOERR.
    assert.equal(status(VIRTIO_BLK_T_DISCARD, [[2040, 16, 0]]), VIRTIO_BLK_S_IOERR);
    assert.equal(status(VIRTIO_BLK_T_DISCARD, [[2 ** 52, 8, 0]]), VIRTIO_BLK_S_IOERR);
    const many = Array.from({ length: 17 }, (_, i): [number, number, number] => [8 * i, 8, 0]);
    assert.equal(status(VIRTIO_BLK_T_DISCARD, many), VIRTIO_BLK_S_IOERR);
    // A range cut short (not a whole 16-byte struct), and none at all.
    assert.equal(driver.block(VIRTIO_BLK_T_DISCARD, 0n, [[req, 12, false]]), VIRTIO_BLK_S_IOERR);
    assert.equal(driver.block(VIRTIO_BLK_T_DISCARD, 0n), VIRTIO_BLK_S_IOERR);
    // A good range then a bad one: nothing was discarded.
    assert.equal(
      status(VIRTIO_BLK_T_DISCARD, [
        [0, 1024, 0],
        [2048, 8, 0],
      ]),
      VIRTIO_BLK_S_IOERR,
    );
    assert.equal(allocated(path), before);
    assert.equal(readFileSync(path).subarray(0, 20).toString(), "flatgrid disk label\n");
    assert.equal(blk.stats.discards, 0);
    blk.close();
    // A read-only disk offers neither, and refuses both.
    const ro = setup({ readOnly: true });
    assert.equal(ro.driver.deviceFeatures() & (DISCARD | WRITE_ZEROES), 0n);
    ro.driver.init(V1 | (1n << BigInt(VIRTIO_BLK_F_RO)));
    const roStatus = ro.driver.block(
      VIRTIO_BLK_T_DISCARD,
      0n,
      discardRanges(ro.memory, req, [[0, 8, 0]]),
    );
    assert.equal(roStatus, VIRTIO_BLK_S_UNSUPP);
    assert.equal(readFileSync(ro.path).subarray(0, 20).toString(), "flatgrid disk label\n");
    ro.blk.close();
  });

  it("puts itself in NEEDS_RESET on a looping chain, then works again after a reset", () => {
    const { driver, memory, blk, errors } = setup();
    driver.init(V1);
    // desc 0 -> 1 -> 0: a loop.
    memory.writeU64(DESC, DATA);
    memory.writeU32(DESC + 8, 16);
    memory.writeU16(DESC + 12, 1);
    memory.writeU16(DESC + 14, 1);
    memory.writeU64(DESC + 16, DATA + 16);
    memory.writeU32(DESC + 24, 1);
    memory.writeU16(DESC + 28, 1);
    memory.writeU16(DESC + 30, 0);
    memory.writeU16(AVAIL + 4, 0);
    memory.writeU16(AVAIL + 2, 1);
    driver.reg(0x50, 0);
    assert.ok(driver.reg(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
    assert.match(errors[0] ?? "", /loops or is too long; the device needs a reset/);
    // Further notifications are ignored until the driver resets the device.
    driver.reg(0x50, 0);
    assert.ok(driver.init(V1) & VIRTIO_CONFIG_S_DRIVER_OK);
    assert.equal(driver.reg(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert.equal(driver.block(VIRTIO_BLK_T_IN, 0n, [[DATA + 0x1000, 512, true]]), VIRTIO_BLK_S_OK);
    blk.close();
  });

  it("refuses queues outside guest RAM when the driver says DRIVER_OK", () => {
    const { driver, blk, errors } = setup();
    const status = driver.init(V1, { desc: 0x7fff_f000, avail: AVAIL, used: 0x12000, size: 16 });
    assert.ok(status & VIRTIO_CONFIG_S_NEEDS_RESET);
    assert.match(errors[0] ?? "", /descriptor table at 0x7ffff000\+256 is outside guest RAM/);
    blk.close();
  });
});

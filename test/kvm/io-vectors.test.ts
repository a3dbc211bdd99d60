// The iovec table that virtio-blk hands to preadv/pwritev, and the guest RAM views and host
// addresses behind it, on real guest memory and a real file.
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { UIO_MAXIOV } from "../../src/kvm/index.js";
import {
  GuestMemory,
  GuestMemoryError,
  MMIO_HOLE_END,
  MMIO_HOLE_START,
} from "../../src/vmm/index.js";
import { IoVectors } from "../../src/vmm/io-vectors.js";

const dir = mkdtempSync(join(tmpdir(), "flatgrid-iov-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("IoVectors", () => {
  const memory = new GuestMemory(1 << 20);
  after(() => memory.close());
  const file = join(dir, "data");
  const content = Buffer.alloc(64 * 1024).map((_, i) => (i * 31 + (i >> 8)) & 0xff);
  writeFileSync(file, content);

  it("reads a file into scattered pieces of guest RAM in table order", () => {
    const fd = openSync(file, "r");
    const io = new IoVectors();
    const pieces: [number, number][] = [
      [0x8000, 100],
      [0x2000, 4096],
      [0x1000, 1],
      [0x9000, 3000],
    ];
    for (const [at, n] of pieces) io.add(memory.hostPointer(at, n), n);
    assert.equal(io.bytes, 7197);
    assert.equal(io.readAt(fd, 500), 7197);
    const got = Buffer.concat(pieces.map(([at, n]) => memory.slice(at, n)));
    assert.deepEqual(got, content.subarray(500, 500 + 7197));
    // At the end of the file: fewer bytes, not an error.
    assert.equal(io.readAt(fd, content.length - 10), 10);
    closeSync(fd);
  });

  it("writes from guest RAM, and after a part was written goes on with the rest", () => {
    const out = join(dir, "out");
    writeFileSync(out, "");
    const fd = openSync(out, "r+");
    const io = new IoVectors();
    memory.write(0x10000, Buffer.from("abcdef"));
    memory.write(0x20000, Buffer.from("ghij"));
    memory.write(0x30000, Buffer.from("klmnopq"));
    io.add(memory.hostPointer(0x10000, 6), 6);
    io.add(memory.hostPointer(0x20000, 4), 4);
    io.add(memory.hostPointer(0x30000, 7), 7);
    // What a short pwritev leaves: 8 bytes done, the rest from inside the second piece.
    io.advance(8);
    assert.equal(io.count, 2);
    assert.equal(io.bytes, 9);
    io.writeAllAt(fd, 8);
    assert.equal(readFileSync(out).subarray(8).toString(), "ijklmnopq");
    io.clear();
    io.add(memory.hostPointer(0x10000, 6), 6);
    io.advance(6);
    assert.equal(io.count, 0);
    assert.equal(io.bytes, 0);
    closeSync(fd);
  });

  it(`holds at most ${UIO_MAXIOV} buffers, what one call takes`, () => {
    const io = new IoVectors();
    for (let i = 0; i < UIO_MAXIOV; i++) io.add(memory.hostPointer(0, 1), 1);
    assert.ok(io.full);
    assert.throws(() => io.add(memory.hostPointer(0, 1), 1), RangeError);
  });
});

describe("GuestMemory views and host addresses", () => {
  it("refuses host addresses for ranges outside RAM or not numbers at all", () => {
    const memory = new GuestMemory(1 << 20);
    assert.equal(memory.hostPointer(0x1000, 16), Number(memory.hostAddress(0x1000, 16)));
    for (const [at, n] of [
      [(1 << 20) - 8, 16],
      [-1, 4],
      [0, -1],
      [0.5, 1],
      [2 ** 60, 1],
    ] as [number, number][]) {
      assert.throws(() => memory.hostPointer(at, n), GuestMemoryError, `${at}+${n}`);
    }
    memory.close();
  });

  it("puts guest RAM on 2 MiB host boundaries, so that KVM can map it with huge pages", () => {
    // Above the MMIO hole too: the second region is its own mapping.
    const memory = new GuestMemory(MMIO_HOLE_START + (6 << 20));
    for (const at of [
      0,
      2 << 20,
      MMIO_HOLE_START - (2 << 20),
      MMIO_HOLE_END,
      MMIO_HOLE_END + (4 << 20),
    ])
      assert.equal(memory.hostPointer(at, 1) % (2 << 20), 0, `guest 0x${at.toString(16)}`);
    // Every byte is there, and nothing past the end (the slack was unmapped, not kept).
    memory.write(MMIO_HOLE_END + (6 << 20) - 4, Buffer.from([1, 2, 3, 4]));
    assert.deepEqual(memory.slice(MMIO_HOLE_END + (6 << 20) - 4, 4), Buffer.from([1, 2, 3, 4]));
    memory.close();
  });

  it("gives one view of a ring or buffer that crosses a 1 GiB line, up to 1 MiB long", () => {
    // Reserved, not used: the pages are touched only where written.
    const memory = new GuestMemory((1 << 30) + (4 << 20));
    const line = 1 << 30;
    const bytes = Buffer.alloc(8192).map((_, i) => i & 0xff);
    memory.write(line - 4096, bytes);
    assert.deepEqual(memory.slice(line - 4096, 8192), bytes);
    assert.deepEqual(memory.slice(line, 4096), bytes.subarray(4096));
    assert.throws(() => memory.slice(line - 4096, 2 << 20), GuestMemoryError);
    memory.close();
  });
});

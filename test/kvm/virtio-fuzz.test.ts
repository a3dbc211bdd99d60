// Property-based fuzzing of what a guest controls: virtqueue memory and the virtio-mmio
// registers of a block device. Fixed seed and bounded runs, so CI is repeatable. The
// properties: nothing but QueueError ever escapes the parser, the transport never throws,
// every descriptor it accepts lies inside guest RAM, every block request of a well-formed
// chain gets a status (or puts the device in NEEDS_RESET), and the disk never grows.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import {
  VIRTIO_BLK_F_DISCARD,
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
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_STATUS,
} from "../../src/kvm/index.js";
import {
  GuestMemory,
  MmioTransport,
  QueueError,
  VirtioBlock,
  Virtqueue,
} from "../../src/vmm/index.js";
import { AVAIL, DATA, DESC, discardRanges, TestDriver, USED } from "./virtio-driver.js";

const SEED = 20261127;
const RAM = 1024 * 1024;
const memory = new GuestMemory(RAM);
const dir = mkdtempSync(join(tmpdir(), "flatgrid-fuzz-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Mostly plausible values with the odd absurd one, so that chains get far enough to be
 * checked deep down, not only refused at the first index.
 */
const mostly = <T>(likely: fc.Arbitrary<T>, odd: fc.Arbitrary<T>) =>
  fc.oneof({ arbitrary: likely, weight: 8 }, { arbitrary: odd, weight: 1 });
const address = fc.oneof(
  fc.integer({ min: 0, max: RAM - 1 }),
  fc.integer({ min: RAM - 64, max: RAM + 64 }),
  fc.constantFrom(0, 2 ** 32 - 1, 2 ** 48, 2 ** 53 - 1),
);
const length = mostly(fc.integer({ min: 0, max: 4096 }), fc.constantFrom(0xffffffff, 2 ** 31, RAM));
const descriptor = fc.record({
  address,
  length,
  flags: fc.integer({ min: 0, max: 7 }),
  next: mostly(fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 0xffff })),
});
const head = mostly(fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 0xffff }));
const availIndex = mostly(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 0, max: 0xffff }));

function writeDescriptors(
  table: number,
  descs: { address: number; length: number; flags: number; next: number }[],
) {
  // Each run starts from a clean table, so that a failure reproduces from its seed alone.
  memory.slice(table, 16 * 16).fill(0);
  descs.forEach((d, i) => {
    memory.writeU64(table + 16 * i, BigInt(Math.min(d.address, 2 ** 53 - 1)));
    memory.writeU32(table + 16 * i + 8, d.length >>> 0);
    memory.writeU16(table + 16 * i + 12, d.flags);
    memory.writeU16(table + 16 * i + 14, d.next);
  });
}

describe("virtqueue and virtio-blk under fuzzed guest input", () => {
  it("parses any descriptor table without escaping errors or reaching outside RAM", () => {
    fc.assert(
      fc.property(
        fc.array(descriptor, { minLength: 1, maxLength: 16 }),
        fc.array(head, { minLength: 1, maxLength: 16 }),
        availIndex,
        fc.boolean(),
        (descs, ring, availIdx, indirect) => {
          const q = new Virtqueue(16);
          q.descTable = DESC;
          q.availRing = AVAIL;
          q.usedRing = USED;
          writeDescriptors(DESC, descs);
          ring.forEach((head, i) => {
            memory.writeU16(AVAIL + 4 + 2 * i, head);
          });
          memory.writeU16(AVAIL + 2, availIdx);
          for (let i = 0; i < 20; i++) {
            let chain: ReturnType<Virtqueue["pop"]>;
            try {
              chain = q.pop(memory, indirect);
            } catch (err) {
              assert.ok(err instanceof QueueError, `escaped: ${err}`);
              return;
            }
            if (!chain) return;
            for (const d of chain.descriptors) assert.ok(memory.contains(d.address, d.length));
            q.pushUsed(memory, chain.head, 0);
          }
        },
      ),
      { seed: SEED, numRuns: 2000 },
    );
  });

  it("survives any sequence of register writes and queue contents on a block device", () => {
    const path = join(dir, "disk.img");
    writeFileSync(path, Buffer.alloc(64 * 1024));
    const v1 = 1n << BigInt(VIRTIO_F_VERSION_1);
    const register = fc.record({
      offset: fc.oneof(
        fc.integer({ min: 0, max: 0x1ff }).map((o) => o & ~3),
        fc.integer({ min: 0, max: 0xfff }),
      ),
      value: fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 16 })),
      size: fc.constantFrom(1, 2, 4, 8),
    });
    fc.assert(
      fc.property(
        fc.array(descriptor, { minLength: 1, maxLength: 16 }),
        fc.array(register, { maxLength: 40 }),
        fc.boolean(),
        (descs, writes, wellFormedStart) => {
          const blk = new VirtioBlock({ path });
          const transport = new MmioTransport(blk, memory, () => {});
          try {
            const driver = new TestDriver(transport, memory);
            if (wellFormedStart) driver.init(v1);
            writeDescriptors(DESC, descs);
            memory.writeU16(AVAIL + 4, 0);
            memory.writeU16(AVAIL + 2, (memory.readU16(AVAIL + 2) + 1) & 0xffff);
            for (const w of writes) {
              const data = Buffer.alloc(w.size);
              data.writeUIntLE(w.value % 2 ** (8 * Math.min(w.size, 6)), 0, Math.min(w.size, 6));
              transport.write(w.offset, data);
              transport.read(w.offset, Buffer.alloc(w.size));
            }
            driver.reg(0x50, 0);
          } finally {
            blk.close();
          }
          assert.equal(statSync(path).size, 64 * 1024);
        },
      ),
      { seed: SEED, numRuns: 500 },
    );
  });

  it("answers any block request of a well-formed chain with a status, and the disk never grows", (t) => {
    const path = join(dir, "requests.img");
    const size = 64 * 1024;
    writeFileSync(path, Buffer.alloc(size, 0x11));
    const features =
      (1n << BigInt(VIRTIO_F_VERSION_1)) |
      (1n << BigInt(VIRTIO_BLK_F_DISCARD)) |
      (1n << BigInt(VIRTIO_BLK_F_WRITE_ZEROES));
    const blk = new VirtioBlock({ path });
    const transport = new MmioTransport(blk, memory, () => {});
    const driver = new TestDriver(transport, memory);
    const sector = mostly(
      fc.bigInt({ min: 0n, max: BigInt(size / 512) }),
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    );
    // DISCARD/WRITE_ZEROES ranges, mostly near the disk, with any flags now and then.
    const range = fc.record({
      sector,
      count: mostly(fc.integer({ min: 0, max: 256 }), fc.integer({ min: 0, max: 0xffffffff })),
      flags: mostly(fc.constantFrom(0, 1), fc.integer({ min: 0, max: 0xffffffff })),
    });
    const buffer = fc.record({
      length: mostly(fc.constantFrom(16, 32, 512, 4096), fc.integer({ min: 0, max: 9000 })),
      writable: fc.boolean(),
    });
    // How the runs ended, so that a run that never reached the request parser shows.
    const seen = new Map<string, number>();
    try {
      fc.assert(
        fc.property(
          fc.oneof(
            fc.constantFrom(
              VIRTIO_BLK_T_IN,
              VIRTIO_BLK_T_OUT,
              VIRTIO_BLK_T_FLUSH,
              VIRTIO_BLK_T_GET_ID,
              VIRTIO_BLK_T_DISCARD,
              VIRTIO_BLK_T_WRITE_ZEROES,
            ),
            fc.integer({ min: 0, max: 0xffffffff }),
          ),
          sector,
          fc.array(range, { maxLength: 20 }),
          fc.array(buffer, { maxLength: 4 }),
          (type, at, list, buffers) => {
            if (!(driver.init(features) & VIRTIO_CONFIG_S_DRIVER_OK)) throw new Error("init");
            // The ranges go first, into the first buffers' memory, whatever their kind.
            let address = DATA + 0x1000;
            const chain = buffers.map(({ length, writable }): [number, number, boolean] => {
              const b: [number, number, boolean] = [address, length, writable];
              address += length;
              return b;
            });
            discardRanges(
              memory,
              DATA + 0x1000,
              list.map((r) => [r.sector, r.count, r.flags >>> 0]),
            );
            const status = driver.block(type >>> 0, at, chain);
            const needsReset = (driver.reg(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
            const outcome = needsReset ? "needs-reset" : `status ${status}`;
            seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
            assert.ok(
              needsReset ||
                [VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP].includes(status),
              `status ${status} for type ${type}`,
            );
            assert.equal(statSync(path).size, size);
          },
        ),
        { seed: SEED, numRuns: 1500 },
      );
    } finally {
      blk.close();
    }
    t.diagnostic(`outcomes: ${[...seen].map(([k, n]) => `${k} ${n}`).join(", ")}`);
    for (const s of [VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP])
      assert.ok(seen.get(`status ${s}`), `no run ended with status ${s}`);
  });
});

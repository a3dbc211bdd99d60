// VIRTIO_RING_F_EVENT_IDX (virtio 1.2, 2.7.10) through the virtio-mmio transport, over real
// guest memory: the device interrupts only when the used index passes the driver's
// used_event, and asks, in avail_event, for a notification of the next buffer whenever it
// finds its queue empty. The test driver notifies only when asked, as Linux's does, so a
// device that forgot to ask would never hear of a request again.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VRING_AVAIL_F_NO_INTERRUPT,
} from "../../src/kvm/index.js";
import {
  GuestMemory,
  MmioTransport,
  needEvent,
  VirtioBlock,
  VirtioRng,
} from "../../src/vmm/index.js";
import { AVAIL, DATA, TestDriver, USED } from "./virtio-driver.js";

const V1 = 1n << BigInt(VIRTIO_F_VERSION_1);
const EVENT_IDX = 1n << BigInt(VIRTIO_RING_F_EVENT_IDX);
const dir = mkdtempSync(join(tmpdir(), "flatgrid-event-idx-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function rng() {
  const memory = new GuestMemory(2 * 1024 * 1024);
  let irqs = 0;
  const driver = new TestDriver(new MmioTransport(new VirtioRng(), memory, () => irqs++), memory);
  return { memory, driver, irqs: () => irqs };
}

function blk() {
  const path = join(dir, `disk-${Math.random().toString(36).slice(2)}.img`);
  writeFileSync(path, Buffer.alloc(1024 * 1024));
  const memory = new GuestMemory(2 * 1024 * 1024);
  const device = new VirtioBlock({ path });
  let irqs = 0;
  const driver = new TestDriver(new MmioTransport(device, memory, () => irqs++), memory);
  return { memory, driver, device, irqs: () => irqs };
}

describe("virtqueues with event indexes", () => {
  it("needEvent says whether the entry asked for is among those added since the last time", () => {
    // Against the definition, walked entry by entry, around the 16-bit wrap too.
    let seed = 7;
    const next = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    for (let i = 0; i < 20_000; i++) {
      const old = i < 10 ? 0xfff8 + i : next() & 0xffff;
      const added = i % 3 === 0 ? next() % 4 : next() % 300;
      const now = (old + added) & 0xffff;
      const event = i % 2 ? (old + (next() % 310) - 5) & 0xffff : next() & 0xffff;
      let among = false;
      for (let k = 0; k < added; k++) among ||= ((old + k) & 0xffff) === event;
      assert.equal(needEvent(event, now, old), among, `event ${event}, old ${old}, now ${now}`);
    }
  });

  it("is offered by the disk and the entropy device", () => {
    assert.ok(rng().driver.deviceFeatures() & EVENT_IDX);
    const b = blk();
    assert.ok(b.driver.deviceFeatures() & EVENT_IDX);
    b.device.close();
  });

  it("interrupts only when the used index passes the driver's used_event", () => {
    const { driver, irqs } = rng();
    driver.init(V1 | EVENT_IDX);
    // used_event 0: the driver wants to hear of the first used entry.
    driver.setUsedEvent(0);
    driver.submit([[DATA, 16, true]]);
    assert.deepEqual(driver.used(), [0, 16]);
    assert.equal(irqs(), 1);
    // Busy with other work, the driver asks for an interrupt only after entry 5 (the sixth).
    driver.setUsedEvent(5);
    for (let i = 1; i <= 4; i++) driver.submit([[DATA, 16, true]]);
    assert.equal(irqs(), 1, "no interrupt for entries 1 to 4");
    driver.submit([[DATA, 16, true]]);
    assert.equal(irqs(), 2, "an interrupt for entry 5");
    driver.submit([[DATA, 16, true]]);
    assert.equal(irqs(), 2, "used_event is behind: no interrupt for entry 6");
    // The available ring's NO_INTERRUPT flag means nothing in this mode (2.7.10).
    driver.memory.writeU16(AVAIL, VRING_AVAIL_F_NO_INTERRUPT);
    driver.setUsedEvent(7);
    driver.submit([[DATA, 16, true]]);
    assert.equal(irqs(), 3, "an interrupt for entry 7 despite NO_INTERRUPT");
  });

  it("asks for a notification of the next buffer whenever it has served the queue empty", () => {
    const { driver, memory, device } = blk();
    driver.init(V1 | EVENT_IDX);
    assert.equal(driver.availEvent(), 0, "nothing asked before the first request");
    // Request `slot` uses descriptors 3 * slot to 3 * slot + 2 and its own buffers.
    const status = (slot: number) => DATA + 0x100 * slot + 16;
    const request = (slot: number, type: number, sector: bigint, notify: boolean) => {
      const header = DATA + 0x100 * slot;
      memory.writeU32(header, type);
      memory.writeU32(header + 4, 0);
      memory.writeU64(header + 8, sector);
      memory.slice(status(slot), 1)[0] = 0xff;
      driver.submit(
        [
          [header, 16, false],
          [DATA + 0x1000 + 512 * slot, 512, type === VIRTIO_BLK_T_IN],
          [status(slot), 1, true],
        ],
        0,
        3 * slot,
        notify,
      );
    };
    // Three requests made available with one notification: served as one batch, after which
    // the device asks to hear of entry 3.
    for (let i = 0; i < 3; i++) request(i, VIRTIO_BLK_T_OUT, BigInt(i), i === 2);
    assert.equal(driver.kicks[0], 1);
    assert.equal(device.stats.writes, 3);
    for (let i = 0; i < 3; i++) assert.equal(memory.slice(status(i), 1)[0], VIRTIO_BLK_S_OK);
    assert.equal(driver.availEvent(), 3);
    // One at a time, past the 16-entry ring's end: every request is asked for and served.
    for (let i = 0; i < 40; i++) {
      request(0, VIRTIO_BLK_T_IN, BigInt(i % 8), true);
      assert.equal(memory.slice(status(0), 1)[0], VIRTIO_BLK_S_OK, `request ${i} served`);
    }
    assert.equal(driver.kicks[0], 41);
    assert.equal(device.stats.reads, 40);
    assert.equal(driver.availEvent(), 43);
    device.close();
  });

  it("leaves avail_event alone and honours NO_INTERRUPT when the driver did not take it", () => {
    const { driver, memory, irqs } = rng();
    driver.init(V1);
    memory.writeU16(USED + 4 + 8 * driver.queueSize, 0xbeef);
    driver.submit([[DATA, 16, true]]);
    assert.equal(irqs(), 1);
    memory.writeU16(AVAIL, VRING_AVAIL_F_NO_INTERRUPT);
    driver.submit([[DATA, 16, true]]);
    assert.equal(irqs(), 1);
    assert.equal(driver.availEvent(), 0xbeef, "avail_event untouched");
    assert.equal(driver.kicks[0], 2);
  });
});

// The virtio interrupt status the vCPU threads answer by themselves: what a read returns and
// what an acknowledgement clears, for the device at the address, and nothing for any other
// register or address (those go to the main thread).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_INTERRUPT_ACK,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_STATUS,
} from "../../src/kvm/index.js";
import {
  answerInterruptAccess,
  InterruptStatusTable,
} from "../../src/vmm/virtio/interrupt-status.js";

const SIZE = 0x1000;
const BASE = 0xd000_0000;

function access(table: InterruptStatusTable, address: number, write: boolean, value = 0): number {
  return answerInterruptAccess(table.words, address, write, value);
}

describe("virtio interrupt status shared with the vCPU threads", () => {
  it("reads what the device raised and clears what the driver acknowledged", () => {
    const table = new InterruptStatusTable(2, SIZE);
    const blk = table.add(BASE);
    const net = table.add(BASE + SIZE);
    blk.raise(VIRTIO_MMIO_INT_VRING);
    net.raise(VIRTIO_MMIO_INT_CONFIG);
    assert.equal(access(table, BASE + VIRTIO_MMIO_INTERRUPT_STATUS, false), VIRTIO_MMIO_INT_VRING);
    assert.equal(
      access(table, BASE + SIZE + VIRTIO_MMIO_INTERRUPT_STATUS, false),
      VIRTIO_MMIO_INT_CONFIG,
    );
    blk.raise(VIRTIO_MMIO_INT_CONFIG);
    // Acknowledging VRING leaves CONFIG, raised since the driver read the status.
    assert.equal(access(table, BASE + VIRTIO_MMIO_INTERRUPT_ACK, true, VIRTIO_MMIO_INT_VRING), 0);
    assert.equal(blk.get(), VIRTIO_MMIO_INT_CONFIG);
    assert.equal(net.get(), VIRTIO_MMIO_INT_CONFIG, "the other device's bits are its own");
  });

  it("says VRING always while the kernel serves a device's queues", () => {
    const table = new InterruptStatusTable(1, SIZE);
    const vhost = table.add(BASE);
    vhost.setKernelQueues(true);
    assert.equal(access(table, BASE + VIRTIO_MMIO_INTERRUPT_STATUS, false), VIRTIO_MMIO_INT_VRING);
    access(table, BASE + VIRTIO_MMIO_INTERRUPT_ACK, true, VIRTIO_MMIO_INT_VRING);
    assert.equal(vhost.get(), VIRTIO_MMIO_INT_VRING);
    vhost.setKernelQueues(false);
    assert.equal(vhost.get(), 0);
  });

  it("leaves every other register and address to the main thread", () => {
    const table = new InterruptStatusTable(1, SIZE);
    table.add(BASE).raise(VIRTIO_MMIO_INT_VRING);
    assert.equal(access(table, BASE + VIRTIO_MMIO_STATUS, false), -1);
    assert.equal(access(table, BASE + VIRTIO_MMIO_INTERRUPT_STATUS, true, 1), -1);
    assert.equal(access(table, BASE + VIRTIO_MMIO_INTERRUPT_ACK, false), -1);
    assert.equal(access(table, BASE + SIZE + VIRTIO_MMIO_INTERRUPT_STATUS, false), -1);
    assert.equal(access(table, BASE - 4, false), -1);
    assert.throws(() => table.add(BASE + SIZE), /more than 1 virtio devices/);
  });
});

// virtio-rng through the virtio-mmio transport, over real guest memory.
import assert from "node:assert/strict";
import { it } from "node:test";
import { VIRTIO_F_VERSION_1, VIRTIO_MMIO_DEVICE_ID } from "../../src/kvm/index.js";
import { GuestMemory, MmioTransport, VirtioRng } from "../../src/vmm/index.js";
import { DATA, TestDriver } from "./virtio-driver.js";

it("virtio-rng fills the guest's buffers with random bytes, at most 64 KiB a request", () => {
  const memory = new GuestMemory(2 * 1024 * 1024);
  const rng = new VirtioRng();
  let irqs = 0;
  const driver = new TestDriver(new MmioTransport(rng, memory, () => irqs++), memory);
  assert.equal(driver.reg(VIRTIO_MMIO_DEVICE_ID), 4);
  driver.init(1n << BigInt(VIRTIO_F_VERSION_1));
  memory.slice(DATA, 64).fill(0);
  driver.submit([[DATA, 64, true]]);
  assert.deepEqual(driver.used(), [0, 64]);
  assert.notDeepEqual(memory.slice(DATA, 64), Buffer.alloc(64));
  driver.submit([[DATA, 1024 * 1024, true]]);
  assert.deepEqual(driver.used(), [0, 64 * 1024]);
  assert.equal(irqs, 2);
  assert.equal(rng.bytesServed, 64 + 64 * 1024);
});

// virtio-net over a real tap in a private network namespace, driven by the TypeScript test
// driver: frames the "guest" sends reach the namespace's kernel, which answers ARP and ping
// back into the receive queue.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, describe, it } from "node:test";
import { VIRTIO_F_VERSION_1, VIRTIO_MMIO_CONFIG, VIRTIO_NET_F_MAC } from "../../src/kvm/index.js";
import {
  FdWatcher,
  GuestMemory,
  MmioTransport,
  Tap,
  TapError,
  VirtioNet,
} from "../../src/vmm/index.js";
import { DATA, TestDriver } from "./virtio-driver.js";

const id = randomBytes(3).toString("hex");
const NS = `fg-net-${id}`;
const TAP = `fgt${id}`;
const MAC = Buffer.from([0x02, 0, 0, 0, 0, 0x02]);
const HDR = 12;
const RX_BUF = (i: number) => DATA + 0x1000 * i;
const TX_BUF = DATA + 0x10000;
const ip = (...args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"] });

after(() => {
  try {
    ip("netns", "del", NS);
  } catch {
    // Already gone.
  }
});

function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += (b[b.length - 1] ?? 0) << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ipv4(a: string): Buffer {
  return Buffer.from(a.split(".").map(Number));
}

function arpRequest(): Buffer {
  const f = Buffer.alloc(HDR + 42);
  const e = f.subarray(HDR);
  e.fill(0xff, 0, 6);
  MAC.copy(e, 6);
  e.writeUInt16BE(0x0806, 12);
  e.writeUInt16BE(1, 14); // Ethernet
  e.writeUInt16BE(0x0800, 16); // IPv4
  e[18] = 6;
  e[19] = 4;
  e.writeUInt16BE(1, 20); // request
  MAC.copy(e, 22);
  ipv4("10.214.0.2").copy(e, 28);
  ipv4("10.214.0.1").copy(e, 38);
  return f;
}

function echoRequest(dstMac: Buffer, seq: number): Buffer {
  const payload = Buffer.from("flatgrid ping payload");
  const f = Buffer.alloc(HDR + 14 + 20 + 8 + payload.length);
  const e = f.subarray(HDR);
  dstMac.copy(e, 0);
  MAC.copy(e, 6);
  e.writeUInt16BE(0x0800, 12);
  const h = e.subarray(14, 34);
  h[0] = 0x45;
  h.writeUInt16BE(20 + 8 + payload.length, 2);
  h[8] = 64;
  h[9] = 1; // ICMP
  ipv4("10.214.0.2").copy(h, 12);
  ipv4("10.214.0.1").copy(h, 16);
  h.writeUInt16BE(checksum(h), 10);
  const icmp = e.subarray(34);
  icmp[0] = 8;
  icmp.writeUInt16BE(0x1234, 4);
  icmp.writeUInt16BE(seq, 6);
  payload.copy(icmp, 8);
  icmp.writeUInt16BE(checksum(icmp), 2);
  return f;
}

async function receive(driver: TestDriver, memory: GuestMemory, timeoutMs = 5000): Promise<Buffer> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const used = driver.used(0);
    if (used) {
      const [head, len] = used;
      const frame = Buffer.from(memory.slice(RX_BUF(head), len)).subarray(HDR);
      // Give the buffer back, as a driver does.
      driver.submit([[RX_BUF(head), 2048, true]], 0, head);
      return frame;
    }
    if (Date.now() > deadline) throw new Error("no frame arrived in the receive queue");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("virtio-net on a tap", { timeout: 60_000 }, () => {
  it("carries ARP and ping between the driver and a network namespace", async () => {
    ip("netns", "add", NS);
    const watcher = new FdWatcher();
    watcher.start();
    const memory = new GuestMemory(2 * 1024 * 1024);
    const net = new VirtioNet({ tap: TAP, mac: "02:00:00:00:00:02" }, watcher);
    try {
      const driver = new TestDriver(new MmioTransport(net, memory, () => {}), memory);
      const mac = Buffer.alloc(8);
      mac.writeUInt32LE(driver.reg(VIRTIO_MMIO_CONFIG), 0);
      mac.writeUInt32LE(driver.reg(VIRTIO_MMIO_CONFIG + 4), 4);
      assert.deepEqual(mac.subarray(0, 6), MAC);
      driver.init(
        (1n << BigInt(VIRTIO_F_VERSION_1)) | (1n << BigInt(VIRTIO_NET_F_MAC)),
        undefined,
        2,
      );
      ip("link", "set", TAP, "netns", NS);
      ip("-n", NS, "addr", "add", "10.214.0.1/24", "dev", TAP);
      ip("-n", NS, "link", "set", TAP, "up");
      for (let i = 0; i < 8; i++) driver.submit([[RX_BUF(i), 2048, true]], 0, i, i === 7);

      memory.write(TX_BUF, arpRequest());
      driver.submit([[TX_BUF, HDR + 42, false]], 1, 0);
      assert.deepEqual(driver.used(1), [0, 0]);
      // The namespace may send its own IPv6 noise first: look for the ARP reply.
      let reply = await receive(driver, memory);
      while (reply.readUInt16BE(12) !== 0x0806) reply = await receive(driver, memory);
      assert.equal(reply.readUInt16BE(20), 2, "an ARP reply");
      assert.deepEqual(reply.subarray(28, 32), ipv4("10.214.0.1"));
      assert.deepEqual(reply.subarray(0, 6), MAC);
      const peerMac = Buffer.from(reply.subarray(22, 28));

      for (let seq = 1; seq <= 3; seq++) {
        const ping = echoRequest(peerMac, seq);
        memory.write(TX_BUF, ping);
        driver.submit([[TX_BUF, ping.length, false]], 1, 0);
        let pong = await receive(driver, memory);
        while (pong.readUInt16BE(12) !== 0x0800 || pong[23] !== 1)
          pong = await receive(driver, memory);
        assert.equal(pong[34], 0, "an echo reply");
        assert.equal(pong.readUInt16BE(40), seq);
        assert.equal(pong.subarray(42).toString(), "flatgrid ping payload");
      }
      assert.ok(net.stats.txFrames >= 4 && net.stats.rxFrames >= 4);
    } finally {
      net.close();
      watcher.stop();
      memory.close();
    }
  });

  it("says a tap is in use when another VM holds it, and whether it made the tap", () => {
    const name = `fgu${id}`;
    const first = new Tap(name, 12);
    assert.equal(first.created, true, "no such interface before: TUNSETIFF made it");
    try {
      assert.throws(
        () => new Tap(name, 12),
        (e: unknown) => e instanceof TapError && e.code === "in-use" && e.message.includes(name),
      );
    } finally {
      first.close();
    }
    assert.throws(() => new Tap("a-name-far-too-long", 12), /not an interface name/);
    // A tap made beforehand (as the agent and the simulator do) is used, not made.
    const kept = `fgk${id}`;
    ip("tuntap", "add", "dev", kept, "mode", "tap");
    try {
      const tap = new Tap(kept, 12);
      assert.equal(tap.created, false);
      tap.close();
    } finally {
      ip("link", "del", kept);
    }
  });
});

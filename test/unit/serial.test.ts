import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Serial } from "../../src/vmm/devices/serial.js";
import { SERIAL_RING_SIZE, SerialShared } from "../../src/vmm/devices/serial-shared.js";

const DATA = 0;
const IER = 1;
const IIR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const THRE_TEMT = 0x60;

/** A UART with its shared side, as the VMM builds it; `out` is what reached the console. */
function uart() {
  const shared = new SerialShared();
  const out: number[] = [];
  let interrupts = 0;
  const serial = new Serial(
    (bytes) => out.push(...bytes),
    () => interrupts++,
    shared,
  );
  // The vCPU thread's view: the same memory, another object, as in vcpu-worker.ts.
  const vcpu = new SerialShared(shared.buffer);
  let signals = 0;
  const fast = (offset: number, isWrite: boolean, value = 0) =>
    vcpu.answer(offset, isWrite, value, () => signals++);
  const reg = (offset: number, value?: number) => {
    const data = Buffer.of(value ?? 0);
    if (value === undefined) serial.read(offset, data);
    else serial.write(offset, data);
    return data[0];
  };
  return {
    serial,
    shared,
    out,
    fast,
    reg,
    signals: () => signals,
    interrupts: () => interrupts,
  };
}

describe("the console UART's shared side (what a vCPU thread answers by itself)", () => {
  it("answers LSR: transmitter empty, and data ready once input waits", () => {
    const u = uart();
    assert.equal(u.fast(LSR, false), THRE_TEMT);
    u.serial.queueInput(Buffer.from("ab"));
    assert.equal(u.fast(LSR, false), THRE_TEMT | 0x01);
    assert.equal(u.reg(DATA), 0x61);
    assert.equal(u.reg(DATA), 0x62);
    assert.equal(u.fast(LSR, false), THRE_TEMT, "read empty: no data ready");
    // Every other register read is the main thread's.
    for (const offset of [DATA, IER, IIR, LCR, MCR, 6, 7]) assert.equal(u.fast(offset, false), -1);
  });

  it("takes THR writes into the ring, signals only when the ring was empty, and keeps their order with the main thread's", () => {
    const u = uart();
    for (const c of Buffer.from("hello")) assert.equal(u.fast(DATA, true, c), 0);
    assert.equal(u.signals(), 1, "one signal for a ring that was empty");
    assert.deepEqual(u.out, []);
    // Any access by the main thread passes on what the vCPU threads wrote first.
    u.reg(LCR, 0x03);
    assert.equal(Buffer.from(u.out).toString(), "hello");
    u.fast(DATA, true, 0x21);
    assert.equal(u.signals(), 2, "the ring was drained: empty again");
    u.serial.flushShared();
    assert.equal(Buffer.from(u.out).toString(), "hello!");
    u.serial.flushShared();
    assert.equal(Buffer.from(u.out).toString(), "hello!", "nothing twice");
  });

  it("leaves THR to the main thread while the divisor latch is open, in loopback, or with the THR-empty interrupt on", () => {
    const u = uart();
    u.reg(LCR, 0x83); // DLAB: DATA is the divisor's low byte
    assert.equal(u.fast(DATA, true, 0x01), -1);
    u.reg(DATA, 0x01);
    u.reg(LCR, 0x03);
    assert.equal(u.fast(DATA, true, 0x41), 0);
    u.reg(MCR, 0x10); // loopback: a written byte comes back as input
    assert.equal(u.fast(DATA, true, 0x42), -1);
    u.reg(DATA, 0x42);
    assert.equal(u.reg(DATA), 0x42, "looped back");
    u.reg(MCR, 0x08);
    u.reg(IER, 0x02); // the THR-empty interrupt: each write must raise it again
    const before = u.interrupts();
    assert.equal(u.fast(DATA, true, 0x43), -1);
    u.reg(DATA, 0x43);
    assert.ok(u.interrupts() > before);
    u.reg(IER, 0x00);
    assert.equal(u.fast(DATA, true, 0x44), 0);
    u.serial.flushShared();
    assert.equal(Buffer.from(u.out).toString("latin1"), "ACD");
  });

  it("sends a full ring's next byte to the main thread, which writes it after the ring's", () => {
    const u = uart();
    for (let i = 0; i < SERIAL_RING_SIZE; i++) assert.equal(u.fast(DATA, true, i & 0x7f), 0);
    assert.equal(u.fast(DATA, true, 0x7e), -1, "full");
    u.reg(DATA, 0x7e);
    assert.equal(u.out.length, SERIAL_RING_SIZE + 1);
    assert.equal(u.out.at(-1), 0x7e);
    assert.equal(u.out[SERIAL_RING_SIZE - 1], (SERIAL_RING_SIZE - 1) & 0x7f);
  });

  it("keeps bytes in order across the ring's end and the counters' wrap at 2^31", () => {
    const u = uart();
    // Head and tail just below the wrap: the next bytes cross it.
    const words = new Int32Array(u.shared.buffer, 0, 5);
    words[2] = 0x7fff_fffe;
    words[3] = 0x7fff_fffe;
    const text = Buffer.from("wrapping around");
    for (const c of text) assert.equal(u.fast(DATA, true, c), 0);
    u.serial.flushShared();
    assert.equal(Buffer.from(u.out).toString(), "wrapping around");
    assert.ok((words[3] ?? 0) < 0, "the tail went past 2^31");
  });

  it("loses no byte to a drain that races a writer (the main thread looks again after moving the head)", () => {
    const shared = new SerialShared();
    shared.allowTransmit(true);
    const vcpu = new SerialShared(shared.buffer);
    const words = new Int32Array(shared.buffer, 0, 5);
    let signalled = false;
    vcpu.answer(DATA, true, 0x31, () => {
      signalled = true;
    });
    assert.ok(signalled);
    // A writer that saw the ring non-empty (head not yet moved) does not signal...
    signalled = false;
    vcpu.answer(DATA, true, 0x32, () => {
      signalled = true;
    });
    assert.equal(signalled, false);
    // ...so one drain takes everything up to the tail it sees last, both bytes here.
    assert.equal(shared.drain()?.toString(), "12");
    assert.equal(words[2], words[3]);
    assert.equal(shared.drain(), null);
  });
});

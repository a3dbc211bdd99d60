/**
 * The part of the UART that the vCPU threads answer by themselves, from shared memory: the
 * line status register (LSR) and, while nothing else depends on it, a write to the transmit
 * register (THR). Linux writes its console a byte at a time, each one a read of LSR (is the
 * transmitter empty?) and a write of THR: two port I/O exits per byte, and handing each to
 * the main thread and back cost two thread switches. A kernel's boot messages (30 KB) took
 * 22 s to reach the console on the simulator's nested KVM, where QEMU, which answers port
 * I/O on its vCPU thread, took 5.5 s.
 *
 * The main thread owns the UART (serial.ts) and publishes here what the fast path needs to
 * know: whether a THR write may be taken here (the divisor latch closed, no loopback, the
 * THR-empty interrupt off: a write then only adds a byte to the output), and how many input
 * bytes wait (LSR's data-ready bit). A vCPU thread appends output bytes to a ring and, when
 * the ring was empty, signals an eventfd; the main thread drains the ring, and drains it too
 * before it handles any UART access itself, so bytes keep their order. A full ring, or any
 * other register, goes to the main thread as before.
 *
 * Layout (Int32 words): [0] THR writes allowed here (0/1), [1] input bytes waiting, [2] the
 * ring's head (the main thread's), [3] its tail (the vCPU threads'), [4] the producers' lock;
 * then RING_SIZE bytes. Head and tail count bytes since the start, modulo 2^31 in practice.
 */
const FAST_THR = 0;
const INPUT = 1;
const HEAD = 2;
const TAIL = 3;
const LOCK = 4;
const WORDS = 5;
export const SERIAL_RING_SIZE = 4096;

/** The 8250's registers and bits this side answers; serial.ts has the others. */
export const DATA = 0;
export const LSR = 5;
export const LSR_DR = 0x01;
export const LSR_THRE = 0x20;
export const LSR_TEMT = 0x40;

export class SerialShared {
  readonly buffer: SharedArrayBuffer;
  private readonly words: Int32Array;
  private readonly ring: Uint8Array;

  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(WORDS * 4 + SERIAL_RING_SIZE);
    this.words = new Int32Array(this.buffer, 0, WORDS);
    this.ring = new Uint8Array(this.buffer, WORDS * 4, SERIAL_RING_SIZE);
  }

  /** Main thread: whether a vCPU thread may take THR writes, after any register change. */
  allowTransmit(allowed: boolean): void {
    Atomics.store(this.words, FAST_THR, allowed ? 1 : 0);
  }

  /** Main thread: how many input bytes wait to be read. */
  setInputWaiting(count: number): void {
    Atomics.store(this.words, INPUT, count);
  }

  /**
   * Main thread: the bytes the vCPU threads wrote since the last drain, in order; null when
   * there are none. Looks again after moving the head: a byte added meanwhile by a thread that
   * saw the ring non-empty (and so did not signal) is taken now, not left for the next one.
   */
  drain(): Buffer | null {
    let out: Buffer | null = null;
    for (;;) {
      const head = Atomics.load(this.words, HEAD);
      const tail = Atomics.load(this.words, TAIL);
      if (tail === head) return out;
      const n = (tail - head) | 0;
      const bytes = Buffer.alloc(n);
      for (let i = 0; i < n; i++) bytes[i] = this.ring[(head + i) & (SERIAL_RING_SIZE - 1)] ?? 0;
      out = out ? Buffer.concat([out, bytes]) : bytes;
      Atomics.store(this.words, HEAD, tail);
    }
  }

  /**
   * vCPU thread: answers an access to UART register `offset`, or returns -1 for the main
   * thread's. A read returns the register's value; a write taken here returns 0 and, through
   * `signal`, asks the main thread to drain when the ring was empty. Allocates nothing: it
   * runs on every console byte.
   */
  answer(offset: number, isWrite: boolean, value: number, signal: () => void): number {
    if (!isWrite)
      return offset === LSR
        ? LSR_THRE | LSR_TEMT | (Atomics.load(this.words, INPUT) > 0 ? LSR_DR : 0)
        : -1;
    if (offset !== DATA || Atomics.load(this.words, FAST_THR) !== 1) return -1;
    // One producer at a time; a guest's vCPUs write the console under its own lock, so this
    // spins only for a guest that races itself.
    while (Atomics.compareExchange(this.words, LOCK, 0, 1) !== 0);
    try {
      const tail = Atomics.load(this.words, TAIL);
      if (((tail - Atomics.load(this.words, HEAD)) | 0) >= SERIAL_RING_SIZE) return -1;
      this.ring[tail & (SERIAL_RING_SIZE - 1)] = value & 0xff;
      Atomics.store(this.words, TAIL, (tail + 1) | 0);
      // Seen empty after the byte went in: the main thread may have drained and looked before
      // it did, so it must be told (see drain()).
      if (Atomics.load(this.words, HEAD) === tail) signal();
      return 0;
    } finally {
      Atomics.store(this.words, LOCK, 0);
    }
  }
}

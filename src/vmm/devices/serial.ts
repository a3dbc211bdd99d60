import type { BusDevice } from "../bus.js";
import { DATA, LSR, LSR_DR, LSR_TEMT, LSR_THRE, type SerialShared } from "./serial-shared.js";

/**
 * A 16550A-compatible UART (8250 family) as the guest console. Output bytes go to onOutput;
 * input is queued by the VMM. Linux needs the THR-empty interrupt for user-space output
 * and the loopback bits of MCR/MSR to pass its probe.
 */

// DATA (RBR read, THR write; DLL with DLAB) and LSR with its bits: serial-shared.ts.
const IER = 1; // DLM with DLAB
const IIR_FCR = 2;
const LCR = 3;
const MCR = 4;
const MSR = 6;
const SCR = 7;

const IER_RDA = 0x01;
const IER_THRE = 0x02;
const IIR_NONE = 0x01;
const IIR_THRE = 0x02;
const IIR_RDA = 0x04;
const IIR_FIFO = 0xc0;
const LCR_DLAB = 0x80;
const MCR_LOOP = 0x10;
const INPUT_LIMIT = 4096;

export class Serial implements BusDevice {
  readonly name = "serial";
  private ier = 0;
  private lcr = 0x03;
  private mcr = 0x08;
  private scr = 0;
  private dll = 0x0c;
  private dlm = 0;
  private thrPending = false;
  private readonly input: number[] = [];
  /** Bytes typed at the console: taken into the FIFO, and dropped because it was full. */
  readonly inputStats = { bytes: 0, dropped: 0 };

  constructor(
    private readonly onOutput: (bytes: Buffer) => void,
    /** Pulses the UART's interrupt line (IRQ 4 for COM1). */
    private readonly interrupt: () => void,
    /** What the vCPU threads answer by themselves (serial-shared.ts), when they do. */
    private readonly shared?: SerialShared,
  ) {
    this.publish();
  }

  /** Passes on what the vCPU threads wrote; the VMM calls it when they signal, and at the end. */
  flushShared(): void {
    const bytes = this.shared?.drain();
    if (bytes) this.onOutput(bytes);
  }

  /** What the vCPU threads need to answer by themselves, after every change of it. */
  private publish(): void {
    if (!this.shared) return;
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    this.shared.allowTransmit(!dlab && !(this.mcr & MCR_LOOP) && !(this.ier & IER_THRE));
    this.shared.setInputWaiting(this.input.length);
  }

  /** Bytes typed at the console; beyond a limit input is dropped, as a real UART would. */
  queueInput(bytes: Buffer): void {
    for (const b of bytes) {
      if (this.input.length < INPUT_LIMIT) {
        this.input.push(b);
        this.inputStats.bytes++;
      } else this.inputStats.dropped++;
    }
    this.publish();
    this.update();
  }

  read(offset: number, data: Buffer): void {
    data.fill(0);
    if (data.length !== 1) return;
    // What the vCPU threads wrote comes first: the guest wrote it before this access.
    this.flushShared();
    data[0] = this.readRegister(offset);
    this.publish();
  }

  write(offset: number, data: Buffer): void {
    // Only byte accesses reach a UART; wider ones are a guest bug, ignored.
    if (data.length !== 1) return;
    this.flushShared();
    this.writeRegister(offset, data[0] ?? 0);
    this.publish();
  }

  private readRegister(offset: number): number {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (offset) {
      case DATA:
        if (dlab) return this.dll;
        return this.popInput();
      case IER:
        return dlab ? this.dlm : this.ier;
      case IIR_FCR: {
        const iir = this.pendingInterrupt();
        // Reading IIR acknowledges a THR-empty interrupt.
        if (iir === IIR_THRE) this.thrPending = false;
        return iir | IIR_FIFO;
      }
      case LCR:
        return this.lcr;
      case MCR:
        return this.mcr;
      case LSR:
        return LSR_THRE | LSR_TEMT | (this.input.length > 0 ? LSR_DR : 0);
      case MSR:
        if (this.mcr & MCR_LOOP) {
          // Loopback: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
          const m = this.mcr;
          return ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4);
        }
        // Carrier detect, data set ready and clear to send: a cable is in.
        return 0xb0;
      case SCR:
        return this.scr;
      default:
        return 0;
    }
  }

  private writeRegister(offset: number, value: number): void {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (offset) {
      case DATA:
        if (dlab) {
          this.dll = value;
        } else if (this.mcr & MCR_LOOP) {
          this.queueInput(Buffer.of(value));
        } else {
          this.onOutput(Buffer.of(value));
          this.thrPending = true;
          this.update();
        }
        break;
      case IER:
        if (dlab) {
          this.dlm = value;
        } else {
          const enablingThre = (value & IER_THRE) !== 0 && (this.ier & IER_THRE) === 0;
          this.ier = value & 0x0f;
          // The transmitter is always empty: enabling its interrupt raises it at once.
          if (enablingThre) this.thrPending = true;
          this.update();
        }
        break;
      case LCR:
        this.lcr = value;
        break;
      case MCR:
        this.mcr = value & 0x1f;
        break;
      case SCR:
        this.scr = value;
        break;
      default:
        // FCR, LSR and MSR writes change nothing we model.
        break;
    }
  }

  private popInput(): number {
    const byte = this.input.shift() ?? 0;
    this.update();
    return byte;
  }

  private pendingInterrupt(): number {
    if (this.ier & IER_RDA && this.input.length > 0) return IIR_RDA;
    if (this.ier & IER_THRE && this.thrPending) return IIR_THRE;
    return IIR_NONE;
  }

  private update(): void {
    if (this.pendingInterrupt() !== IIR_NONE) this.interrupt();
  }
}

import type { BusDevice } from "../bus.js";

/**
 * Just enough of the PC keyboard controller for Linux to probe it quickly and for a guest
 * to reset the machine: writing 0xfe to the command port (0x64) pulses the reset line,
 * which for a microVM means stop (Linux does it with reboot=k; without ACPI it is the way a
 * guest ends itself). Without answers to its probe, Linux waits on timeouts for seconds.
 */
const DATA = 0; // port 0x60
const COMMAND = 4; // port 0x64

const STATUS_OBF = 0x01; // output buffer full: data waits at port 0x60
const STATUS_SYS = 0x04; // system flag: self-test passed

const CMD_READ_CTR = 0x20;
const CMD_WRITE_CTR = 0x60;
const CMD_SELF_TEST = 0xaa;
const CMD_KBD_TEST = 0xab;
const CMD_WRITE_OUTPUT = 0xd1;
const CMD_RESET = 0xfe;
const SELF_TEST_OK = 0x55;
const KBD_ACK = 0xfa;

export class I8042 implements BusDevice {
  readonly name = "i8042";
  private ctr = 0x00;
  private pending: number[] = [];
  /** The command whose data byte comes next through port 0x60. */
  private expecting: number | null = null;

  constructor(private readonly onReset: () => void) {}

  read(offset: number, data: Buffer): void {
    data.fill(0);
    if (data.length !== 1) return;
    if (offset === COMMAND) {
      data[0] = (this.pending.length ? STATUS_OBF : 0) | STATUS_SYS;
    } else if (offset === DATA) {
      data[0] = this.pending.shift() ?? 0;
    }
  }

  write(offset: number, data: Buffer): void {
    if (data.length !== 1) return;
    const value = data[0] ?? 0;
    if (offset === COMMAND) this.command(value);
    else if (offset === DATA) this.data(value);
  }

  private reply(byte: number): void {
    // A guest that never reads cannot make the queue grow.
    if (this.pending.length < 16) this.pending.push(byte);
  }

  private command(cmd: number): void {
    switch (cmd) {
      case CMD_READ_CTR:
        this.reply(this.ctr);
        break;
      case CMD_WRITE_CTR:
      case CMD_WRITE_OUTPUT:
        this.expecting = cmd;
        break;
      case CMD_SELF_TEST:
        this.reply(SELF_TEST_OK);
        break;
      case CMD_KBD_TEST:
        this.reply(0x00);
        break;
      case CMD_RESET:
        this.onReset();
        break;
      default:
        // Enable/disable port and the like: nothing to model.
        break;
    }
  }

  private data(value: number): void {
    const cmd = this.expecting;
    this.expecting = null;
    if (cmd === CMD_WRITE_CTR) {
      this.ctr = value;
    } else if (cmd === CMD_WRITE_OUTPUT) {
      // Bit 0 of the output port is the reset line, active low.
      if ((value & 1) === 0) this.onReset();
    } else {
      // A byte for the keyboard itself: it acknowledges everything.
      this.reply(KBD_ACK);
    }
  }
}

import type { BusDevice } from "../bus.js";

/**
 * Just enough of the PC keyboard controller for a guest to reset the machine: writing
 * 0xfe to the command port (0x64) pulses the reset line, which for a microVM means stop.
 * Linux uses it with reboot=k; without ACPI it is the way a guest ends itself.
 */
const DATA = 0; // port 0x60
const COMMAND = 4; // port 0x64
const CMD_RESET = 0xfe;

export class I8042 implements BusDevice {
  readonly name = "i8042";
  constructor(private readonly onReset: () => void) {}

  read(offset: number, data: Buffer): void {
    data.fill(0);
    // Status 0: output buffer empty, input buffer empty: nothing to read, ready for commands.
    void offset;
  }

  write(offset: number, data: Buffer): void {
    if (offset === COMMAND && data.length === 1 && data[0] === CMD_RESET) this.onReset();
    void DATA;
  }
}

import type { BusDevice } from "../bus.js";

/**
 * A result port for freestanding test guests (native/testguest): a 32-bit write reports a
 * result code before the guest resets, 0 for success. Like QEMU's isa-debug-exit, it is
 * only attached when the VM config asks for it.
 */
export class DebugExit implements BusDevice {
  readonly name = "debug-exit";
  constructor(private readonly onResult: (code: number) => void) {}

  read(_offset: number, data: Buffer): void {
    data.fill(0xff);
  }

  write(offset: number, data: Buffer): void {
    if (offset === 0 && data.length === 4) this.onResult(data.readUInt32LE(0));
  }
}

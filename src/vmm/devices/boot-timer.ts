import type { BusDevice } from "../bus.js";

/**
 * A port the guest writes once its init starts (the value 123, as Firecracker's boot timer
 * does), so that benchmarks measure boot to user space from the VMM side.
 */
export const BOOT_TIMER_MAGIC = 123;

export class BootTimer implements BusDevice {
  readonly name = "boot-timer";
  constructor(private readonly onBoot: () => void) {}

  read(_offset: number, data: Buffer): void {
    data.fill(0);
  }

  write(offset: number, data: Buffer): void {
    if (offset === 0 && data.length === 1 && data[0] === BOOT_TIMER_MAGIC) this.onBoot();
  }
}

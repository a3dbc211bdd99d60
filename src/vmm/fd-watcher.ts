import {
  close,
  EFD_NONBLOCK,
  eventfd,
  POLLIN,
  pollAsync,
  readRaw,
  writeRaw,
} from "../kvm/index.js";

/**
 * Watches file descriptors (a tap, eventfds) for input without blocking the event loop:
 * poll(2) runs on a koffi worker thread, and callbacks run on the main thread, where all
 * device state lives. Level-triggered: a callback that cannot consume its input must
 * unwatch the fd until it can, or it is called again at once.
 */
export class FdWatcher {
  private readonly watches = new Map<number, () => void>();
  private readonly wake: number;
  private running = false;
  private closed = false;
  private readonly one = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);
  private readonly scratch = Buffer.alloc(8);

  constructor() {
    this.wake = eventfd(EFD_NONBLOCK, "eventfd for the fd watcher");
  }

  watch(fd: number, onReadable: () => void): void {
    this.watches.set(fd, onReadable);
    this.poke();
  }

  unwatch(fd: number): void {
    if (this.watches.delete(fd)) this.poke();
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.loop();
  }

  /** Ends the loop; the eventfd is closed once the pending poll has returned. */
  stop(): void {
    if (!this.running) {
      if (!this.closed) {
        this.closed = true;
        close(this.wake);
      }
      return;
    }
    this.running = false;
    writeRaw(this.wake, this.one);
  }

  private poke(): void {
    if (this.running) writeRaw(this.wake, this.one);
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const fds = [this.wake, ...this.watches.keys()];
      const set = Buffer.alloc(8 * fds.length);
      fds.forEach((fd, i) => {
        set.writeInt32LE(fd, 8 * i);
        set.writeInt16LE(POLLIN, 8 * i + 4);
      });
      const n = await pollAsync(set, fds.length, -1);
      if (!this.running) break;
      if (n < 0) continue; // EINTR
      for (let i = 0; i < fds.length; i++) {
        const revents = set.readInt16LE(8 * i + 6);
        if (revents === 0) continue;
        const fd = fds[i] ?? -1;
        if (fd === this.wake) {
          readRaw(this.wake, this.scratch);
          continue;
        }
        this.watches.get(fd)?.();
      }
    }
    this.closed = true;
    close(this.wake);
  }
}

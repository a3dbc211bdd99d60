import {
  close,
  EFD_NONBLOCK,
  eventfd,
  pollAsync,
  polled,
  pollInputSet,
  readRaw,
  signalEventfd,
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
    signalEventfd(this.wake);
  }

  private poke(): void {
    if (this.running) signalEventfd(this.wake);
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const fds = [this.wake, ...this.watches.keys()];
      const set = pollInputSet(fds);
      const n = await pollAsync(set, fds.length, -1);
      if (!this.running) break;
      if (n < 0) continue; // EINTR
      for (let i = 0; i < fds.length; i++) {
        if (!polled(set, i)) continue;
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

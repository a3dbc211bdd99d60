/** Time and timers, injectable so that the protocol logic can be driven by tests. */

export interface Timer {
  cancel(): void;
}

export interface Clock {
  now(): number;
  /** Calls fn after ms; the timer does not keep the process alive. */
  after(ms: number, fn: () => void): Timer;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, fn) {
    const t = setTimeout(fn, Math.max(0, ms));
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

/** A random delay in [min, max) ms. */
export function jitter(random: () => number, min: number, max: number): number {
  return min + random() * (max - min);
}

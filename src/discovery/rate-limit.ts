/**
 * RFC 6762 6: a record is multicast on an interface at most once per second, except when
 * defending a name against a probe, which may happen every 250 ms. Pure: the caller passes
 * the time.
 */
import { type AnyRecord, recordKey } from "./records.js";

export interface RateLimitOptions {
  intervalMs?: number;
  probeDefenceIntervalMs?: number;
}

export class RateLimiter {
  private readonly last = new Map<string, number>();
  private readonly intervalMs: number;
  private readonly probeIntervalMs: number;

  constructor(options: RateLimitOptions = {}) {
    this.intervalMs = options.intervalMs ?? 1000;
    this.probeIntervalMs = options.probeDefenceIntervalMs ?? 250;
  }

  /** Whether `record` may be multicast on `iface` at `now`. */
  allows(iface: string, record: AnyRecord, now: number, probeDefence = false): boolean {
    const last = this.last.get(`${iface}|${recordKey(record)}`);
    if (last === undefined) return true;
    return now - last >= (probeDefence ? this.probeIntervalMs : this.intervalMs);
  }

  /** Splits records into those that may go now and those sent too recently. */
  split<R extends AnyRecord>(
    iface: string,
    records: readonly R[],
    now: number,
    probeDefence = false,
  ): { allowed: R[]; limited: R[] } {
    const allowed: R[] = [];
    const limited: R[] = [];
    for (const r of records) (this.allows(iface, r, now, probeDefence) ? allowed : limited).push(r);
    return { allowed, limited };
  }

  /** Notes that records were multicast on `iface` at `now`. */
  sent(iface: string, records: readonly AnyRecord[], now: number): void {
    for (const r of records) this.last.set(`${iface}|${recordKey(r)}`, now);
    if (this.last.size > 4096) this.prune(now);
  }

  dropInterface(iface: string): void {
    for (const key of this.last.keys()) if (key.startsWith(`${iface}|`)) this.last.delete(key);
  }

  private prune(now: number) {
    for (const [key, t] of this.last) if (now - t >= this.intervalMs) this.last.delete(key);
  }
}

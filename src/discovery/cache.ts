/**
 * The record cache of the browser (RFC 6762 5.2, 10): records per interface with their
 * expiry, goodbyes kept one more second (10.1), cache-flush (10.2), refresh points at 80, 85,
 * 90 and 95 % of the TTL (plus up to 2 % jitter), and the known answers a query carries
 * (7.1). Pure: the caller passes the time.
 */
import { type MdnsRecord, type RecordType, recordKey, rrsetKey } from "./records.js";

export interface CacheEntry<R extends MdnsRecord = MdnsRecord> {
  readonly iface: string;
  record: R;
  /** When the record was last received (ms). */
  receivedAt: number;
  expiresAt: number;
  /** Received with TTL 0: kept for the grace period, no longer used. */
  goodbye: boolean;
  /** Superseded by a cache-flush record: kept for the grace period, no longer used. */
  flushed: boolean;
  /** Refresh points still ahead (ms), earliest first. */
  refreshAt: number[];
}

export interface CacheOptions {
  /** Most entries kept; when full, the entry closest to expiry is dropped. */
  maxEntries?: number;
  random?: () => number;
  /** How long goodbyes and flushed records are kept (RFC 6762: one second). */
  graceMs?: number;
}

export type AddResult = "new" | "refreshed" | "goodbye" | "unknown-goodbye";

export const REFRESH_POINTS = [0.8, 0.85, 0.9, 0.95] as const;
const JITTER = 0.02;

export class RecordCache {
  private readonly entries = new Map<string, CacheEntry>();
  /** rrset key (name|type) -> entry keys. */
  private readonly byRrset = new Map<string, Set<string>>();
  private readonly maxEntries: number;
  private readonly random: () => number;
  private readonly graceMs: number;

  constructor(options: CacheOptions = {}) {
    this.maxEntries = options.maxEntries ?? 4096;
    this.random = options.random ?? Math.random;
    this.graceMs = options.graceMs ?? 1000;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Adds or refreshes a received record (a TTL of 0 is a goodbye). */
  add(iface: string, record: MdnsRecord, now: number): AddResult {
    const key = `${iface}|${recordKey(record)}`;
    const existing = this.entries.get(key);
    if (record.ttl === 0) {
      if (!existing) return "unknown-goodbye";
      existing.goodbye = true;
      existing.expiresAt = Math.min(existing.expiresAt, now + this.graceMs);
      existing.refreshAt = [];
      return "goodbye";
    }
    const entry: CacheEntry = existing ?? {
      iface,
      record,
      receivedAt: now,
      expiresAt: now,
      goodbye: false,
      flushed: false,
      refreshAt: [],
    };
    entry.record = record;
    entry.receivedAt = now;
    entry.expiresAt = now + record.ttl * 1000;
    entry.goodbye = false;
    entry.flushed = false;
    entry.refreshAt = REFRESH_POINTS.map(
      (p) => now + record.ttl * 1000 * (p + this.random() * JITTER),
    );
    if (existing) return "refreshed";
    if (this.entries.size >= this.maxEntries) this.evictOne();
    this.entries.set(key, entry);
    const rk = rrsetKey(record.name, record.type);
    let set = this.byRrset.get(rk);
    if (!set) {
      set = new Set();
      this.byRrset.set(rk, set);
    }
    set.add(key);
    return "new";
  }

  /**
   * RFC 6762 10.2: a cache-flush record in a response supersedes the other records of its
   * name and type on that interface that were received more than a second ago; they expire
   * after the grace period. `packet` is every record of the response. Returns how many
   * entries were marked.
   */
  flushOthers(iface: string, packet: readonly MdnsRecord[], now: number): number {
    const keep = new Set(packet.map((r) => `${iface}|${recordKey(r)}`));
    const rrsets = new Set(
      packet.filter((r) => r.flush && r.ttl > 0).map((r) => rrsetKey(r.name, r.type)),
    );
    let marked = 0;
    for (const rk of rrsets) {
      for (const key of this.byRrset.get(rk) ?? []) {
        const e = this.entries.get(key);
        if (!e || e.iface !== iface || keep.has(key) || e.flushed) continue;
        if (now - e.receivedAt <= this.graceMs) continue;
        e.flushed = true;
        e.expiresAt = Math.min(e.expiresAt, now + this.graceMs);
        e.refreshAt = [];
        marked++;
      }
    }
    return marked;
  }

  /** Live entries (not goodbyes, not flushed) of a name and type, on one or all interfaces. */
  find<T extends RecordType>(
    name: string,
    type: T,
    iface?: string,
  ): CacheEntry<Extract<MdnsRecord, { type: T }>>[] {
    const out: CacheEntry<Extract<MdnsRecord, { type: T }>>[] = [];
    for (const key of this.byRrset.get(rrsetKey(name, type)) ?? []) {
      const e = this.entries.get(key);
      if (!e || e.goodbye || e.flushed) continue;
      if (iface !== undefined && e.iface !== iface) continue;
      out.push(e as CacheEntry<Extract<MdnsRecord, { type: T }>>);
    }
    return out;
  }

  /** Every entry, goodbyes and flushed ones included. */
  all(): CacheEntry[] {
    return [...this.entries.values()];
  }

  /**
   * Removes the entries that expired by `now` and returns them, with the entries that passed
   * a refresh point since the last call (each once per call).
   */
  tick(now: number): { expired: CacheEntry[]; due: CacheEntry[] } {
    const expired: CacheEntry[] = [];
    const due: CacheEntry[] = [];
    for (const [key, e] of this.entries) {
      if (e.expiresAt <= now) {
        expired.push(e);
        this.delete(key, e);
        continue;
      }
      let passed = false;
      while ((e.refreshAt[0] ?? Number.POSITIVE_INFINITY) <= now) {
        e.refreshAt.shift();
        passed = true;
      }
      if (passed) due.push(e);
    }
    return { expired, due };
  }

  /** The next expiry or refresh point, for the caller's timer. */
  nextDeadline(): number | undefined {
    let next: number | undefined;
    for (const e of this.entries.values()) {
      const t = Math.min(e.expiresAt, e.refreshAt[0] ?? Number.POSITIVE_INFINITY);
      if (next === undefined || t < next) next = t;
    }
    return next;
  }

  /**
   * Known answers for a question on an interface (RFC 6762 7.1): live records with more than
   * half their TTL left, each with the TTL it has left.
   */
  knownAnswers(iface: string, name: string, type: RecordType, now: number): MdnsRecord[] {
    const out: MdnsRecord[] = [];
    for (const e of this.find(name, type, iface)) {
      const remaining = (e.expiresAt - now) / 1000;
      if (remaining > e.record.ttl / 2) out.push({ ...e.record, ttl: Math.floor(remaining) });
    }
    return out;
  }

  /** Forgets an interface's records (it went away). */
  dropInterface(iface: string): CacheEntry[] {
    const dropped: CacheEntry[] = [];
    for (const [key, e] of this.entries) {
      if (e.iface === iface) {
        dropped.push(e);
        this.delete(key, e);
      }
    }
    return dropped;
  }

  private delete(key: string, e: CacheEntry) {
    this.entries.delete(key);
    const rk = rrsetKey(e.record.name, e.record.type);
    const set = this.byRrset.get(rk);
    set?.delete(key);
    if (set && set.size === 0) this.byRrset.delete(rk);
  }

  private evictOne() {
    let victim: [string, CacheEntry] | undefined;
    for (const kv of this.entries) {
      if (!victim || kv[1].expiresAt < victim[1].expiresAt) victim = kv;
    }
    if (victim) this.delete(victim[0], victim[1]);
  }
}

/**
 * The browser: asks for `_flatgrid._tcp.local` (at start after 20-120 ms, then 1 s, 2 s, 4 s...
 * up to an hour, RFC 6762 5.2), caches what answers, refreshes what it uses at 80-95 % of
 * its TTL, resolves instances whose SRV, TXT or addresses are missing, and turns the cache
 * into peers: peer-up, peer-update, peer-down (goodbye or expiry).
 *
 * A peer is what the network says, nothing more: the grid checks it over TLS before
 * trusting it.
 */
import { EventEmitter } from "node:events";
import { type Advert, decodeTxt } from "./advert.js";
import type { RecordCache } from "./cache.js";
import { type Clock, jitter, type Timer } from "./clock.js";
import type { NetInterface } from "./interfaces.js";
import { hostLabelOf, isUnderService, nodeIdOfInstance, SERVICE_TYPE, sameName } from "./names.js";
import { type OutQuestion, queryPackets } from "./packets.js";
import { type Packet, usable } from "./parse.js";
import type { MdnsRecord } from "./records.js";
import type { LogFn, PacketTransport } from "./transport.js";

export interface PeerAddress {
  /** IPv4 or IPv6 address; IPv6 link-local ones carry their zone, e.g. fe80::1%eth0. */
  address: string;
  family: 4 | 6;
  /** Our interface the address was announced on. */
  interface: string;
}

export interface Peer {
  nodeId: string;
  /** `<node id>._flatgrid._tcp.local` */
  instance: string;
  /** The SRV target, e.g. `node-3.local`. */
  host: string;
  advert: Advert;
  addresses: PeerAddress[];
  /** When any of the peer's records was last received (ms since the epoch). */
  lastSeen: number;
  /**
   * When the peer goes down unless its records are received again: the first expiry among
   * its PTR, SRV and TXT and the last among its addresses (ms since the epoch).
   */
  expiresAt: number;
}

export type PeerDownReason = "goodbye" | "expired";

export interface BrowserEvents {
  "peer-up": [Peer];
  "peer-update": [Peer, Peer];
  "peer-down": [Peer, PeerDownReason];
}

export interface BrowserDeps {
  transport: PacketTransport;
  clock: Clock;
  random: () => number;
  log: LogFn;
  cache: RecordCache;
}

export interface BrowserOptions {
  /** Our own instance name: never reported as a peer. */
  self?: string;
  /** Cap of the browse query interval, ms (RFC 6762 5.2: one hour). */
  maxQueryIntervalMs?: number;
  /** Cap of the interval between resolve queries for one incomplete peer, ms. */
  maxResolveIntervalMs?: number;
}

/** The n-th interval (n = 0, 1, ...) of the continuous browse query: 1 s doubling, capped. */
export function browseInterval(n: number, maxMs = 3_600_000): number {
  return Math.min(1000 * 2 ** Math.min(n, 32), maxMs);
}

interface Resolve {
  next: number;
  intervalMs: number;
}

const FIRST_QUERY_DELAY: [number, number] = [20, 120];

export class Browser extends EventEmitter<BrowserEvents> {
  private current = new Map<string, Peer>();
  private timer: Timer | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private nextBrowse = Number.POSITIVE_INFINITY;
  private browseCount = 0;
  private readonly resolves = new Map<string, Resolve>();
  private running = false;

  constructor(
    private readonly deps: BrowserDeps,
    private readonly options: BrowserOptions = {},
  ) {
    super();
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.restartBrowsing();
  }

  stop(): void {
    this.running = false;
    this.timer?.cancel();
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
  }

  peers(): Peer[] {
    return [...this.current.values()].map(clonePeer);
  }

  /** Queries again from the start of the backoff (new interface, or asked to). */
  restartBrowsing(): void {
    if (!this.running) return;
    this.browseCount = 0;
    this.nextBrowse = this.deps.clock.now() + jitter(this.deps.random, ...FIRST_QUERY_DELAY);
    this.schedule();
  }

  interfacesChanged(added: readonly NetInterface[], removed: readonly NetInterface[]): void {
    for (const r of removed) this.deps.cache.dropInterface(r.name);
    if (removed.length > 0) this.recompute(new Set());
    if (added.length > 0) this.restartBrowsing();
    this.schedule();
  }

  handleResponse(iface: NetInterface, packet: Packet): void {
    if (!this.running) return;
    const now = this.deps.clock.now();
    const records = this.relevant(usable([...packet.answers, ...packet.additionals]));
    if (records.length === 0) return;
    const cache = this.deps.cache;
    cache.flushOthers(iface.name, records, now);
    const goodbyes = new Set<string>();
    for (const r of records) {
      if (cache.add(iface.name, r, now) === "goodbye") {
        for (const instance of this.instancesOf(r)) goodbyes.add(instance);
      }
    }
    this.recompute(goodbyes);
    this.schedule();
  }

  /** Records the browser keeps: our service's, and addresses of hosts its SRVs point to. */
  private relevant(records: MdnsRecord[]): MdnsRecord[] {
    const self = this.options.self;
    const notSelf = (instance: string) => !self || !sameName(instance, self);
    const targets = new Set<string>();
    for (const r of records) {
      if (r.type === "SRV" && notSelf(r.name)) targets.add(r.data.target.toLowerCase());
    }
    const isTarget = (name: string) => {
      const lower = name.toLowerCase();
      if (targets.has(lower)) return true;
      return this.deps.cache
        .all()
        .some((e) => e.record.type === "SRV" && e.record.data.target.toLowerCase() === lower);
    };
    return records.filter((r) => {
      switch (r.type) {
        case "PTR":
          return sameName(r.name, SERVICE_TYPE) && notSelf(r.data);
        case "SRV":
        case "TXT":
          return nodeIdOfInstance(r.name) !== undefined && notSelf(r.name);
        case "A":
        case "AAAA":
          return hostLabelOf(r.name) !== undefined && isTarget(r.name);
      }
      return false;
    });
  }

  /** Instances a record belongs to (for goodbyes of address records: via their SRV). */
  private instancesOf(r: MdnsRecord): string[] {
    if (r.type === "PTR") return [r.data.toLowerCase()];
    if (isUnderService(r.name)) return [r.name.toLowerCase()];
    return this.deps.cache
      .all()
      .filter((e) => e.record.type === "SRV" && sameName(e.record.data.target, r.name))
      .map((e) => e.record.name.toLowerCase());
  }

  private onTimer() {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    if (!this.running) return;
    const now = this.deps.clock.now();
    const { expired, due } = this.deps.cache.tick(now);
    const goodbyes = new Set<string>();
    for (const e of expired) {
      if (e.goodbye) for (const i of this.instancesOf(e.record)) goodbyes.add(i);
    }
    if (expired.length > 0) this.recompute(goodbyes);
    if (due.length > 0)
      this.refresh(
        due.map((e) => ({ iface: e.iface, record: e.record })),
        now,
      );
    if (now >= this.nextBrowse) {
      this.browse(now);
      this.nextBrowse = now + browseInterval(this.browseCount++, this.options.maxQueryIntervalMs);
    }
    this.resolveIncomplete(now);
    this.schedule();
  }

  private schedule() {
    if (!this.running) return;
    let at = Math.min(this.nextBrowse, this.deps.cache.nextDeadline() ?? Number.POSITIVE_INFINITY);
    for (const r of this.resolves.values()) at = Math.min(at, r.next);
    if (at === Number.POSITIVE_INFINITY || at >= this.timerAt) return;
    this.timer?.cancel();
    this.timerAt = at;
    this.timer = this.deps.clock.after(at - this.deps.clock.now(), () => this.onTimer());
  }

  private browse(now: number) {
    const q: OutQuestion[] = [{ name: SERVICE_TYPE, type: "PTR" }];
    for (const iface of this.deps.transport.interfaces()) {
      this.query(iface.name, q, now);
    }
  }

  private query(iface: string, questions: OutQuestion[], now: number) {
    const known = questions.flatMap((q) =>
      q.type === "ANY" ? [] : this.deps.cache.knownAnswers(iface, q.name, q.type, now),
    );
    for (const p of queryPackets(questions, known)) void this.deps.transport.send(iface, p);
  }

  /** Refresh queries for the records still in use that passed a refresh point. */
  private refresh(due: { iface: string; record: MdnsRecord }[], now: number) {
    const wanted = this.inUse();
    const perIface = new Map<string, Map<string, OutQuestion>>();
    for (const { iface, record } of due) {
      if (!wanted.has(`${record.name.toLowerCase()}|${record.type}`)) continue;
      let qs = perIface.get(iface);
      if (!qs) {
        qs = new Map();
        perIface.set(iface, qs);
      }
      qs.set(`${record.name.toLowerCase()}|${record.type}`, {
        name: record.name,
        type: record.type,
      });
    }
    for (const [iface, qs] of perIface) this.query(iface, [...qs.values()], now);
  }

  /** name|type of every record that backs a peer or a PTR we follow. */
  private inUse(): Set<string> {
    const out = new Set<string>([`${SERVICE_TYPE}|PTR`]);
    for (const e of this.deps.cache.find(SERVICE_TYPE, "PTR")) {
      const instance = e.record.data.toLowerCase();
      out.add(`${instance}|SRV`);
      out.add(`${instance}|TXT`);
      for (const srv of this.deps.cache.find(instance, "SRV")) {
        const target = srv.record.data.target.toLowerCase();
        out.add(`${target}|A`);
        out.add(`${target}|AAAA`);
      }
    }
    return out;
  }

  /** Resolve queries, with backoff, for instances missing SRV/TXT or addresses. */
  private resolveIncomplete(now: number) {
    const needed = new Map<string, OutQuestion[]>();
    for (const e of this.deps.cache.find(SERVICE_TYPE, "PTR")) {
      const instance = e.record.data;
      const srv = newest(this.deps.cache.find(instance, "SRV"))?.record;
      const txt = newest(this.deps.cache.find(instance, "TXT"));
      if (!srv || !txt) {
        needed.set(`${instance.toLowerCase()}|srv`, [
          { name: instance, type: "SRV" },
          { name: instance, type: "TXT" },
        ]);
        continue;
      }
      const target = srv.data.target;
      if (
        this.deps.cache.find(target, "A").length + this.deps.cache.find(target, "AAAA").length ===
        0
      ) {
        needed.set(`${target.toLowerCase()}|addr`, [
          { name: target, type: "A" },
          { name: target, type: "AAAA" },
        ]);
      }
    }
    for (const key of this.resolves.keys()) if (!needed.has(key)) this.resolves.delete(key);
    const cap = this.options.maxResolveIntervalMs ?? 60_000;
    for (const [key, questions] of needed) {
      let r = this.resolves.get(key);
      if (!r) {
        // The rest of an announcement often follows the PTR within a few ms: wait a little.
        r = { next: now + jitter(this.deps.random, ...FIRST_QUERY_DELAY), intervalMs: 1000 };
        this.resolves.set(key, r);
        continue;
      }
      if (now < r.next) continue;
      for (const iface of this.deps.transport.interfaces()) this.query(iface.name, questions, now);
      r.next = now + r.intervalMs;
      r.intervalMs = Math.min(r.intervalMs * 2, cap);
    }
  }

  /** Rebuilds the peers from the cache and reports the differences. */
  private recompute(goodbyes: Set<string>) {
    const next = new Map<string, Peer>();
    for (const e of this.deps.cache.find(SERVICE_TYPE, "PTR")) {
      const instance = e.record.data.toLowerCase();
      if (next.has(instance)) continue;
      const peer = this.assemble(instance);
      if (peer) next.set(instance, peer);
    }
    const before = this.current;
    this.current = next;
    for (const [instance, old] of before) {
      const now = next.get(instance);
      if (!now)
        this.emit("peer-down", clonePeer(old), goodbyes.has(instance) ? "goodbye" : "expired");
      else if (peerKey(now) !== peerKey(old))
        this.emit("peer-update", clonePeer(now), clonePeer(old));
    }
    for (const [instance, peer] of next) {
      if (!before.has(instance)) this.emit("peer-up", clonePeer(peer));
    }
    if (this.running) this.resolveIncomplete(this.deps.clock.now());
  }

  private assemble(instance: string): Peer | undefined {
    const cache = this.deps.cache;
    const nodeId = nodeIdOfInstance(instance);
    const ptr = newest(
      cache.find(SERVICE_TYPE, "PTR").filter((e) => sameName(e.record.data, instance)),
    );
    const srvEntry = newest(cache.find(instance, "SRV"));
    const txtEntry = newest(cache.find(instance, "TXT"));
    if (!nodeId || !ptr || !srvEntry || !txtEntry) return undefined;
    const srv = srvEntry.record;
    let advert: Advert;
    try {
      advert = decodeTxt(txtEntry.record.data);
    } catch {
      return undefined;
    }
    if (advert.nodeId !== nodeId || advert.apiPort !== srv.data.port) return undefined;
    const target = srv.data.target;
    const addressEntries = [...cache.find(target, "A"), ...cache.find(target, "AAAA")];
    if (addressEntries.length === 0) return undefined;
    const addresses = addressEntries
      .map((e): PeerAddress => {
        const v6 = e.record.type === "AAAA";
        const a = e.record.data;
        const zoned = v6 && /^fe[89ab]/i.test(a) ? `${a}%${e.iface}` : a;
        return { address: zoned, family: v6 ? 6 : 4, interface: e.iface };
      })
      .sort(compareAddresses);
    const lastSeen = Math.max(
      ptr.receivedAt,
      srvEntry.receivedAt,
      txtEntry.receivedAt,
      ...addressEntries.map((e) => e.receivedAt),
    );
    const expiresAt = Math.min(
      ptr.expiresAt,
      srvEntry.expiresAt,
      txtEntry.expiresAt,
      Math.max(...addressEntries.map((e) => e.expiresAt)),
    );
    return {
      nodeId,
      instance: ptr.record.data,
      host: target,
      advert,
      addresses,
      lastSeen,
      expiresAt,
    };
  }
}

function newest<E extends { receivedAt: number }>(list: E[]): E | undefined {
  let best: E | undefined;
  for (const e of list) if (!best || e.receivedAt > best.receivedAt) best = e;
  return best;
}

function compareAddresses(a: PeerAddress, b: PeerAddress): number {
  if (a.family !== b.family) return a.family - b.family;
  if (a.interface !== b.interface) return a.interface < b.interface ? -1 : 1;
  return a.address < b.address ? -1 : a.address > b.address ? 1 : 0;
}

function peerKey(p: Peer): string {
  return JSON.stringify([p.host, p.advert, p.addresses]);
}

function clonePeer(p: Peer): Peer {
  return { ...p, advert: { ...p.advert }, addresses: p.addresses.map((a) => ({ ...a })) };
}

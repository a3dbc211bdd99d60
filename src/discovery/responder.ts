/**
 * The responder: owns our records, probes the host name, announces twice, answers queries
 * (known-answer suppression, per-interface rate limits, 20-120 ms delay for shared records,
 * legacy unicast), defends the name, notices conflicts after announcing, re-announces what
 * changes, and says goodbye on a clean stop.
 */
import { EventEmitter } from "node:events";
import { type Advert, checkAdvert } from "./advert.js";
import { selectAnswers } from "./answers.js";
import { type Clock, jitter, type Timer } from "./clock.js";
import type { NetInterface } from "./interfaces.js";
import { hostName, instanceName, sameName } from "./names.js";
import { type OutQuestion, responsePackets } from "./packets.js";
import type { Packet } from "./parse.js";
import { Prober, type ProbeTimings } from "./probe.js";
import { RateLimiter } from "./rate-limit.js";
import {
  type AddressRecord,
  hostRecords,
  LEGACY_TTL,
  type MdnsRecord,
  type OwnRecords,
  recordKey,
  serviceRecords,
  withTtl,
} from "./records.js";
import { type Destination, type LogFn, MDNS_PORT, type PacketTransport } from "./transport.js";

export interface ResponderCounters {
  queriesAnswered: number;
  knownAnswerSuppressed: number;
  rateLimited: number;
  conflicts: number;
}

export interface ResponderDeps {
  transport: PacketTransport;
  clock: Clock;
  random: () => number;
  log: LogFn;
  counters: ResponderCounters;
}

export interface ResponderOptions {
  advert: Advert;
  /** Host label to probe for (without .local). */
  hostname: string;
  /** Seconds for PTR, SRV, TXT. */
  ttl: number;
  /** Seconds for A, AAAA. */
  hostTtl: number;
  /** The mDNS port; queries from other ports are legacy unicast queries. Default 5353. */
  port?: number;
  announceCount?: number;
  announceIntervalMs?: number;
  probe?: Partial<ProbeTimings>;
}

export type ResponderState = "idle" | "probing" | "announced" | "stopped";

export interface ResponderEvents {
  announced: [string];
  conflict: [{ from: string; to: string }];
}

/** Wait for more known answers after a truncated query (RFC 6762 7.2: 400-500 ms). */
const TRUNCATED_WAIT: [number, number] = [400, 500];
/** Delay of answers holding shared records (RFC 6762 6: 20-120 ms). */
const SHARED_DELAY: [number, number] = [20, 120];

interface PendingAnswer {
  records: Map<string, MdnsRecord>;
  extras: Map<string, MdnsRecord>;
  timer: Timer;
}

interface TruncatedQuery {
  iface: NetInterface;
  packet: Packet;
  timer: Timer;
}

export class Responder extends EventEmitter<ResponderEvents> {
  private advertValue: Advert;
  private service: OwnRecords;
  private readonly prober: Prober;
  private readonly limiter = new RateLimiter();
  private readonly announceTimers = new Set<Timer>();
  /** The second announcement of the latest advert update. */
  private updateTimer: Timer | undefined;
  /** PTR, SRV and TXT as last announced: what a goodbye must name while re-probing. */
  private lastAnnounced: OwnRecords | undefined;
  private readonly pending = new Map<string, PendingAnswer>();
  private readonly truncated = new Map<string, TruncatedQuery>();
  private defendTimer: Timer | undefined;
  state: ResponderState = "idle";

  constructor(
    private readonly deps: ResponderDeps,
    private readonly options: ResponderOptions,
  ) {
    super();
    this.advertValue = checkAdvert(options.advert);
    this.prober = new Prober(deps, {
      base: options.hostname,
      timings: options.probe,
      hostRecords: (iface, label) => this.hostRecordsFor(iface, label),
      onWin: (label) => this.won(label),
      onConflict: (from, to) => {
        this.deps.counters.conflicts++;
        this.service = serviceRecords(this.advertValue, to, this.options.ttl);
        this.emit("conflict", { from, to });
      },
    });
    this.service = serviceRecords(this.advertValue, this.prober.label, options.ttl);
  }

  get hostname(): string {
    return this.prober.label;
  }

  get advert(): Advert {
    return { ...this.advertValue };
  }

  start(): void {
    if (this.state !== "idle") return;
    this.state = "probing";
    this.prober.start();
  }

  /** Our address records for a label on an interface. */
  hostRecordsFor(iface: NetInterface, label = this.hostname): AddressRecord[] {
    return hostRecords(label, iface.addresses, this.options.hostTtl);
  }

  /** Every record we answer for on an interface. */
  recordsFor(iface: NetInterface): MdnsRecord[] {
    const s = this.service;
    return [s.ptr, s.srv, s.txt, s.enumeration, ...this.hostRecordsFor(iface)];
  }

  /** The records announced (and said goodbye to) on an interface. */
  private announcedRecords(iface: NetInterface): MdnsRecord[] {
    const s = this.service;
    return [s.ptr, s.srv, s.txt, ...this.hostRecordsFor(iface)];
  }

  private allOwnAddressRecords(): AddressRecord[] {
    return this.deps.transport.interfaces().flatMap((i) => this.hostRecordsFor(i));
  }

  /**
   * Changes the advert; once announced, the TXT (and the SRV when the port changed) are
   * announced again, twice, 1 s apart. A newer update replaces the rest of an older one.
   */
  update(advert: Advert): void {
    const next = checkAdvert(advert);
    if (next.nodeId !== this.advertValue.nodeId) throw new Error("the node id cannot change");
    const before = this.service;
    this.advertValue = next;
    this.service = serviceRecords(next, this.hostname, this.options.ttl);
    if (this.state !== "announced") return;
    const srvChanged = recordKey(before.srv) !== recordKey(this.service.srv);
    if (!srvChanged && recordKey(before.txt) === recordKey(this.service.txt)) return;
    this.lastAnnounced = this.service;
    this.updateTimer?.cancel();
    const send = (left: number) => {
      this.updateTimer = undefined;
      if (this.state !== "announced") return;
      const current = srvChanged ? [this.service.srv, this.service.txt] : [this.service.txt];
      this.sendAll(() => current);
      if (left > 1) {
        const interval = this.options.announceIntervalMs ?? 1000;
        this.updateTimer = this.deps.clock.after(interval, () => send(left - 1));
      }
    };
    send(this.options.announceCount ?? 2);
  }

  /** Interfaces came or changed: probe again and announce there (RFC 6762 8.3, 13). */
  interfacesChanged(added: readonly NetInterface[], removed: readonly NetInterface[]): void {
    for (const r of removed) {
      this.limiter.dropInterface(r.name);
      this.pending.get(r.name)?.timer.cancel();
      this.pending.delete(r.name);
    }
    if (added.length === 0 || this.state === "idle" || this.state === "stopped") return;
    this.cancelAnnouncements();
    this.state = "probing";
    this.prober.start();
  }

  handleQuery(iface: NetInterface, packet: Packet, from: Destination): void {
    if (this.state === "probing") {
      this.prober.handleQuery(iface, packet);
      return;
    }
    if (this.state !== "announced") return;
    const legacy = from.port !== (this.options.port ?? MDNS_PORT);
    const source = `${iface.name}|${from.address}|${from.port}`;
    const held = this.truncated.get(source);
    if (held && !legacy) {
      // RFC 6762 7.2: the known answers continue in this packet.
      held.packet.answers.push(...packet.answers);
      held.packet.questions.push(...packet.questions);
      if (packet.truncated) return;
      held.timer.cancel();
      this.truncated.delete(source);
      this.answer(iface, held.packet, from, false);
      return;
    }
    if (packet.truncated && !legacy && packet.questions.length > 0) {
      const timer = this.deps.clock.after(jitter(this.deps.random, ...TRUNCATED_WAIT), () => {
        const t = this.truncated.get(source);
        this.truncated.delete(source);
        if (t && this.state === "announced") this.answer(t.iface, t.packet, from, false);
      });
      this.truncated.set(source, {
        iface,
        packet: { ...packet, answers: [...packet.answers] },
        timer,
      });
      return;
    }
    this.answer(iface, packet, from, legacy);
  }

  private answer(iface: NetInterface, packet: Packet, from: Destination, legacy: boolean) {
    const ours = this.recordsFor(iface);
    const selected = selectAnswers(packet.questions, ours, packet.answers);
    this.deps.counters.knownAnswerSuppressed += selected.suppressed;
    if (selected.answers.length === 0) return;
    this.deps.counters.queriesAnswered++;
    if (legacy) {
      // RFC 6762 6.7: unicast to the querier, id and question echoed, short TTLs, no flush.
      const cap = (r: MdnsRecord) => ({ ...r, ttl: Math.min(r.ttl, LEGACY_TTL), flush: false });
      const questions = packet.questions
        .filter((q): q is typeof q & { type: OutQuestion["type"] } =>
          ["A", "AAAA", "PTR", "SRV", "TXT", "ANY"].includes(q.type),
        )
        .map((q) => ({ name: q.name, type: q.type }));
      for (const p of responsePackets(selected.answers.map(cap), selected.additionals.map(cap), {
        id: packet.id,
        questions,
      })) {
        void this.deps.transport.send(iface.name, p, from);
      }
      return;
    }
    const name = hostName(this.hostname);
    const probeDefence =
      packet.authorities.length > 0 && packet.questions.some((q) => sameName(q.name, name));
    const now = this.deps.clock.now();
    const { allowed, limited } = this.limiter.split(
      iface.name,
      selected.answers,
      now,
      probeDefence,
    );
    this.deps.counters.rateLimited += limited.length;
    if (allowed.length === 0) return;
    const extras = this.limiter.split(iface.name, selected.additionals, now).allowed;
    this.limiter.sent(iface.name, [...allowed, ...extras], now);
    const shared = allowed.some((r) => !r.flush);
    this.queueAnswer(iface, allowed, extras, shared && !probeDefence);
  }

  /** Answers go out at once, or after 20-120 ms when they hold shared records (merged). */
  private queueAnswer(
    iface: NetInterface,
    answers: MdnsRecord[],
    extras: MdnsRecord[],
    delay: boolean,
  ) {
    if (!delay && !this.pending.has(iface.name)) {
      this.sendResponse(iface, answers, extras);
      return;
    }
    let p = this.pending.get(iface.name);
    if (!p) {
      const timer = this.deps.clock.after(jitter(this.deps.random, ...SHARED_DELAY), () => {
        const q = this.pending.get(iface.name);
        this.pending.delete(iface.name);
        if (!q || this.state !== "announced") return;
        const records = [...q.records.values()];
        const more = [...q.extras.values()].filter((r) => !q.records.has(recordKey(r)));
        this.sendResponse(iface, records, more);
      });
      p = { records: new Map(), extras: new Map(), timer };
      this.pending.set(iface.name, p);
    }
    for (const r of answers) p.records.set(recordKey(r), r);
    for (const r of extras) p.extras.set(recordKey(r), r);
  }

  private sendResponse(iface: NetInterface, answers: MdnsRecord[], extras: MdnsRecord[]) {
    for (const p of responsePackets(answers, extras)) void this.deps.transport.send(iface.name, p);
  }

  /**
   * A response from someone else. While probing: a conflict check. Once announced: a
   * different live record of our host name is a conflict (RFC 6762 9); a record of our
   * instance that is not ours, or a goodbye for one of our records, is answered by
   * announcing ours again (at most once a second).
   */
  handleResponse(iface: NetInterface, packet: Packet): void {
    if (this.state === "probing") {
      this.prober.handleResponse(packet, this.allOwnAddressRecords());
      return;
    }
    if (this.state !== "announced") return;
    const host = hostName(this.hostname);
    const instance = instanceName(this.advertValue.nodeId);
    const mineEverywhere = new Set(this.allOwnAddressRecords().map(recordKey));
    const ours = new Set(this.announcedRecords(iface).map(recordKey));
    let defend = false;
    for (const r of [...packet.answers, ...packet.additionals]) {
      if (sameName(r.name, host) && (r.type === "A" || r.type === "AAAA")) {
        if (r.ttl > 0 && !mineEverywhere.has(recordKey(r))) {
          this.cancelAnnouncements();
          this.state = "probing";
          this.prober.conflict(`${r.type} ${r.data} from another host after announcing`);
          return;
        }
        if (r.ttl === 0 && ours.has(recordKey(r))) defend = true;
      } else if (sameName(r.name, instance) && (r.type === "SRV" || r.type === "TXT")) {
        if (!ours.has(recordKey(r)) || r.ttl === 0) defend = true;
      } else if (r.type === "PTR" && r.ttl === 0 && ours.has(recordKey(r))) {
        defend = true;
      }
    }
    if (defend) this.defend(iface);
  }

  private defend(iface: NetInterface) {
    if (this.defendTimer) return;
    // A short random delay lets several packets of one burst be answered once.
    this.defendTimer = this.deps.clock.after(jitter(this.deps.random, ...SHARED_DELAY), () => {
      this.defendTimer = undefined;
      if (this.state !== "announced") return;
      const now = this.deps.clock.now();
      const { allowed } = this.limiter.split(iface.name, this.announcedRecords(iface), now);
      if (allowed.length === 0) return;
      this.deps.log("debug", "re-announcing our records", { iface: iface.name });
      this.limiter.sent(iface.name, allowed, now);
      this.sendResponse(iface, allowed, []);
    });
  }

  private won(label: string) {
    this.state = "announced";
    this.service = serviceRecords(this.advertValue, label, this.options.ttl);
    this.lastAnnounced = this.service;
    this.announce();
    this.emit("announced", label);
  }

  /** Multicasts records (taken at send time) on every interface. */
  private sendAll(records: (iface: NetInterface) => MdnsRecord[]) {
    const now = this.deps.clock.now();
    for (const iface of this.deps.transport.interfaces()) {
      const list = records(iface);
      this.limiter.sent(iface.name, list, now);
      this.sendResponse(iface, list, []);
    }
  }

  /** Announces all our records now and again (RFC 6762 8.3: twice, 1 s apart). */
  private announce() {
    const count = this.options.announceCount ?? 2;
    const interval = this.options.announceIntervalMs ?? 1000;
    const once = (left: number) => {
      if (this.state !== "announced") return;
      this.sendAll((iface) => this.announcedRecords(iface));
      if (left > 1) {
        const t = this.deps.clock.after(interval, () => {
          this.announceTimers.delete(t);
          once(left - 1);
        });
        this.announceTimers.add(t);
      }
    };
    once(count);
  }

  private cancelAnnouncements() {
    for (const t of this.announceTimers) t.cancel();
    this.announceTimers.clear();
    this.updateTimer?.cancel();
    this.updateTimer = undefined;
    this.defendTimer?.cancel();
    this.defendTimer = undefined;
    for (const p of this.pending.values()) p.timer.cancel();
    this.pending.clear();
    for (const t of this.truncated.values()) t.timer.cancel();
    this.truncated.clear();
  }

  /**
   * Stops and sends goodbyes (TTL 0) on every interface: for every record when announced;
   * while probing again (after a conflict or a new interface), for the PTR, SRV and TXT
   * announced before, not for a host name that is not ours yet.
   */
  async stop(): Promise<void> {
    const wasAnnounced = this.state === "announced";
    this.state = "stopped";
    this.prober.stop();
    this.cancelAnnouncements();
    const before = this.lastAnnounced;
    if (!wasAnnounced && !before) return;
    const sends: Promise<boolean>[] = [];
    for (const iface of this.deps.transport.interfaces()) {
      const records =
        wasAnnounced || !before
          ? this.announcedRecords(iface)
          : [before.ptr, before.srv, before.txt];
      const bye = records.map((r) => withTtl(r, 0));
      for (const p of responsePackets(bye)) sends.push(this.deps.transport.send(iface.name, p));
    }
    await Promise.all(sends);
  }
}

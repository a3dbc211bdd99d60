/**
 * Probing for the host name (RFC 6762 8.1-8.2, 9): three probes 250 ms apart, after a random
 * delay of up to 250 ms, each an ANY question for `<name>.local` with our address records in
 * the authority section. A response holding any record of that name that is not ours is a
 * conflict: the next name (`<base>-2`, `-3`...) is probed. A simultaneous probe from another
 * host is settled by comparing the two authority sections: the lower one waits a second and
 * probes again (by then the winner defends the name). After 15 conflicts in 10 s, probing
 * slows to one attempt per 5 s.
 */
import type { Clock, Timer } from "./clock.js";
import type { NetInterface } from "./interfaces.js";
import { conflictName, hostName, sameName } from "./names.js";
import { queryPackets } from "./packets.js";
import type { Packet } from "./parse.js";
import { type AddressRecord, compareProbeSets, recordKey } from "./records.js";
import type { LogFn, PacketTransport } from "./transport.js";

export interface ProbeTimings {
  /** Longest random wait before the first probe, ms. */
  initialDelayMaxMs: number;
  intervalMs: number;
  count: number;
  /** Wait after losing a tie-break, ms. */
  tieBreakWaitMs: number;
  /** Pause between attempts once conflicts come too fast, ms. */
  slowdownMs: number;
}

export const DEFAULT_PROBE_TIMINGS: ProbeTimings = {
  initialDelayMaxMs: 250,
  intervalMs: 250,
  count: 3,
  tieBreakWaitMs: 1000,
  slowdownMs: 5000,
};

const SLOWDOWN_CONFLICTS = 15;
const SLOWDOWN_WINDOW_MS = 10_000;

export interface ProberDeps {
  transport: PacketTransport;
  clock: Clock;
  random: () => number;
  log: LogFn;
}

export interface ProberOptions {
  /** The configured host label; conflicts append -2, -3... */
  base: string;
  /** Our address records for a label on an interface. */
  hostRecords(iface: NetInterface, label: string): AddressRecord[];
  /** The label was won: start announcing. */
  onWin(label: string): void;
  /** A conflict moved us from one label to the next. */
  onConflict(from: string, to: string): void;
  timings?: Partial<ProbeTimings>;
}

export type ProbeState = "idle" | "probing" | "won";

export class Prober {
  private attempt = 1;
  private sent = 0;
  private timer: Timer | undefined;
  private readonly conflictTimes: number[] = [];
  private readonly timings: ProbeTimings;
  state: ProbeState = "idle";

  constructor(
    private readonly deps: ProberDeps,
    private readonly options: ProberOptions,
  ) {
    this.timings = { ...DEFAULT_PROBE_TIMINGS, ...options.timings };
  }

  /** The label being probed or won. */
  get label(): string {
    return conflictName(this.options.base, this.attempt);
  }

  /** Starts (or restarts) probing the current label. */
  start(delayMs?: number): void {
    this.timer?.cancel();
    this.state = "probing";
    this.sent = 0;
    const wait = delayMs ?? this.deps.random() * this.timings.initialDelayMaxMs;
    this.timer = this.deps.clock.after(wait, () => this.probe());
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.state = "idle";
  }

  /** The current label is taken by someone else: move on to the next one and probe it. */
  conflict(reason: string): void {
    const from = this.label;
    const now = this.deps.clock.now();
    this.conflictTimes.push(now);
    while ((this.conflictTimes[0] ?? now) < now - SLOWDOWN_WINDOW_MS) this.conflictTimes.shift();
    this.attempt++;
    this.deps.log("info", "host name conflict", { from, to: this.label, reason });
    this.options.onConflict(from, this.label);
    const slow = this.conflictTimes.length >= SLOWDOWN_CONFLICTS;
    this.start(slow ? this.timings.slowdownMs : undefined);
  }

  /** A query seen while probing: another host's simultaneous probe for our label? */
  handleQuery(iface: NetInterface, packet: Packet): void {
    if (this.state !== "probing") return;
    const name = hostName(this.label);
    const theirs = packet.authorities.filter((r) => sameName(r.name, name));
    if (theirs.length === 0) return;
    const ours = this.options.hostRecords(iface, this.label);
    const order = compareProbeSets(ours, theirs);
    if (order < 0) {
      this.deps.log("debug", "lost probe tie-break", { name, iface: iface.name });
      this.start(this.timings.tieBreakWaitMs);
    }
  }

  /**
   * A response seen while probing: any live record of our label that is not one of ours
   * (`own`, all our address records on all interfaces) is a conflict.
   */
  handleResponse(packet: Packet, own: readonly AddressRecord[]): void {
    if (this.state !== "probing") return;
    const name = hostName(this.label);
    const mine = new Set(own.map(recordKey));
    const clash = [...packet.answers, ...packet.additionals].find(
      (r) => r.ttl > 0 && sameName(r.name, name) && !mine.has(recordKey(r)),
    );
    if (clash) this.conflict(`${clash.type} record from another host`);
  }

  private probe() {
    const label = this.label;
    for (const iface of this.deps.transport.interfaces()) {
      const auth = this.options.hostRecords(iface, label);
      for (const p of queryPackets([{ name: hostName(label), type: "ANY" }], [], auth)) {
        void this.deps.transport.send(iface.name, p);
      }
    }
    this.sent++;
    this.timer = this.deps.clock.after(this.timings.intervalMs, () => {
      if (this.sent < this.timings.count) this.probe();
      else this.win();
    });
  }

  private win() {
    this.timer = undefined;
    this.state = "won";
    this.options.onWin(this.label);
  }
}

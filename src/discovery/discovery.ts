/**
 * Discovery: this node's advert on `_flatgrid._tcp.local` and the peers it hears, over mDNS
 * (RFC 6762/6763) on every usable interface. Ties the transport, the responder (probe,
 * announce, answer, goodbye) and the browser (query, cache, peers) together, and counts
 * what the network sends that is not acceptable: malformed packets are dropped and never
 * throw out of here.
 */
import { EventEmitter } from "node:events";
import { hostname as systemHostname } from "node:os";
import { type Advert, type AdvertUpdate, advertProblem, checkAdvert } from "./advert.js";
import type { Peer, PeerDownReason } from "./browser.js";
import { Browser } from "./browser.js";
import { RecordCache } from "./cache.js";
import { type Clock, systemClock } from "./clock.js";
import type { NetInterface, SystemInterfaces } from "./interfaces.js";
import { checkHostLabel, instanceName, NameError, sanitizeHostname } from "./names.js";
import { decodePacket, MAX_TTL, PacketError } from "./parse.js";
import type { ProbeTimings } from "./probe.js";
import { DEFAULT_HOST_TTL, DEFAULT_TTL } from "./records.js";
import { Responder, type ResponderCounters } from "./responder.js";
import {
  type Datagram,
  type InterfaceChanges,
  type LogFn,
  MDNS_PORT,
  Transport,
  type TransportLike,
} from "./transport.js";

/** Discovery was misconfigured or used out of order. */
export class DiscoveryError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = "DiscoveryError";
  }
}

export interface DiscoveryOptions {
  advert: Advert;
  /** Host label to claim as `<label>.local`. Default: the system host name, cleaned up. */
  hostname?: string;
  /** Interfaces by name. Default: every up, multicast, non-loopback interface with IPv4. */
  interfaces?: string[];
  /** Announce IPv6 addresses (AAAA). Default true. Packets always travel over IPv4. */
  ipv6?: boolean;
  /** TTL of PTR, SRV and TXT, seconds. Default 4500. */
  ttl?: number;
  /** TTL of A and AAAA, seconds. Default 120. */
  hostTtl?: number;
  /** Publish our advert. Default true; false only browses. */
  announce?: boolean;
  /** Browse for peers. Default true; false only publishes. */
  browse?: boolean;
  /** How often interfaces are re-read, ms (0: never). Default 5000. */
  rescanMs?: number;
  /** UDP port. Default 5353: only tests should change it. */
  port?: number;
  /** Longest interval of the browse query, ms. Default one hour. */
  maxQueryIntervalMs?: number;
  /**
   * Longest interval between queries for the missing records of a half-known peer (e.g. its
   * addresses expired while the link was cut), ms. Default 60 s.
   */
  maxResolveIntervalMs?: number;
  /** Probe timings (tests). */
  probe?: Partial<ProbeTimings>;
  /** Announcement spacing, ms. Default 1000. */
  announceIntervalMs?: number;
  /** Most cached records. Default 4096. */
  maxCacheEntries?: number;
  log?: LogFn;
  clock?: Clock;
  random?: () => number;
  /** Where interfaces come from (tests). */
  system?: () => SystemInterfaces;
  /** Another transport, e.g. a simulated network (tests). */
  transport?: TransportLike;
}

export interface DiscoveryStats {
  /** Datagrams attributed to one of our interfaces (our own loopback excluded). */
  packetsReceived: number;
  packetsSent: number;
  sendErrors: number;
  /** Dropped: not DNS, bad names, or flatgrid records with bad values. */
  malformed: number;
  /** Why the last malformed packet was dropped. */
  lastMalformed: string | undefined;
  /** Well-formed but not for us: off-subnet sources, non-zero opcode/rcode, bad source port. */
  ignored: number;
  queriesAnswered: number;
  /** Records left out of answers because the querier listed them as known. */
  knownAnswerSuppressed: number;
  /** Records left out of answers because they were multicast less than a second ago. */
  rateLimited: number;
  /** Host name conflicts (each moved us to the next name). */
  conflicts: number;
  /** Exceptions in our own handling of a packet (a bug; the packet was dropped). */
  internalErrors: number;
  peers: number;
  cacheEntries: number;
}

export interface DiscoveryEvents {
  "peer-up": [Peer];
  "peer-update": [Peer, Peer];
  "peer-down": [Peer, PeerDownReason];
  /** Our host name was probed and announced (again after a conflict). */
  announced: [string];
  conflict: [{ from: string; to: string }];
  interfaces: [InterfaceChanges];
}

export type DiscoveryState = "new" | "running" | "stopped";

export class Discovery extends EventEmitter<DiscoveryEvents> {
  private readonly transport: TransportLike;
  private readonly responder: Responder | undefined;
  private readonly browser: Browser | undefined;
  private readonly cache: RecordCache;
  private readonly log: LogFn;
  private readonly port: number;
  private readonly counters = {
    packetsReceived: 0,
    malformed: 0,
    lastMalformed: undefined as string | undefined,
    ignored: 0,
    internalErrors: 0,
  };
  private readonly responderCounters: ResponderCounters = {
    queriesAnswered: 0,
    knownAnswerSuppressed: 0,
    rateLimited: 0,
    conflicts: 0,
  };
  private advertValue: Advert;
  private announcedOnce: Promise<string>;
  state: DiscoveryState = "new";

  constructor(options: DiscoveryOptions) {
    super();
    const problem = advertProblem(options.advert);
    if (problem) throw new DiscoveryError(`bad advert: ${problem}`);
    this.advertValue = checkAdvert(options.advert);
    let hostname: string;
    try {
      hostname =
        options.hostname === undefined
          ? sanitizeHostname(systemHostname())
          : checkHostLabel(options.hostname);
    } catch (err) {
      if (err instanceof NameError) throw new DiscoveryError(err.message, err);
      throw err;
    }
    const ttl = checkTtl("ttl", options.ttl ?? DEFAULT_TTL);
    const hostTtl = checkTtl("hostTtl", options.hostTtl ?? DEFAULT_HOST_TTL);
    this.log = options.log ?? (() => {});
    this.port = options.port ?? MDNS_PORT;
    const clock = options.clock ?? systemClock;
    const random = options.random ?? Math.random;
    this.transport =
      options.transport ??
      new Transport({
        names: options.interfaces,
        ipv6: options.ipv6,
        port: this.port,
        rescanMs: options.rescanMs,
        log: this.log,
        system: options.system,
      });
    this.cache = new RecordCache({ maxEntries: options.maxCacheEntries, random });
    const deps = { transport: this.transport, clock, random, log: this.log };
    if (options.announce !== false) {
      this.responder = new Responder(
        { ...deps, counters: this.responderCounters },
        {
          advert: this.advertValue,
          hostname,
          ttl,
          hostTtl,
          port: this.port,
          probe: options.probe,
          announceIntervalMs: options.announceIntervalMs,
        },
      );
      this.responder.on("announced", (name) => this.emit("announced", name));
      this.responder.on("conflict", (c) => this.emit("conflict", c));
    }
    this.announcedOnce = new Promise((resolve) => {
      this.responder?.once("announced", resolve);
    });
    if (options.browse !== false) {
      this.browser = new Browser(
        { ...deps, cache: this.cache },
        {
          self: options.announce !== false ? instanceName(this.advertValue.nodeId) : undefined,
          maxQueryIntervalMs: options.maxQueryIntervalMs,
          maxResolveIntervalMs: options.maxResolveIntervalMs,
        },
      );
      this.browser.on("peer-up", (p) => this.emit("peer-up", p));
      this.browser.on("peer-update", (p, old) => this.emit("peer-update", p, old));
      this.browser.on("peer-down", (p, why) => this.emit("peer-down", p, why));
    }
    this.transport.on("datagram", (d) => this.receive(d));
    this.transport.on("offlink", () => {
      this.counters.ignored++;
    });
    this.transport.on("interfaces", (c) => this.interfacesChanged(c));
  }

  /**
   * Opens the sockets and starts probing and browsing. Resolves once the sockets are bound
   * (use announced() to wait for the host name). Throws DiscoveryError when no socket opens.
   */
  async start(): Promise<void> {
    if (this.state !== "new") throw new DiscoveryError(`cannot start: discovery is ${this.state}`);
    this.state = "running";
    try {
      await this.transport.start();
    } catch (err) {
      this.state = "stopped";
      await this.transport.close();
      throw new DiscoveryError(`cannot start mDNS: ${(err as Error).message}`, err);
    }
    if (this.transport.interfaces().length === 0)
      this.log("warn", "no usable network interface yet; waiting for one");
    this.responder?.start();
    this.browser?.start();
  }

  /** Resolves with our host label once it is probed and announced. */
  announced(): Promise<string> {
    return this.announcedOnce;
  }

  /** Sends goodbyes for our records (when announced) and closes the sockets. */
  async stop(): Promise<void> {
    if (this.state !== "running") {
      this.state = "stopped";
      return;
    }
    this.state = "stopped";
    this.browser?.stop();
    try {
      await this.responder?.stop();
    } finally {
      await this.transport.close();
    }
  }

  /** Changes our advert (e.g. state); the changed TXT (and SRV) are announced again. */
  update(patch: AdvertUpdate): Advert {
    const next = { ...this.advertValue, ...patch, nodeId: this.advertValue.nodeId };
    const problem = advertProblem(next);
    if (problem) throw new DiscoveryError(`bad advert update: ${problem}`);
    this.advertValue = checkAdvert(next);
    this.responder?.update(this.advertValue);
    return { ...this.advertValue };
  }

  get advert(): Advert {
    return { ...this.advertValue };
  }

  /** Our current host label (it changes after a conflict). */
  get hostname(): string | undefined {
    return this.responder?.hostname;
  }

  interfaces(): NetInterface[] {
    return this.transport.interfaces();
  }

  peers(): Peer[] {
    return this.browser?.peers() ?? [];
  }

  stats(): DiscoveryStats {
    return {
      ...this.counters,
      ...this.responderCounters,
      packetsSent: this.transport.packetsSent,
      sendErrors: this.transport.sendErrors,
      peers: this.browser?.peers().length ?? 0,
      cacheEntries: this.cache.size,
    };
  }

  /** Re-reads the interfaces now instead of waiting for the next rescan. */
  async rescan(): Promise<InterfaceChanges> {
    return this.transport.rescan();
  }

  private receive({ iface, data, rinfo }: Datagram) {
    if (this.state !== "running") return;
    this.counters.packetsReceived++;
    try {
      const packet = decodePacket(data);
      if (!packet.standard) {
        this.counters.ignored++;
        return;
      }
      const from = { address: rinfo.address, port: rinfo.port };
      if (packet.kind === "query") {
        this.responder?.handleQuery(iface, packet, from);
        return;
      }
      // RFC 6762 6: responses not from port 5353 are silently ignored.
      if (rinfo.port !== this.port) {
        this.counters.ignored++;
        return;
      }
      this.responder?.handleResponse(iface, packet);
      this.browser?.handleResponse(iface, packet);
    } catch (err) {
      if (err instanceof PacketError) {
        this.counters.malformed++;
        this.counters.lastMalformed = `${rinfo.address}: ${err.message}`;
        this.log("debug", "malformed packet dropped", {
          from: rinfo.address,
          iface: iface.name,
          reason: err.message,
        });
        return;
      }
      this.counters.internalErrors++;
      this.log("warn", "error handling a packet", { from: rinfo.address, error: String(err) });
    }
  }

  private interfacesChanged(changes: InterfaceChanges) {
    // A changed interface is the same link with other addresses: what was learnt there
    // stays; we probe and announce again, and browse from the start of the backoff.
    const added = [...changes.added, ...changes.changed];
    try {
      this.responder?.interfacesChanged(added, changes.removed);
      this.browser?.interfacesChanged(added, changes.removed);
    } catch (err) {
      this.counters.internalErrors++;
      this.log("warn", "error handling interface changes", { error: String(err) });
    }
    this.emit("interfaces", changes);
  }
}

function checkTtl(what: string, value: number): number {
  if (!Number.isInteger(value) || value < 1 || value > MAX_TTL)
    throw new DiscoveryError(`${what} ${value} is not a whole number of seconds in 1..${MAX_TTL}`);
  return value;
}

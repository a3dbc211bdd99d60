/**
 * Sockets: one multicast-dns instance per interface, each on its own UDP socket bound to
 * 0.0.0.0:5353 with SO_REUSEADDR (so several processes of one network namespace can run
 * discovery), joined to 224.0.0.251 on its interface and sending there.
 *
 * On Linux every socket bound to the port receives the multicast of every interface, so a
 * datagram is attributed to the interface whose subnet holds its source address, and
 * dropped by the others. Our own datagrams come back through multicast loopback; they are
 * recognised by their bytes and dropped once each. Interfaces are re-read periodically.
 */
import { createHash } from "node:crypto";
import { createSocket, type RemoteInfo } from "node:dgram";
import { EventEmitter } from "node:events";
import dnsPacket, { type Packet } from "dns-packet";
import makeMdns from "multicast-dns";
import {
  interfaceForSource,
  interfaceSignature,
  type NetInterface,
  readSystem,
  type SelectOptions,
  type SystemInterfaces,
  selectInterfaces,
} from "./interfaces.js";

export const MDNS_PORT = 5353;
export const MDNS_GROUP = "224.0.0.251";

/** A socket that could not be set up. */
export class TransportError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = "TransportError";
  }
}

export interface Datagram {
  iface: NetInterface;
  data: Buffer;
  rinfo: RemoteInfo;
}

export interface Destination {
  address: string;
  port: number;
}

export interface InterfaceChanges {
  added: NetInterface[];
  removed: NetInterface[];
  /** Same name, other addresses: their socket was made anew. */
  changed: NetInterface[];
}

/** What the responder and browser need from a transport; tests may provide their own. */
export interface PacketTransport {
  interfaces(): NetInterface[];
  /** Sends on one interface, to the group or to `dest`; false when the send failed. */
  send(iface: string, packet: Packet, dest?: Destination): Promise<boolean>;
}

/** What Discovery needs of a transport: the real one, or a simulated network in tests. */
export interface TransportLike extends PacketTransport {
  readonly packetsSent: number;
  readonly sendErrors: number;
  start(): Promise<void>;
  close(): Promise<void>;
  rescan(): Promise<InterfaceChanges>;
  on<K extends keyof TransportEvents>(
    event: K,
    listener: (...args: TransportEvents[K]) => void,
  ): unknown;
}

export interface TransportEvents {
  datagram: [Datagram];
  interfaces: [InterfaceChanges];
  /** A datagram from no subnet of ours (not counted as received). */
  offlink: [RemoteInfo];
}

export type LogFn = (level: "debug" | "info" | "warn", msg: string, fields?: object) => void;

export interface TransportOptions extends SelectOptions {
  port?: number;
  /** How often interfaces are re-read, ms; 0 never. Default 5000. */
  rescanMs?: number;
  log?: LogFn;
  /** Where interfaces come from (tests). */
  system?: () => SystemInterfaces;
}

interface Endpoint {
  iface: NetInterface;
  signature: string;
  mdns: makeMdns.MulticastDNS;
}

const SENT_MEMORY_MS = 5000;

export class Transport extends EventEmitter<TransportEvents> implements PacketTransport {
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly sent = new Map<string, number[]>();
  private readonly port: number;
  private readonly log: LogFn;
  private rescanTimer: NodeJS.Timeout | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private scanning: Promise<void> = Promise.resolve();
  packetsSent = 0;
  sendErrors = 0;

  constructor(private readonly options: TransportOptions = {}) {
    super();
    this.port = options.port ?? MDNS_PORT;
    this.log = options.log ?? (() => {});
  }

  interfaces(): NetInterface[] {
    return [...this.endpoints.values()].map((e) => e.iface);
  }

  /** Opens sockets on the current interfaces; throws TransportError when none can bind. */
  async start(): Promise<void> {
    const wanted = this.select();
    const failures: Error[] = [];
    for (const iface of wanted) {
      try {
        await this.open(iface);
      } catch (err) {
        failures.push(err as Error);
        this.log("warn", "cannot open mDNS socket", { iface: iface.name, error: String(err) });
      }
    }
    if (wanted.length > 0 && this.endpoints.size === 0) {
      throw new TransportError(
        `no mDNS socket could be opened on ${wanted.map((i) => i.name).join(", ")}: ${failures[0]?.message}`,
        failures[0],
      );
    }
    const rescan = this.options.rescanMs ?? 5000;
    if (rescan > 0) {
      this.rescanTimer = setInterval(() => {
        this.scanning = this.scanning
          .then(() => this.rescan())
          .then(
            () => {},
            () => {},
          );
      }, rescan);
      this.rescanTimer.unref();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.rescanTimer);
    clearInterval(this.pruneTimer);
    await this.scanning;
    await Promise.all([...this.endpoints.values()].map((e) => this.closeEndpoint(e)));
    this.endpoints.clear();
  }

  async send(ifaceName: string, packet: Packet, dest?: Destination): Promise<boolean> {
    const e = this.endpoints.get(ifaceName);
    if (!e || this.closed) return false;
    let bytes: Buffer;
    try {
      bytes = dnsPacket.encode(packet);
    } catch (err) {
      this.log("warn", "cannot encode packet", { error: String(err) });
      return false;
    }
    if (!dest) this.remember(bytes);
    return new Promise((resolve) => {
      const to = dest ?? { address: MDNS_GROUP, port: this.port };
      const done = (err: Error | null) => {
        if (err) {
          this.sendErrors++;
          this.log("debug", "send failed", { iface: ifaceName, error: String(err) });
          resolve(false);
        } else {
          this.packetsSent++;
          resolve(true);
        }
      };
      if (packet.type === "response")
        e.mdns.respond({ ...packet, answers: packet.answers ?? [] }, to, done);
      else e.mdns.query({ ...packet, questions: packet.questions ?? [] }, to, done);
    });
  }

  /** Re-reads the interfaces now (also done every rescanMs). */
  async rescan(): Promise<InterfaceChanges> {
    const changes: InterfaceChanges = { added: [], removed: [], changed: [] };
    if (this.closed) return changes;
    const wanted = new Map(this.select().map((i) => [i.name, i]));
    for (const [name, e] of this.endpoints) {
      const now = wanted.get(name);
      if (!now) {
        this.endpoints.delete(name);
        await this.closeEndpoint(e);
        changes.removed.push(e.iface);
      } else if (interfaceSignature(now) !== e.signature) {
        this.endpoints.delete(name);
        await this.closeEndpoint(e);
        changes.changed.push(now);
      }
    }
    for (const [name, iface] of wanted) {
      if (this.endpoints.has(name)) continue;
      try {
        await this.open(iface);
        if (!changes.changed.some((c) => c.name === name)) changes.added.push(iface);
      } catch (err) {
        this.log("debug", "cannot open mDNS socket yet", { iface: name, error: String(err) });
        changes.changed = changes.changed.filter((c) => c.name !== name);
      }
    }
    if (changes.added.length + changes.removed.length + changes.changed.length > 0) {
      this.log("info", "interfaces changed", {
        added: changes.added.map((i) => i.name),
        removed: changes.removed.map((i) => i.name),
        changed: changes.changed.map((i) => i.name),
      });
      this.emit("interfaces", changes);
    }
    return changes;
  }

  private select(): NetInterface[] {
    const sys = (this.options.system ?? readSystem)();
    return selectInterfaces(sys, this.options);
  }

  private open(iface: NetInterface): Promise<void> {
    const socket = createSocket({ type: "udp4", reuseAddr: true });
    const mdns = makeMdns({
      socket,
      port: this.port,
      interface: iface.ipv4,
      bind: "0.0.0.0",
      multicast: true,
      loopback: true,
      ttl: 255,
    });
    const endpoint: Endpoint = { iface, signature: interfaceSignature(iface), mdns };
    socket.on("message", (data: Buffer, rinfo: RemoteInfo) => this.receive(endpoint, data, rinfo));
    // multicast-dns reports socket trouble and its own decode failures as warnings; we
    // decode (and count) datagrams ourselves, so only socket errors are of interest.
    mdns.on("warning", (err: NodeJS.ErrnoException) => {
      if (err.syscall)
        this.log("debug", "socket warning", { iface: iface.name, error: String(err) });
    });
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => {
        mdns.destroy();
        reject(new TransportError(`cannot bind mDNS on ${iface.name}: ${err.message}`, err));
      };
      mdns.once("error", onError);
      mdns.once("ready", () => {
        mdns.off("error", onError);
        mdns.on("error", (err: Error) =>
          this.log("warn", "socket error", { iface: iface.name, error: String(err) }),
        );
        if (this.closed) {
          mdns.destroy();
          reject(new TransportError("transport closed"));
          return;
        }
        this.endpoints.set(iface.name, endpoint);
        resolve();
      });
    });
  }

  private closeEndpoint(e: Endpoint): Promise<void> {
    return new Promise((resolve) => {
      try {
        e.mdns.destroy(() => resolve());
      } catch {
        resolve();
      }
    });
  }

  private receive(e: Endpoint, data: Buffer, rinfo: RemoteInfo) {
    if (this.closed || this.endpoints.get(e.iface.name) !== e) return;
    const owner = interfaceForSource(rinfo.address, this.interfaces());
    if (owner?.name !== e.iface.name) {
      // Another endpoint takes it; or, when no subnet of ours holds the source, the first.
      if (!owner && this.endpoints.values().next().value === e) this.emit("offlink", rinfo);
      return;
    }
    if (this.isOwn(data)) return;
    this.emit("datagram", { iface: e.iface, data, rinfo });
  }

  private remember(bytes: Buffer) {
    const hash = createHash("sha1").update(bytes).digest("base64");
    const list = this.sent.get(hash);
    if (list) list.push(Date.now());
    else this.sent.set(hash, [Date.now()]);
    if (!this.pruneTimer) {
      this.pruneTimer = setInterval(() => this.prune(), SENT_MEMORY_MS);
      this.pruneTimer.unref();
    }
  }

  private isOwn(data: Buffer): boolean {
    if (this.sent.size === 0) return false;
    const hash = createHash("sha1").update(data).digest("base64");
    const list = this.sent.get(hash);
    if (!list || list.length === 0) return false;
    list.shift();
    if (list.length === 0) this.sent.delete(hash);
    return true;
  }

  private prune() {
    const cutoff = Date.now() - SENT_MEMORY_MS;
    for (const [hash, list] of this.sent) {
      while ((list[0] ?? Number.POSITIVE_INFINITY) < cutoff) list.shift();
      if (list.length === 0) this.sent.delete(hash);
    }
  }
}

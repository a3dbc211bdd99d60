/**
 * Resource records: the few types discovery uses, how ours are built from an advert and the
 * addresses of one interface, identity keys, and the byte order of RFC 6762 8.2 used for
 * probe tie-breaking. Pure.
 */
import { isIPv4, isIPv6 } from "node:net";
import type { Answer } from "dns-packet";
import { type Advert, encodeTxt } from "./advert.js";
import { hostName, instanceName, SERVICE_ENUMERATION, SERVICE_TYPE } from "./names.js";

/** Default TTLs, seconds (RFC 6762 10: host records 120 s, others 75 minutes). */
export const DEFAULT_HOST_TTL = 120;
export const DEFAULT_TTL = 4500;
/** Legacy unicast answers carry at most this TTL (RFC 6762 6.7). */
export const LEGACY_TTL = 10;

interface Base {
  name: string;
  /** Seconds; 0 is a goodbye. */
  ttl: number;
  /** The cache-flush bit: set on unique records (RFC 6762 10.2). */
  flush: boolean;
}
export interface ARecord extends Base {
  type: "A";
  data: string;
}
export interface AaaaRecord extends Base {
  type: "AAAA";
  data: string;
}
export interface PtrRecord extends Base {
  type: "PTR";
  data: string;
}
export interface SrvRecord extends Base {
  type: "SRV";
  data: { priority: number; weight: number; port: number; target: string };
}
export interface TxtRecord extends Base {
  type: "TXT";
  data: Buffer[];
}
/** A record of a type discovery does not use: kept only by name and type (conflicts). */
export interface OtherRecord extends Base {
  type: "OTHER";
  rrtype: string;
}
export type AddressRecord = ARecord | AaaaRecord;
export type MdnsRecord = ARecord | AaaaRecord | PtrRecord | SrvRecord | TxtRecord;
export type AnyRecord = MdnsRecord | OtherRecord;
export type RecordType = MdnsRecord["type"];

/** The addresses of one interface that host records announce there. */
export interface InterfaceAddresses {
  ipv4: string[];
  ipv6: string[];
}

export interface OwnRecords {
  /** `_flatgrid._tcp.local` PTR `<id>._flatgrid._tcp.local` (shared). */
  ptr: PtrRecord;
  srv: SrvRecord;
  txt: TxtRecord;
  /** `_services._dns-sd._udp.local` PTR `_flatgrid._tcp.local` (shared, answered only). */
  enumeration: PtrRecord;
}

export interface TtlOptions {
  /** Seconds for PTR, SRV and TXT. */
  ttl: number;
  /** Seconds for A and AAAA. */
  hostTtl: number;
}

export function serviceRecords(advert: Advert, hostLabel: string, ttl: number): OwnRecords {
  const instance = instanceName(advert.nodeId);
  return {
    ptr: { name: SERVICE_TYPE, type: "PTR", ttl, flush: false, data: instance },
    srv: {
      name: instance,
      type: "SRV",
      ttl,
      flush: true,
      data: { priority: 0, weight: 0, port: advert.apiPort, target: hostName(hostLabel) },
    },
    txt: { name: instance, type: "TXT", ttl, flush: true, data: encodeTxt(advert) },
    enumeration: { name: SERVICE_ENUMERATION, type: "PTR", ttl, flush: false, data: SERVICE_TYPE },
  };
}

export function hostRecords(
  hostLabel: string,
  addresses: InterfaceAddresses,
  ttl: number,
): AddressRecord[] {
  const name = hostName(hostLabel);
  return [
    ...addresses.ipv4.map((data): ARecord => ({ name, type: "A", ttl, flush: true, data })),
    ...addresses.ipv6.map((data): AaaaRecord => ({ name, type: "AAAA", ttl, flush: true, data })),
  ];
}

/** The same record with another TTL (goodbyes, legacy answers). */
export function withTtl<R extends AnyRecord>(record: R, ttl: number): R {
  return { ...record, ttl };
}

/** IPv6 address as 16 bytes; a zone ("%eth0") is ignored. Throws on a bad address. */
export function ipv6Bytes(address: string): Buffer {
  const bare = address.split("%")[0] ?? "";
  if (!isIPv6(bare)) throw new Error(`not an IPv6 address: ${address}`);
  let text = bare;
  const lastColon = text.lastIndexOf(":");
  const last = text.slice(lastColon + 1);
  if (isIPv4(last)) {
    const [a = 0, b = 0, c = 0, d = 0] = last.split(".").map(Number);
    const words = `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
    text = `${text.slice(0, lastColon + 1)}${words}`;
  }
  const words = (s: string | undefined) =>
    s === undefined || s === "" ? [] : s.split(":").map((h) => Number.parseInt(h, 16));
  const halves = text.split("::");
  const head = words(halves[0]);
  const tail = words(halves[1]);
  const all =
    halves.length === 2
      ? [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail]
      : head;
  const out = Buffer.alloc(16);
  all.slice(0, 8).forEach((w, i) => {
    out.writeUInt16BE(w & 0xffff, i * 2);
  });
  return out;
}

function nameBytes(name: string): Buffer {
  const parts: Buffer[] = [];
  for (const label of name.split(".")) {
    if (label === "") continue;
    const b = Buffer.from(label, "utf8");
    parts.push(Buffer.from([Math.min(b.length, 63)]), b.subarray(0, 63));
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

/** The record's rdata as uncompressed wire bytes (RFC 6762 8.2 compares these). */
export function rdataBytes(record: AnyRecord): Buffer {
  switch (record.type) {
    case "A":
      return Buffer.from(record.data.split(".").map(Number));
    case "AAAA":
      return ipv6Bytes(record.data);
    case "PTR":
      return nameBytes(record.data);
    case "SRV": {
      const head = Buffer.alloc(6);
      head.writeUInt16BE(record.data.priority, 0);
      head.writeUInt16BE(record.data.weight, 2);
      head.writeUInt16BE(record.data.port, 4);
      return Buffer.concat([head, nameBytes(record.data.target)]);
    }
    case "TXT":
      return Buffer.concat(record.data.flatMap((s) => [Buffer.from([s.length]), s]));
    case "OTHER":
      return Buffer.alloc(0);
  }
}

const TYPE_NUMBER: Record<string, number> = { A: 1, PTR: 12, TXT: 16, AAAA: 28, SRV: 33 };

export function typeNumber(record: AnyRecord): number {
  return record.type === "OTHER" ? 65536 : (TYPE_NUMBER[record.type] ?? 65536);
}

/** A string that is equal for two records exactly when name, type and rdata are equal. */
export function recordKey(record: AnyRecord): string {
  const type = record.type === "OTHER" ? `OTHER:${record.rrtype}` : record.type;
  return `${record.name.toLowerCase()}|${type}|${rdataKey(record)}`;
}

function rdataKey(record: AnyRecord): string {
  switch (record.type) {
    case "A":
      return record.data;
    case "AAAA":
      return ipv6Bytes(record.data).toString("hex");
    case "PTR":
      return record.data.toLowerCase();
    case "SRV":
      return `${record.data.priority} ${record.data.weight} ${record.data.port} ${record.data.target.toLowerCase()}`;
    case "TXT":
      return record.data.map((s) => s.toString("hex")).join(".");
    case "OTHER":
      return "";
  }
}

export function sameRecord(a: AnyRecord, b: AnyRecord): boolean {
  return recordKey(a) === recordKey(b);
}

/** Name and type, the unit of cache-flush and of questions. */
export function rrsetKey(name: string, type: string): string {
  return `${name.toLowerCase()}|${type}`;
}

/**
 * RFC 6762 8.2 ordering of two records: class (always IN here), then type, then rdata as
 * unsigned bytes. Negative when a sorts before b.
 */
export function compareRecords(a: AnyRecord, b: AnyRecord): number {
  const t = typeNumber(a) - typeNumber(b);
  if (t !== 0) return t;
  return Buffer.compare(rdataBytes(a), rdataBytes(b));
}

/**
 * RFC 6762 8.2 tie-break between two simultaneous probes for one name: both sets sorted,
 * compared pair by pair; the first difference decides; a set that runs out first loses.
 * Positive when ours wins, negative when theirs wins, 0 when they are identical (our own
 * probe, or a host with the same data: no conflict).
 */
export function compareProbeSets(ours: readonly AnyRecord[], theirs: readonly AnyRecord[]): number {
  const a = [...ours].sort(compareRecords);
  const b = [...theirs].sort(compareRecords);
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const ai = a[i];
    const bi = b[i];
    if (ai === undefined || bi === undefined) break;
    const c = compareRecords(ai, bi);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

/** The dns-packet form of a record, ready to encode. */
export function toAnswer(record: MdnsRecord): Answer {
  const base = { name: record.name, ttl: record.ttl, class: "IN" as const, flush: record.flush };
  switch (record.type) {
    case "SRV":
      return { ...base, type: "SRV", data: { ...record.data } };
    case "TXT":
      return { ...base, type: "TXT", data: record.data };
    default:
      return { ...base, type: record.type, data: record.data };
  }
}

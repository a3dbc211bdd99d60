/**
 * Turns a datagram into a checked packet, or says why it is malformed. Everything here comes
 * from the network and nothing is trusted: a packet that does not decode, that has a bad
 * name, or that carries a record under `_flatgrid._tcp.local` that does not hold valid
 * flatgrid data, is refused whole. Pure.
 */
import { isIPv4, isIPv6 } from "node:net";
import dnsPacket, { type Answer } from "dns-packet";
import { AdvertError, decodeTxt } from "./advert.js";
import {
  hostLabelOf,
  isUnderService,
  nameProblem,
  nodeIdOfInstance,
  SERVICE_TYPE,
  sameName,
} from "./names.js";
import type { AnyRecord, MdnsRecord, SrvRecord, TxtRecord } from "./records.js";

/** A datagram that is not an acceptable mDNS packet. */
export class PacketError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PacketError";
  }
}

/** Larger TTLs are clamped: nothing we track should outlive a day without a refresh. */
export const MAX_TTL = 86_400;
/** Largest datagram we look at (RFC 6762 17: 9000 bytes including IP and UDP headers). */
export const MAX_PACKET_BYTES = 9000;

export interface Question {
  name: string;
  /** Record type, "ANY" included; other types as dns-packet names them. */
  type: string;
  /** The unicast-response bit (RFC 6762 5.4). */
  qu: boolean;
}

export interface Packet {
  kind: "query" | "response";
  id: number;
  /** opcode 0 and rcode 0; other packets must be ignored (RFC 6762 18.3, 18.11). */
  standard: boolean;
  /** TC bit: in a query, more known answers follow (RFC 6762 7.2). */
  truncated: boolean;
  questions: Question[];
  answers: AnyRecord[];
  authorities: AnyRecord[];
  additionals: AnyRecord[];
}

const CLASS_IN = "IN";
/** dns-packet does not strip the QU bit: IN with it set comes out as this. */
const CLASS_IN_QU = "UNKNOWN_32769";
const CLASS_ANY_QU = "UNKNOWN_33023";

export function decodePacket(buf: Buffer): Packet {
  if (buf.length < 12) throw new PacketError("shorter than a DNS header");
  if (buf.length > MAX_PACKET_BYTES) throw new PacketError("larger than 9000 bytes");
  let raw: dnsPacket.DecodedPacket;
  try {
    raw = dnsPacket.decode(buf);
  } catch (err) {
    throw new PacketError(`does not decode: ${(err as Error).message}`);
  }
  if (dnsPacket.decode.bytes !== buf.length) throw new PacketError("trailing bytes after packet");
  const flags = raw.flags ?? 0;
  const standard = ((flags >> 11) & 0xf) === 0 && (flags & 0xf) === 0;
  const packet: Packet = {
    kind: raw.type === "response" ? "response" : "query",
    id: raw.id ?? 0,
    standard,
    truncated: raw.flag_tc === true,
    questions: (raw.questions ?? []).map(parseQuestion).filter((q) => q !== undefined),
    answers: parseRecords(raw.answers),
    authorities: parseRecords(raw.authorities),
    additionals: parseRecords(raw.additionals),
  };
  checkService(packet);
  return packet;
}

function parseQuestion(q: dnsPacket.Question): Question | undefined {
  const problem = nameProblem(q.name);
  if (problem) throw new PacketError(`question: ${problem}`);
  const klass = String(q.class ?? CLASS_IN);
  const qu = klass === CLASS_IN_QU || klass === CLASS_ANY_QU;
  if (klass !== CLASS_IN && klass !== "ANY" && !qu) return undefined;
  return { name: q.name, type: String(q.type), qu };
}

function parseRecords(list: Answer[] | undefined): AnyRecord[] {
  const out: AnyRecord[] = [];
  for (const a of list ?? []) {
    const r = parseRecord(a);
    if (r) out.push(r);
  }
  return out;
}

function checkName(name: string, where: string) {
  const problem = nameProblem(name);
  if (problem) throw new PacketError(`${where}: ${problem}`);
}

/** One record; undefined for records we skip (OPT, classes other than IN). */
function parseRecord(a: Answer): AnyRecord | undefined {
  if (a.type === "OPT") return undefined;
  checkName(a.name, `${a.type} record`);
  if (a.class !== undefined && a.class !== CLASS_IN) return undefined;
  const ttl = Math.min(Math.max(0, Math.trunc(a.ttl ?? 0)), MAX_TTL);
  const flush = a.flush === true;
  const base = { name: a.name, ttl, flush };
  switch (a.type) {
    case "A":
      if (typeof a.data !== "string" || !isIPv4(a.data))
        throw new PacketError("A record without an IPv4 address");
      return { ...base, type: "A", data: a.data };
    case "AAAA":
      if (typeof a.data !== "string" || !isIPv6(a.data))
        throw new PacketError("AAAA record without an IPv6 address");
      return { ...base, type: "AAAA", data: a.data };
    case "PTR":
      if (typeof a.data !== "string") throw new PacketError("PTR record without a name");
      checkName(a.data, "PTR target");
      return { ...base, type: "PTR", data: a.data };
    case "SRV": {
      const d = a.data;
      if (typeof d !== "object" || d === null || typeof d.target !== "string")
        throw new PacketError("SRV record without a target");
      checkName(d.target, "SRV target");
      return {
        ...base,
        type: "SRV",
        data: { priority: d.priority ?? 0, weight: d.weight ?? 0, port: d.port, target: d.target },
      };
    }
    case "TXT": {
      const d = a.data;
      const strings = Array.isArray(d) ? d : [d];
      if (!strings.every((s) => Buffer.isBuffer(s))) throw new PacketError("TXT record not bytes");
      return { ...base, type: "TXT", data: strings as Buffer[] };
    }
    default:
      return { ...base, type: "OTHER", rrtype: String(a.type) };
  }
}

/**
 * Records under our service must hold valid flatgrid data: the PTR points to
 * `<node id>._flatgrid._tcp.local`, the SRV to `<host>.local` on a real port, the TXT is a
 * version 1 advert whose id is the instance's.
 */
function checkService(p: Packet) {
  for (const r of [...p.answers, ...p.authorities, ...p.additionals]) {
    if (r.type === "PTR" && sameName(r.name, SERVICE_TYPE)) {
      if (!nodeIdOfInstance(r.data))
        throw new PacketError(`PTR to "${r.data}" is not a flatgrid instance`);
      continue;
    }
    if (!isUnderService(r.name)) continue;
    const nodeId = nodeIdOfInstance(r.name);
    if (!nodeId) throw new PacketError(`"${r.name}" is not a flatgrid instance name`);
    if (r.type === "SRV") checkSrv(r);
    if (r.type === "TXT") checkTxt(r, nodeId);
  }
}

function checkSrv(r: SrvRecord) {
  const { port, target } = r.data;
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new PacketError(`SRV port ${port} is not usable`);
  if (!hostLabelOf(target)) throw new PacketError(`SRV target "${target}" is not a .local host`);
}

function checkTxt(r: TxtRecord, nodeId: string) {
  try {
    const advert = decodeTxt(r.data);
    if (advert.nodeId !== nodeId)
      throw new PacketError(`TXT id ${advert.nodeId} is not the instance's (${nodeId})`);
  } catch (err) {
    if (err instanceof AdvertError) throw new PacketError(`TXT: ${err.message}`);
    throw err;
  }
}

/** Records of the kinds discovery uses (drops OTHER). */
export function usable(records: readonly AnyRecord[]): MdnsRecord[] {
  return records.filter((r): r is MdnsRecord => r.type !== "OTHER");
}

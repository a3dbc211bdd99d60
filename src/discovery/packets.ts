/**
 * Outgoing packets: queries with known answers, probes, responses, and their splitting into
 * datagrams that fit one Ethernet frame (RFC 6762 17). A query whose known answers do not fit
 * goes out as several packets, all but the last with the TC bit (RFC 6762 7.2). Pure.
 */
import dnsPacket, { type Answer, type Question as DnsQuestion, type Packet } from "dns-packet";
import { type MdnsRecord, toAnswer } from "./records.js";

/** Payload that fits a 1500-byte MTU with IPv4/IPv6 and UDP headers to spare. */
export const DEFAULT_MAX_PACKET_BYTES = 1400;

export interface OutQuestion {
  name: string;
  type: "A" | "AAAA" | "PTR" | "SRV" | "TXT" | "ANY";
}

/** dns-packet encodes ANY (255) but its types leave it out. */
function toQuestion(q: OutQuestion): DnsQuestion {
  return { name: q.name, type: q.type as DnsQuestion["type"], class: "IN" };
}

export function queryPackets(
  questions: readonly OutQuestion[],
  knownAnswers: readonly MdnsRecord[] = [],
  authorities: readonly MdnsRecord[] = [],
  maxBytes = DEFAULT_MAX_PACKET_BYTES,
): Packet[] {
  const qs = questions.map(toQuestion);
  const first: Packet = {
    type: "query",
    id: 0,
    flags: 0,
    questions: qs,
    answers: [],
    authorities: authorities.map(toAnswer),
    additionals: [],
  };
  const packets = fill(first, knownAnswers.map(toAnswer), "answers", maxBytes, () => ({
    type: "query",
    id: 0,
    flags: 0,
    questions: [],
    answers: [],
    authorities: [],
    additionals: [],
  }));
  packets.forEach((p, i) => {
    if (i < packets.length - 1) p.flags = dnsPacket.TRUNCATED_RESPONSE;
  });
  return packets;
}

export interface ResponseOptions {
  /** Legacy unicast: echo the query id and question (RFC 6762 6.7). */
  id?: number;
  questions?: readonly OutQuestion[];
  maxBytes?: number;
}

export function responsePackets(
  answers: readonly MdnsRecord[],
  additionals: readonly MdnsRecord[] = [],
  options: ResponseOptions = {},
): Packet[] {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_PACKET_BYTES;
  const make = (): Packet => ({
    type: "response",
    id: options.id ?? 0,
    flags: dnsPacket.AUTHORITATIVE_ANSWER,
    questions: (options.questions ?? []).map(toQuestion),
    answers: [],
    authorities: [],
    additionals: [],
  });
  const packets = fill(make(), answers.map(toAnswer), "answers", maxBytes, make);
  const last = packets[packets.length - 1];
  if (last) {
    // Additional records are optional: those that do not fit are left out.
    for (const extra of additionals.map(toAnswer)) {
      last.additionals?.push(extra);
      if (dnsPacket.encodingLength(last) > maxBytes) last.additionals?.pop();
    }
  }
  return packets.filter((p) => (p.answers?.length ?? 0) > 0 || p === packets[0]);
}

function fill(
  first: Packet,
  records: Answer[],
  section: "answers",
  maxBytes: number,
  next: () => Packet,
): Packet[] {
  const packets = [first];
  let current = first;
  for (const r of records) {
    const list = current[section] ?? [];
    current[section] = list;
    list.push(r);
    if (dnsPacket.encodingLength(current) > maxBytes && list.length > 1) {
      list.pop();
      current = next();
      current[section] = [r];
      packets.push(current);
    }
  }
  return packets;
}

/**
 * Which of our records answer a query: the matching records, the additional records of
 * RFC 6763 12 and RFC 6762 6.2, less the known answers the querier listed with at least half
 * our TTL left (RFC 6762 7.1). Pure.
 */
import { sameName } from "./names.js";
import type { Question } from "./parse.js";
import { type AnyRecord, type MdnsRecord, recordKey } from "./records.js";

export interface SelectedAnswers {
  answers: MdnsRecord[];
  additionals: MdnsRecord[];
  /** Records left out because the querier already knows them. */
  suppressed: number;
}

function matches(q: Question, r: MdnsRecord): boolean {
  return sameName(q.name, r.name) && (q.type === "ANY" || q.type === r.type);
}

/** Whether a known answer covers our record: same name, type and rdata, TTL at least half. */
export function knownAnswerCovers(known: AnyRecord, ours: MdnsRecord): boolean {
  return recordKey(known) === recordKey(ours) && known.ttl >= ours.ttl / 2;
}

export function isSuppressed(ours: MdnsRecord, known: readonly AnyRecord[]): boolean {
  return known.some((k) => knownAnswerCovers(k, ours));
}

/** The records that go with an answer (RFC 6763 12.1-12.3, RFC 6762 6.2). */
function related(r: MdnsRecord, ours: readonly MdnsRecord[]): MdnsRecord[] {
  const named = (name: string, types: string[]) =>
    ours.filter((o) => sameName(o.name, name) && types.includes(o.type));
  switch (r.type) {
    case "PTR": {
      const inner = named(r.data, ["SRV", "TXT"]);
      return [...inner, ...inner.flatMap((i) => related(i, ours))];
    }
    case "SRV":
      return named(r.data.target, ["A", "AAAA"]);
    case "A":
      return named(r.name, ["AAAA"]);
    case "AAAA":
      return named(r.name, ["A"]);
    default:
      return [];
  }
}

/**
 * Answers to `questions` from `ours` (our records on the interface the query came in on),
 * with `known` the known-answer section of the query.
 */
export function selectAnswers(
  questions: readonly Question[],
  ours: readonly MdnsRecord[],
  known: readonly AnyRecord[],
): SelectedAnswers {
  const answers = new Map<string, MdnsRecord>();
  for (const q of questions) {
    for (const r of ours) if (matches(q, r)) answers.set(recordKey(r), r);
  }
  const additionals = new Map<string, MdnsRecord>();
  for (const r of answers.values()) {
    for (const extra of related(r, ours)) {
      const key = recordKey(extra);
      if (!answers.has(key)) additionals.set(key, extra);
    }
  }
  let suppressed = 0;
  const keep = (list: Iterable<MdnsRecord>) =>
    [...list].filter((r) => {
      if (!isSuppressed(r, known)) return true;
      suppressed++;
      return false;
    });
  const a = keep(answers.values());
  const b = keep(additionals.values());
  return { answers: a, additionals: b, suppressed };
}

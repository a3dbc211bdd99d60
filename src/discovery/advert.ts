/**
 * The advertisement a node publishes, and its TXT record form (RFC 6763 6):
 * `v=1 id=<node id> grid=<grid id or empty> state=<state> api=<port> ca=<sha256 hex or empty>`
 * and `name=<grid name>` when the node is configured with one.
 * Pure. What a peer advertises is a hint: it is checked for shape here, and trusted by no one
 * (the TLS join checks the CA).
 */
import { isNodeId } from "./names.js";

export interface Advert {
  /** The node's id, uuid-like: lower-case letters, digits and hyphens, at most 63. */
  nodeId: string;
  /** The grid the node belongs to, or "" when it is not in a grid yet. */
  gridId: string;
  /** The node's state, e.g. "booting", "ready": lower-case, at most 32 characters. */
  state: string;
  /** TCP port of the node's API. */
  apiPort: number;
  /** SHA-256 fingerprint of the grid CA, 64 lower-case hex digits, or "" when none. */
  caFingerprint: string;
  /**
   * The grid name the node is configured to create or join ("" or absent: none yet). Nodes
   * with the same name form one grid; it is not a secret (the join token is).
   */
  gridName?: string;
}

/** The parts of an advert that can change while discovery runs. */
export type AdvertUpdate = Partial<Omit<Advert, "nodeId">>;

export const TXT_VERSION = "1";

/** An advert that cannot be published or a TXT record that does not hold one. */
export class AdvertError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AdvertError";
  }
}

const STATE = /^[a-z][a-z0-9-]{0,31}$/;
const FINGERPRINT = /^[0-9a-f]{64}$/;
const PORT = /^[1-9][0-9]{0,4}$/;
const GRID_NAME = /^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$/;
/** RFC 6763 6.1: keep the whole TXT record small; ours is far below this. */
const MAX_TXT_BYTES = 1300;

/** Why an advert is not valid, or undefined. */
export function advertProblem(a: Advert): string | undefined {
  if (typeof a.nodeId !== "string" || !isNodeId(a.nodeId))
    return `node id "${String(a.nodeId)}" is not a lower-case uuid-like label`;
  if (typeof a.gridId !== "string" || (a.gridId !== "" && !isNodeId(a.gridId)))
    return `grid id "${String(a.gridId)}" is not empty or a lower-case uuid-like label`;
  if (typeof a.state !== "string" || !STATE.test(a.state))
    return `state "${String(a.state)}" is not a lower-case word of at most 32 characters`;
  if (!Number.isInteger(a.apiPort) || a.apiPort < 1 || a.apiPort > 65535)
    return `API port ${String(a.apiPort)} is not in 1..65535`;
  if (
    typeof a.caFingerprint !== "string" ||
    (a.caFingerprint !== "" && !FINGERPRINT.test(a.caFingerprint))
  )
    return "CA fingerprint is not empty or 64 lower-case hex digits";
  if (a.gridName !== undefined && (typeof a.gridName !== "string" || !GRID_NAME.test(a.gridName)))
    return `grid name "${String(a.gridName)}" is not a grid name (a-z, 0-9 and -, up to 63)`;
  return undefined;
}

export function checkAdvert(a: Advert): Advert {
  const problem = advertProblem(a);
  if (problem) throw new AdvertError(problem);
  return {
    nodeId: a.nodeId,
    gridId: a.gridId,
    state: a.state,
    apiPort: a.apiPort,
    caFingerprint: a.caFingerprint,
    ...(a.gridName ? { gridName: a.gridName } : {}),
  };
}

/** The TXT strings of an advert, `v=1` first. */
export function encodeTxt(a: Advert): Buffer[] {
  const advert = checkAdvert(a);
  return [
    `v=${TXT_VERSION}`,
    `id=${advert.nodeId}`,
    `grid=${advert.gridId}`,
    `state=${advert.state}`,
    `api=${advert.apiPort}`,
    `ca=${advert.caFingerprint}`,
    ...(advert.gridName ? [`name=${advert.gridName}`] : []),
  ].map((s) => Buffer.from(s, "utf8"));
}

/**
 * The key/value pairs of a TXT record (RFC 6763 6.3-6.4): keys are case-insensitive printable
 * ASCII without "=", the first occurrence of a key wins, a string without "=" is a boolean
 * key (value undefined). Values must be UTF-8 here: ours are plain ASCII.
 */
export function txtPairs(strings: readonly Buffer[]): Map<string, string | undefined> {
  const pairs = new Map<string, string | undefined>();
  let total = 0;
  for (const s of strings) {
    total += s.length + 1;
    if (total > MAX_TXT_BYTES) throw new AdvertError("TXT record too long");
    if (s.length === 0) continue;
    const eq = s.indexOf(0x3d);
    const keyBytes = eq === -1 ? s : s.subarray(0, eq);
    if (keyBytes.length === 0) throw new AdvertError("TXT string with an empty key");
    for (const b of keyBytes) {
      if (b < 0x20 || b > 0x7e) throw new AdvertError("TXT key is not printable ASCII");
    }
    const key = keyBytes.toString("ascii").toLowerCase();
    if (pairs.has(key)) continue;
    if (eq === -1) {
      pairs.set(key, undefined);
      continue;
    }
    const valueBytes = s.subarray(eq + 1);
    const value = valueBytes.toString("utf8");
    if (!Buffer.from(value, "utf8").equals(valueBytes))
      throw new AdvertError(`TXT value of "${key}" is not UTF-8`);
    pairs.set(key, value);
  }
  return pairs;
}

/**
 * The advert in a TXT record; throws AdvertError when any field is missing or not valid.
 * Unknown keys are ignored (later versions may add some); a version other than 1 is refused.
 */
export function decodeTxt(strings: readonly Buffer[]): Advert {
  const pairs = txtPairs(strings);
  const get = (key: string): string => {
    const value = pairs.get(key);
    if (value === undefined) throw new AdvertError(`TXT key "${key}" missing or without value`);
    return value;
  };
  const version = get("v");
  if (version !== TXT_VERSION) throw new AdvertError(`TXT version "${version}" is not supported`);
  const api = get("api");
  if (!PORT.test(api)) throw new AdvertError(`TXT api "${api}" is not a port`);
  const advert: Advert = {
    nodeId: get("id").toLowerCase(),
    gridId: get("grid").toLowerCase(),
    state: get("state"),
    apiPort: Number(api),
    caFingerprint: get("ca").toLowerCase(),
  };
  const name = pairs.get("name");
  if (name) advert.gridName = name;
  return checkAdvert(advert);
}

export function sameAdvert(a: Advert, b: Advert): boolean {
  return (
    a.nodeId === b.nodeId &&
    a.gridId === b.gridId &&
    a.state === b.state &&
    a.apiPort === b.apiPort &&
    a.caFingerprint === b.caFingerprint &&
    (a.gridName ?? "") === (b.gridName ?? "")
  );
}

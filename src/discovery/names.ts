/**
 * DNS names used by discovery: the service type, instance and host names, and the checks
 * that every name taken from the network must pass. Pure.
 */

export const SERVICE_TYPE = "_flatgrid._tcp.local";
/** DNS-SD service type enumeration (RFC 6763 9). */
export const SERVICE_ENUMERATION = "_services._dns-sd._udp.local";
export const LOCAL_SUFFIX = ".local";

/** A name given to discovery that cannot be used (bad host name or node id). */
export class NameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NameError";
  }
}

const MAX_NAME_BYTES = 255;
const MAX_LABEL_BYTES = 63;
/** A host name label (RFC 952/1123): letters, digits, inner hyphens. */
const HOST_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;
/** A node or grid id: uuid-like, and usable as one DNS label. */
const ID_LABEL = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** Room kept in a host name for a conflict suffix such as "-12". */
const SUFFIX_ROOM = 4;

export function sameName(a: string, b: string): boolean {
  return a.length === b.length && a.toLowerCase() === b.toLowerCase();
}

export function isNodeId(value: string): boolean {
  return ID_LABEL.test(value);
}

export function isHostLabel(value: string): boolean {
  return HOST_LABEL.test(value);
}

export function instanceName(nodeId: string): string {
  return `${nodeId}.${SERVICE_TYPE}`;
}

export function hostName(label: string): string {
  return `${label}${LOCAL_SUFFIX}`;
}

/** The node id of `<id>._flatgrid._tcp.local`, lower-cased; undefined for any other name. */
export function nodeIdOfInstance(name: string): string | undefined {
  const suffix = `.${SERVICE_TYPE}`;
  if (name.length <= suffix.length || !name.toLowerCase().endsWith(suffix)) return undefined;
  const label = name.slice(0, -suffix.length).toLowerCase();
  return isNodeId(label) ? label : undefined;
}

/** Whether a name lies under our service type (and so must carry valid flatgrid data). */
export function isUnderService(name: string): boolean {
  return name.toLowerCase().endsWith(`.${SERVICE_TYPE}`);
}

/** The host label of `<label>.local`; undefined for any other name. */
export function hostLabelOf(name: string): string | undefined {
  if (!name.toLowerCase().endsWith(LOCAL_SUFFIX)) return undefined;
  const label = name.slice(0, -LOCAL_SUFFIX.length);
  return isHostLabel(label) ? label : undefined;
}

/**
 * Why a name from the network is unusable, or undefined when it is fine: at most 255 bytes,
 * labels of 1 to 63 bytes, valid UTF-8 (dns-packet turns bad bytes into U+FFFD) and no
 * control characters.
 */
export function nameProblem(name: string): string | undefined {
  if (name === "." || name === "") return undefined;
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) return "name too long";
  if (name.includes("\uFFFD")) return "name is not UTF-8";
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what we reject
  if (/[\u0000-\u001f\u007f]/.test(name)) return "control character in name";
  for (const label of name.split(".")) {
    if (label.length === 0) return "empty label in name";
    if (Buffer.byteLength(label) > MAX_LABEL_BYTES) return "label too long";
  }
  return undefined;
}

/**
 * A usable host label from a system host name: its first label, lower-cased, with anything
 * outside [a-z0-9-] turned into "-", shortened to leave room for a conflict suffix.
 */
export function sanitizeHostname(raw: string): string {
  const first = raw.split(".")[0] ?? "";
  const cleaned = first
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .slice(0, MAX_LABEL_BYTES - SUFFIX_ROOM)
    .replace(/^-+|-+$/g, "");
  return cleaned === "" ? "flatgrid" : cleaned;
}

/** Checks a configured host label; throws NameError with the reason. */
export function checkHostLabel(label: string): string {
  if (!isHostLabel(label) || label.length > MAX_LABEL_BYTES - SUFFIX_ROOM) {
    throw new NameError(
      `host name "${label}" is not usable: one DNS label of letters, digits and inner hyphens, ` +
        `at most ${MAX_LABEL_BYTES - SUFFIX_ROOM} characters`,
    );
  }
  return label;
}

/** The host name to probe after `attempt` conflicts (RFC 6762 9): base, base-2, base-3... */
export function conflictName(base: string, attempt: number): string {
  return attempt <= 1 ? base : `${base}-${attempt}`;
}

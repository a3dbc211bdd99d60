import { readFileSync } from "node:fs";
import type { BlockOptions } from "./devices/virtio-blk.js";
import type { NicOptions } from "./devices/virtio-net.js";
import { MAX_GUEST_CID, MIN_GUEST_CID } from "./devices/virtio-vsock.js";
import type { VmConfig } from "./vm.js";

/**
 * vm.json, the file `flatgrid vmm --config` reads: one VM, checked before anything starts.
 * Checked by hand rather than with the schema library the rest of flatgrid uses: a node runs
 * one monitor per instance, and loading zod costs each of them some 10 MiB of resident
 * memory, more than the monitor's own code and buffers. The file is small and fixed.
 */
export class VmConfigFileError extends Error {
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "VmConfigFileError";
  }
}

/** A field of vm.json that is not right; `field` is its path, like `disks[0].path`. */
export class VmJsonError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`field ${field || "(top)"}: ${problem}`);
    this.name = "VmJsonError";
  }
}

const MAC = /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/;
const MAX_CMDLINE = 4096;
/** Linux's PATH_MAX. */
const MAX_PATH = 4096;
const MAX_DISKS = 8;
const MAX_NICS = 4;
/** Linux's IFNAMSIZ less the terminating NUL. */
const MAX_TAP_NAME = 15;
/** virtio-blk's GET_ID answer. */
const MAX_DISK_ID = 20;

type Fields = Record<string, unknown>;

function at(parent: string, key: string | number): string {
  return typeof key === "number" ? `${parent}[${key}]` : parent ? `${parent}.${key}` : key;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "string") return `"${v.length > 40 ? `${v.slice(0, 40)}...` : v}"`;
  if (typeof v === "object") return "an object";
  return String(v);
}

/** An object with only the given keys. */
function object(v: unknown, field: string, keys: readonly string[]): Fields {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    throw new VmJsonError(field, `must be an object, not ${describe(v)}`);
  for (const key of Object.keys(v))
    if (!keys.includes(key))
      throw new VmJsonError(at(field, key), `is not a field here (known: ${keys.join(", ")})`);
  return v as Fields;
}

function integer(o: Fields, field: string, key: string, min: number, max: number): number {
  const v = o[key];
  const where = at(field, key);
  if (v === undefined) throw new VmJsonError(where, "is required");
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
    throw new VmJsonError(
      where,
      `must be a whole number from ${min} to ${max}, not ${describe(v)}`,
    );
  return v;
}

function text(
  o: Fields,
  field: string,
  key: string,
  rules: { min?: number; max: number; pattern?: [RegExp, string] },
): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  const where = at(field, key);
  if (typeof v !== "string") throw new VmJsonError(where, `must be a string, not ${describe(v)}`);
  if (v.length < (rules.min ?? 0)) throw new VmJsonError(where, "must not be empty");
  if (v.length > rules.max)
    throw new VmJsonError(where, `must be at most ${rules.max} characters, not ${v.length}`);
  if (rules.pattern && !rules.pattern[0].test(v))
    throw new VmJsonError(where, `${rules.pattern[1]}, not ${describe(v)}`);
  return v;
}

function requiredText(
  o: Fields,
  field: string,
  key: string,
  rules: { min?: number; max: number },
): string {
  const v = text(o, field, key, rules);
  if (v === undefined) throw new VmJsonError(at(field, key), "is required");
  return v;
}

function flag(o: Fields, field: string, key: string, fallback: boolean): boolean {
  const v = o[key];
  if (v === undefined) return fallback;
  if (typeof v !== "boolean")
    throw new VmJsonError(at(field, key), `must be true or false, not ${describe(v)}`);
  return v;
}

function list<T>(o: Fields, key: string, max: number, each: (v: unknown, field: string) => T): T[] {
  const v = o[key];
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new VmJsonError(key, `must be a list, not ${describe(v)}`);
  if (v.length > max)
    throw new VmJsonError(key, `may have at most ${max} entries, not ${v.length}`);
  return v.map((item, i) => each(item, at(key, i)));
}

function disk(v: unknown, field: string): BlockOptions {
  const o = object(v, field, ["path", "readOnly", "id"]);
  const path = requiredText(o, field, "path", { min: 1, max: MAX_PATH });
  const id = text(o, field, "id", { max: MAX_DISK_ID });
  return { path, readOnly: flag(o, field, "readOnly", false), ...(id !== undefined && { id }) };
}

function nic(v: unknown, field: string): NicOptions {
  const o = object(v, field, ["tap", "mac", "vhost"]);
  const tap = requiredText(o, field, "tap", { max: MAX_TAP_NAME });
  const mac = text(o, field, "mac", {
    max: 17,
    pattern: [MAC, "must be a MAC address like 02:00:00:00:00:01"],
  });
  return { tap, ...(mac !== undefined && { mac }), vhost: flag(o, field, "vhost", true) };
}

/** The VM a parsed vm.json describes, with defaults filled in; VmJsonError names the field. */
export function parseVmConfig(json: unknown): VmConfig {
  const o = object(json, "", [
    "memoryMiB",
    "vcpus",
    "kernel",
    "cmdline",
    "initrd",
    "disks",
    "nics",
    "debugExit",
    "rng",
    "vsock",
    "hugepages",
  ]);
  const kernel = requiredText(o, "", "kernel", { min: 1, max: MAX_PATH });
  const cmdline = text(o, "", "cmdline", { max: MAX_CMDLINE });
  const initrd = text(o, "", "initrd", { min: 1, max: MAX_PATH });
  const vsock =
    o.vsock === undefined
      ? undefined
      : {
          cid: integer(
            object(o.vsock, "vsock", ["cid"]),
            "vsock",
            "cid",
            MIN_GUEST_CID,
            MAX_GUEST_CID,
          ),
        };
  return {
    memoryMiB: integer(o, "", "memoryMiB", 8, 1024 * 1024),
    vcpus: o.vcpus === undefined ? 1 : integer(o, "", "vcpus", 1, 64),
    kernel,
    ...(cmdline !== undefined && { cmdline }),
    ...(initrd !== undefined && { initrd }),
    disks: list(o, "disks", MAX_DISKS, disk),
    nics: list(o, "nics", MAX_NICS, nic),
    debugExit: flag(o, "", "debugExit", false),
    rng: flag(o, "", "rng", true),
    ...(vsock !== undefined && { vsock }),
    hugepages: flag(o, "", "hugepages", false),
  };
}

export function loadVmConfig(file: string): VmConfig {
  let source: string;
  try {
    source = readFileSync(file, "utf8");
  } catch (err) {
    throw new VmConfigFileError(
      file,
      (err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(source);
  } catch (err) {
    throw new VmConfigFileError(file, `not valid JSON: ${(err as Error).message}`);
  }
  try {
    return parseVmConfig(json);
  } catch (err) {
    if (err instanceof VmJsonError) throw new VmConfigFileError(file, err.message);
    throw err;
  }
}

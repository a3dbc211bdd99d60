import { execFile } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
} from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  CATALOG_LABEL,
  DATA_LABEL,
  describe,
  EDGE_BYTES,
  identify,
  MIDDLE_BYTES,
  middleOffsets,
  type Signature,
} from "./disk-signature.js";

const run = promisify(execFile);

/**
 * The node's data partition: an ext4 file system labelled FLATGRID on a local disk, mounted
 * at /var/lib/flatgrid, where the node keeps its identity, its grid credentials and etcd's
 * data. The image runs from RAM; without this partition a node forgets everything at reboot.
 *
 * A disk is formatted only when the configuration allows it (flatgrid.format=blank) and only
 * when it is blank: every sampled byte zero, no partition table, no file system. Anything else
 * is never written, and the reason is reported disk by disk.
 *
 * An ext4 file system labelled FGCATALOG (an appliance catalog on a disk or a USB stick) is
 * mounted read-only at /var/lib/flatgrid/catalog, where the agent takes class images from.
 */

export const CATALOG_MOUNTPOINT = "catalog";

export const DATA_MOUNTPOINT = "/var/lib/flatgrid";

export interface BlockDevice {
  name: string;
  /** The device node, /dev/NAME. */
  path: string;
  sizeBytes: number;
  /** A partition of another device, rather than a whole disk. */
  partition: boolean;
  removable: boolean;
  readOnly: boolean;
  /** Partitions of this disk (whole disks only). */
  partitions: string[];
}

export interface DiskVerdict {
  device: string;
  sizeBytes: number;
  signature: Signature | null;
  /** What flatgrid did with it, or why not: one sentence. */
  verdict: string;
}

export interface DataPartitionStatus {
  /** Where node state lives: on the data partition, or in RAM (lost at reboot). */
  state: "mounted" | "ram";
  device: string | null;
  mountpoint: string;
  sizeBytes: number | null;
  /** Formatted at this boot. */
  formatted: boolean;
  /** One sentence for the log and the console. */
  reason: string;
  disks: DiskVerdict[];
  /** The catalog disk mounted read-only under the mountpoint, or why not; null: none. */
  catalog: { device: string; mounted: boolean; reason: string } | null;
}

/** Devices that are never local disks: loop, RAM, CD-ROM, floppy, network block devices. */
const NOT_DISKS = /^(loop|ram|zram|sr|fd|nbd|dm-|md)\d*/;

function sysRead(path: string): string | null {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return null;
  }
}

/** Local block devices from sysfs, whole disks and their partitions, sorted by name. */
export function blockDevices(sys = "/sys/class/block"): BlockDevice[] {
  let names: string[];
  try {
    names = readdirSync(sys).filter((n) => !NOT_DISKS.test(n));
  } catch {
    return [];
  }
  const devices: BlockDevice[] = names.map((name) => {
    const dir = join(sys, name);
    const partition = existsSync(join(dir, "partition"));
    return {
      name,
      path: `/dev/${name}`,
      sizeBytes: Number(sysRead(join(dir, "size")) ?? 0) * 512,
      partition,
      removable: sysRead(join(dir, "removable")) === "1",
      readOnly: sysRead(join(dir, "ro")) === "1",
      partitions: partition
        ? []
        : names.filter((p) => p !== name && existsSync(join(dir, p, "partition"))).sort(),
    };
  });
  return devices.filter((d) => d.sizeBytes > 0).sort((a, b) => a.name.localeCompare(b.name));
}

/** Reads the sampled blocks of a device and says what is on it. */
export function probe(path: string, sizeBytes: number): Signature {
  const fd = openSync(path, "r");
  try {
    const read = (offset: number, length: number) => {
      const buf = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const n = readSync(fd, buf, done, length - done, offset + done);
        if (n === 0) break;
        done += n;
      }
      return buf.subarray(0, done);
    };
    const edge = Math.min(EDGE_BYTES, sizeBytes);
    return identify({
      head: read(0, edge),
      tail: read(sizeBytes - edge, edge),
      middle: middleOffsets(sizeBytes).map((o) => read(o, MIDDLE_BYTES)),
    });
  } finally {
    closeSync(fd);
  }
}

export interface DataPartitionOptions {
  format: "never" | "blank";
  mountpoint?: string;
  /** The mount table to read (tests); /proc/mounts by default. */
  mountsFile?: string;
  /** Injected for tests of the decision; the real ones read /sys and /dev. */
  devices?: () => BlockDevice[];
  probe?: (device: BlockDevice) => Signature;
  mkfs?: (device: BlockDevice) => Promise<void>;
  mount?: (device: BlockDevice, mountpoint: string) => Promise<void>;
  mountReadOnly?: (device: BlockDevice, mountpoint: string) => Promise<void>;
}

export type Plan =
  | { action: "mount"; device: BlockDevice; others: BlockDevice[] }
  | { action: "format"; device: BlockDevice }
  | { action: "none"; reason: string };

/** The pure decision: which device to mount, or to format, or why none. */
export function plan(
  format: "never" | "blank",
  devices: BlockDevice[],
  signatures: Map<string, Signature | null>,
): { plan: Plan; verdicts: Map<string, string>; catalog: BlockDevice | null } {
  const verdicts = new Map<string, string>();
  const ours = devices.filter((d) => {
    const s = signatures.get(d.name);
    return s?.kind === "ext" && s.label === DATA_LABEL;
  });
  const [first, ...others] = ours;
  if (first) {
    verdicts.set(first.name, "the data partition");
    for (const o of others)
      verdicts.set(
        o.name,
        `another FLATGRID file system: ${first.name} is used, this one is left alone`,
      );
  }
  const catalog = devices.find((d) => {
    const s = signatures.get(d.name);
    return s?.kind === "ext" && s.label === CATALOG_LABEL;
  });
  if (catalog) verdicts.set(catalog.name, "the appliance catalog: mounted read-only");
  const blank: BlockDevice[] = [];
  for (const d of devices) {
    if (verdicts.has(d.name)) continue;
    const sig = signatures.get(d.name);
    if (sig === null || sig === undefined) {
      verdicts.set(d.name, "could not be read: left alone");
      continue;
    }
    if (d.partition) {
      verdicts.set(d.name, `holds ${describe(sig)}: not ours, left alone`);
      continue;
    }
    if (d.partitions.length > 0) {
      verdicts.set(d.name, `has partitions (${d.partitions.join(", ")}): left alone`);
      continue;
    }
    if (sig.kind !== "blank") {
      verdicts.set(d.name, `holds ${describe(sig)}: not ours, left alone`);
      continue;
    }
    if (d.readOnly) verdicts.set(d.name, "blank but read-only: left alone");
    else if (d.removable) verdicts.set(d.name, "blank but removable: never formatted");
    else blank.push(d);
  }
  if (first) {
    for (const d of blank) verdicts.set(d.name, "blank, unused: the data partition is elsewhere");
    return { plan: { action: "mount", device: first, others }, verdicts, catalog: catalog ?? null };
  }
  const target = blank[0];
  if (target && format === "blank") {
    verdicts.set(target.name, "was blank: formatted as the data partition (flatgrid.format=blank)");
    for (const d of blank.slice(1)) verdicts.set(d.name, "blank, unused");
    return { plan: { action: "format", device: target }, verdicts, catalog: catalog ?? null };
  }
  for (const d of blank)
    verdicts.set(d.name, "blank: not formatted, because flatgrid.format is not blank");
  const reason =
    devices.length === 0
      ? "no local disk"
      : target
        ? `no FLATGRID data partition; ${target.name} is blank, and flatgrid.format=blank on the kernel command line would make it one`
        : "no FLATGRID data partition, and no blank disk to make one on";
  return { plan: { action: "none", reason }, verdicts, catalog: catalog ?? null };
}

async function mkfs(device: BlockDevice): Promise<void> {
  // 1% reserved for root rather than 5%: the node's own services run as root anyway.
  await run("mke2fs", ["-q", "-F", "-t", "ext4", "-L", DATA_LABEL, "-m", "1", device.path]);
}

async function mount(device: BlockDevice, mountpoint: string): Promise<void> {
  // Preen first, as any boot does: after a power cut the journal replays on mount, but
  // e2fsck catches what the journal does not. 1 = fixed, 2 = fixed (reboot advised on a
  // mounted root, which this is not); 4 and up = errors left: better in RAM than corrupt.
  try {
    await run("e2fsck", ["-p", device.path]);
  } catch (err) {
    const code = (err as { code?: number }).code;
    if (typeof code !== "number" || code >= 4) {
      throw new Error(
        `e2fsck -p ${device.path} found errors it could not fix (exit ${code}): run e2fsck by hand`,
      );
    }
  }
  mkdirSync(mountpoint, { recursive: true });
  await run("mount", ["-t", "ext4", "-o", "noatime", device.path, mountpoint]);
}

async function mountReadOnly(device: BlockDevice, mountpoint: string): Promise<void> {
  mkdirSync(mountpoint, { recursive: true });
  await run("mount", ["-t", "ext4", "-o", "ro,noatime", device.path, mountpoint]);
}

/** The device mounted at `mountpoint`, from the mount table, or null. */
export function mountedAt(mountpoint: string, mountsFile = "/proc/mounts"): string | null {
  let table: string;
  try {
    table = readFileSync(mountsFile, "utf8");
  } catch {
    return null;
  }
  for (const line of table.split("\n")) {
    const [device, at] = line.split(" ");
    // The table escapes spaces as \040; our mountpoints have none.
    if (at === mountpoint && device?.startsWith("/dev/")) return device;
  }
  return null;
}

function safeProbe(d: BlockDevice): Signature | null {
  try {
    return probe(d.path, d.sizeBytes);
  } catch {
    return null;
  }
}

/**
 * Finds, formats when allowed, and mounts the data partition, then the catalog disk under it;
 * never throws.
 */
export async function setUpDataPartition(
  options: DataPartitionOptions,
): Promise<DataPartitionStatus> {
  const { status, catalog } = await dataPartition(options);
  const at = join(status.mountpoint, CATALOG_MOUNTPOINT);
  const already = mountedAt(at, options.mountsFile);
  if (already)
    return {
      ...status,
      catalog: { device: already, mounted: true, reason: `${already} mounted at ${at} (already)` },
    };
  if (!catalog) return { ...status, catalog: null };
  try {
    await (options.mountReadOnly ?? mountReadOnly)(catalog, at);
    return {
      ...status,
      catalog: {
        device: catalog.path,
        mounted: true,
        reason: `${catalog.path} mounted read-only at ${at}`,
      },
    };
  } catch (err) {
    return {
      ...status,
      catalog: {
        device: catalog.path,
        mounted: false,
        reason: `${catalog.path} holds a catalog but could not be mounted: ${(err as Error).message}`,
      },
    };
  }
}

async function dataPartition(
  options: DataPartitionOptions,
): Promise<{ status: Omit<DataPartitionStatus, "catalog">; catalog: BlockDevice | null }> {
  const mountpoint = options.mountpoint ?? DATA_MOUNTPOINT;
  const devices = (options.devices ?? blockDevices)();
  // A supervisor restarted by init finds the partition mounted by its predecessor: e2fsck
  // must never run on a mounted file system, and nothing else needs doing.
  const mounted = mountedAt(mountpoint, options.mountsFile);
  if (mounted) {
    const device = devices.find((d) => d.path === mounted);
    // Whatever else is there was seen by that earlier start; the catalog too.
    return {
      catalog: null,
      status: {
        state: "mounted",
        device: mounted,
        mountpoint,
        sizeBytes: device?.sizeBytes ?? null,
        formatted: false,
        reason: `${mounted} mounted at ${mountpoint} (already, by an earlier start of the supervisor)`,
        disks: devices.map((d) => ({
          device: d.path,
          sizeBytes: d.sizeBytes,
          signature: null,
          verdict: d.path === mounted ? "the data partition" : "not looked at: already set up",
        })),
      },
    };
  }
  const signatures = new Map(devices.map((d) => [d.name, (options.probe ?? safeProbe)(d)]));
  const { plan: p, verdicts, catalog } = plan(options.format, devices, signatures);
  const disks = (): DiskVerdict[] =>
    devices.map((d) => ({
      device: d.path,
      sizeBytes: d.sizeBytes,
      signature: signatures.get(d.name) ?? null,
      verdict: verdicts.get(d.name) ?? "",
    }));
  const inRam = (reason: string): Omit<DataPartitionStatus, "catalog"> => ({
    state: "ram",
    device: null,
    mountpoint,
    sizeBytes: null,
    formatted: false,
    reason: `${reason}: node state is kept in RAM and lost at reboot`,
    disks: disks(),
  });
  if (p.action === "none") return { status: inRam(p.reason), catalog };
  const device = p.device;
  let formatted = false;
  try {
    if (p.action === "format") {
      await (options.mkfs ?? mkfs)(device);
      formatted = true;
    }
    await (options.mount ?? mount)(device, mountpoint);
  } catch (err) {
    verdicts.set(
      device.name,
      `${formatted ? "formatted, but " : ""}not mounted: ${(err as Error).message}`,
    );
    return {
      status: inRam(
        `the data partition ${device.path} could not be ${formatted ? "mounted" : "set up"}`,
      ),
      catalog,
    };
  }
  return {
    catalog,
    status: {
      state: "mounted",
      device: device.path,
      mountpoint,
      sizeBytes: device.sizeBytes,
      formatted,
      reason: `${device.path} ${formatted ? "formatted and " : ""}mounted at ${mountpoint}`,
      disks: disks(),
    },
  };
}

/** 8.0 GiB, 96 MiB: sizes as an operator reads them. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n >= 10 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

/**
 * What is on a disk, from samples of its bytes: the start, the end and a few blocks in
 * between. Pure: the caller reads the device. It errs on the side of "something is there":
 * a disk counts as blank only when every sampled byte is zero, because formatting a disk
 * that held an operator's data is the one mistake a node must never make.
 */

/** Bytes read from the start and from the end of a device. */
export const EDGE_BYTES = 1 << 20;
/** Blocks sampled between the edges, evenly spaced. */
export const MIDDLE_SAMPLES = 16;
export const MIDDLE_BYTES = 64 << 10;

/** The file system label that marks flatgrid's data partition. */
export const DATA_LABEL = "FLATGRID";
/** An appliance catalog on a disk or stick (`npm run catalog` makes build/catalog.img). */
export const CATALOG_LABEL = "FGCATALOG";

export type Signature =
  | { kind: "blank" }
  | { kind: "ext"; type: "ext2" | "ext3" | "ext4"; label: string; uuid: string }
  | { kind: "partition-table"; type: "gpt" | "mbr" }
  | { kind: "filesystem"; type: string }
  | { kind: "data" };

export interface DiskSample {
  /** The first min(EDGE_BYTES, size) bytes. */
  head: Buffer;
  /** The last min(EDGE_BYTES, size) bytes. */
  tail: Buffer;
  /** Blocks from between the edges. */
  middle: Buffer[];
}

const EXT_SUPERBLOCK = 1024;
const EXT_MAGIC = 0xef53;

/** Where the other file systems and volume formats we name keep their magic. */
const MAGICS: { type: string; offset: number; magic: string }[] = [
  { type: "xfs", offset: 0, magic: "XFSB" },
  { type: "btrfs", offset: 0x10040, magic: "_BHRfS_M" },
  { type: "LUKS", offset: 0, magic: "LUKS\xba\xbe" },
  { type: "LVM2 physical volume", offset: 512 + 0x18, magic: "LVM2 001" },
  { type: "swap", offset: 4096 - 10, magic: "SWAPSPACE2" },
  { type: "swap", offset: 4096 - 10, magic: "SWAP-SPACE" },
  { type: "iso9660", offset: 0x8001, magic: "CD001" },
  { type: "ntfs", offset: 3, magic: "NTFS    " },
  { type: "vfat", offset: 0x52, magic: "FAT32   " },
  { type: "vfat", offset: 0x36, magic: "FAT16   " },
  { type: "vfat", offset: 0x36, magic: "FAT12   " },
  { type: "squashfs", offset: 0, magic: "hsqs" },
];

function at(buf: Buffer, offset: number, magic: string): boolean {
  const bytes = Buffer.from(magic, "latin1");
  return (
    offset + bytes.length <= buf.length && buf.subarray(offset, offset + bytes.length).equals(bytes)
  );
}

function isZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

function uuidAt(buf: Buffer, offset: number): string {
  const h = buf.subarray(offset, offset + 16).toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function ext(head: Buffer): Signature | null {
  const sb = EXT_SUPERBLOCK;
  if (head.length < sb + 1024 || head.readUInt16LE(sb + 0x38) !== EXT_MAGIC) return null;
  const compat = head.readUInt32LE(sb + 0x5c);
  const incompat = head.readUInt32LE(sb + 0x60);
  const roCompat = head.readUInt32LE(sb + 0x64);
  // The features e2fsprogs and blkid use to tell the three apart: extents, 64bit, flex_bg,
  // huge_file, dir_nlink... mean ext4; a journal alone means ext3.
  const ext4 = (incompat & (0x40 | 0x80 | 0x200)) !== 0 || (roCompat & (0x8 | 0x20 | 0x40)) !== 0;
  const type = ext4 ? "ext4" : (compat & 0x4) !== 0 ? "ext3" : "ext2";
  const raw = head.subarray(sb + 0x78, sb + 0x88);
  const end = raw.indexOf(0);
  const label = raw.subarray(0, end < 0 ? raw.length : end).toString("utf8");
  return { kind: "ext", type, label, uuid: uuidAt(head, sb + 0x68) };
}

export function identify(sample: DiskSample): Signature {
  const { head, tail } = sample;
  const found = ext(head);
  if (found) return found;
  // A protective or real MBR says GPT when the GPT header follows it.
  if (at(head, 512, "EFI PART") || (tail.length >= 512 && at(tail, tail.length - 512, "EFI PART")))
    return { kind: "partition-table", type: "gpt" };
  for (const m of MAGICS)
    if (at(head, m.offset, m.magic)) return { kind: "filesystem", type: m.type };
  if (head.length >= 512 && head[510] === 0x55 && head[511] === 0xaa)
    return { kind: "partition-table", type: "mbr" };
  if (isZero(head) && isZero(tail) && sample.middle.every(isZero)) return { kind: "blank" };
  return { kind: "data" };
}

/** The signature in words, for logs and the console: "an ext4 file system labelled x". */
export function describe(sig: Signature): string {
  switch (sig.kind) {
    case "blank":
      return "blank";
    case "ext":
      return sig.label
        ? `an ${sig.type} file system labelled "${sig.label}"`
        : `an ${sig.type} file system without a label`;
    case "partition-table":
      return sig.type === "gpt" ? "a GPT partition table" : "an MBR partition table";
    case "filesystem":
      return `the signature of ${sig.type === "swap" ? "a swap area" : sig.type}`;
    case "data":
      return "data that is not a file system flatgrid knows";
  }
}

/** Offsets of the blocks sampled between the edges of a device of `size` bytes. */
export function middleOffsets(size: number): number[] {
  const span = size - 2 * EDGE_BYTES;
  if (span <= MIDDLE_BYTES) return [];
  const offsets: number[] = [];
  for (let i = 1; i <= MIDDLE_SAMPLES; i++) {
    const raw = EDGE_BYTES + Math.floor((span * i) / (MIDDLE_SAMPLES + 1));
    offsets.push(Math.min(raw - (raw % 4096), size - EDGE_BYTES - MIDDLE_BYTES));
  }
  return offsets;
}

// What the node finds on a disk and what it decides to do with it. Signatures are read from
// images made by the real tools (mke2fs, mkswap) on plain files; the decision is pure.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type BlockDevice, plan, probe } from "../../src/os/data-partition.js";
import {
  describe as describeSig,
  EDGE_BYTES,
  identify,
  middleOffsets,
  type Signature,
} from "../../src/os/disk-signature.js";

const dir = mkdtempSync(join(tmpdir(), "flatgrid-disks-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const MiB = 1 << 20;

function blankFile(name: string, size: number): string {
  const file = join(dir, name);
  const fd = openSync(file, "w");
  ftruncateSync(fd, size);
  closeSync(fd);
  return file;
}

function poke(file: string, offset: number, bytes: Buffer): void {
  const fd = openSync(file, "r+");
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

describe("disk signatures", () => {
  it("a file of zeros is blank", () => {
    assert.deepEqual(probe(blankFile("blank", 64 * MiB), 64 * MiB), { kind: "blank" });
  });

  it("reads an ext4 label and UUID written by mke2fs, and tells ext2 apart", () => {
    const f = blankFile("ext4", 32 * MiB);
    execFileSync("mke2fs", [
      "-q",
      "-F",
      "-t",
      "ext4",
      "-L",
      "FLATGRID",
      "-U",
      "11111111-2222-3333-4444-555555555555",
      f,
    ]);
    assert.deepEqual(probe(f, 32 * MiB), {
      kind: "ext",
      type: "ext4",
      label: "FLATGRID",
      uuid: "11111111-2222-3333-4444-555555555555",
    });
    const g = blankFile("ext2", 8 * MiB);
    execFileSync("mke2fs", ["-q", "-F", "-t", "ext2", g]);
    const sig = probe(g, 8 * MiB);
    assert.equal(sig.kind === "ext" && sig.type, "ext2");
    assert.equal(describeSig(sig), "an ext2 file system without a label");
  });

  it("sees swap, an MBR and a GPT", () => {
    const s = blankFile("swap", 16 * MiB);
    execFileSync("mkswap", ["-q", s]);
    assert.deepEqual(probe(s, 16 * MiB), { kind: "filesystem", type: "swap" });
    const mbr = blankFile("mbr", 16 * MiB);
    poke(mbr, 510, Buffer.from([0x55, 0xaa]));
    assert.deepEqual(probe(mbr, 16 * MiB), { kind: "partition-table", type: "mbr" });
    // Only the backup GPT header at the end survived (the start was wiped): still not blank.
    const gpt = blankFile("gpt", 16 * MiB);
    poke(gpt, 16 * MiB - 512, Buffer.from("EFI PART"));
    assert.deepEqual(probe(gpt, 16 * MiB), { kind: "partition-table", type: "gpt" });
  });

  it("one non-zero byte in a sampled block in the middle makes a disk not blank", () => {
    const size = 256 * MiB;
    const f = blankFile("middle", size);
    const [, second] = middleOffsets(size);
    assert.ok(second);
    poke(f, second + 1000, Buffer.from([7]));
    assert.deepEqual(probe(f, size), { kind: "data" });
  });

  it("samples stay inside small devices", () => {
    assert.deepEqual(middleOffsets(2 * EDGE_BYTES), []);
    for (const size of [3 * MiB, 17 * MiB + 4096, 8 * 2 ** 30]) {
      for (const o of middleOffsets(size)) {
        assert.ok(
          o >= EDGE_BYTES && o + 64 * 1024 <= size - EDGE_BYTES + 64 * 1024,
          `${size}: ${o}`,
        );
        assert.ok(o + 64 * 1024 <= size);
      }
    }
    // A device smaller than the edges is read whole, twice, without going past its end.
    assert.deepEqual(identify({ head: Buffer.alloc(4096), tail: Buffer.alloc(4096), middle: [] }), {
      kind: "blank",
    });
  });
});

describe("which disk becomes the data partition", () => {
  const disk = (name: string, extra: Partial<BlockDevice> = {}): BlockDevice => ({
    name,
    path: `/dev/${name}`,
    sizeBytes: 8 * 2 ** 30,
    partition: false,
    removable: false,
    readOnly: false,
    partitions: [],
    ...extra,
  });
  const ours: Signature = { kind: "ext", type: "ext4", label: "FLATGRID", uuid: "u" };
  const photos: Signature = { kind: "ext", type: "ext4", label: "photos", uuid: "p" };
  const blank: Signature = { kind: "blank" };

  it("mounts an existing FLATGRID file system, on a whole disk or a partition", () => {
    const devices = [
      disk("sda", { partitions: ["sda1"] }),
      disk("sda1", { partition: true }),
      disk("sdb"),
    ];
    const r = plan(
      "blank",
      devices,
      new Map<string, Signature>([
        ["sda", { kind: "partition-table", type: "gpt" }],
        ["sda1", ours],
        ["sdb", blank],
      ]),
    );
    assert.equal(r.plan.action, "mount");
    assert.equal(r.plan.action === "mount" && r.plan.device.name, "sda1");
    // A blank disk next to it is not formatted: there is a data partition already.
    assert.match(r.verdicts.get("sdb") ?? "", /blank, unused/);
    assert.match(r.verdicts.get("sda") ?? "", /has partitions \(sda1\): left alone/);
  });

  it("formats the first blank disk only with flatgrid.format=blank", () => {
    const devices = [disk("vda"), disk("vdb")];
    const sigs = new Map<string, Signature | null>([
      ["vda", photos],
      ["vdb", blank],
    ]);
    const never = plan("never", devices, sigs);
    assert.equal(never.plan.action, "none");
    assert.match(
      never.plan.action === "none" ? never.plan.reason : "",
      /vdb is blank, and flatgrid.format=blank .* would make it one/,
    );
    assert.match(
      never.verdicts.get("vda") ?? "",
      /holds an ext4 file system labelled "photos": not ours, left alone/,
    );
    const allowed = plan("blank", devices, sigs);
    assert.deepEqual(allowed.plan.action === "format" && allowed.plan.device.name, "vdb");
    assert.match(allowed.verdicts.get("vda") ?? "", /not ours, left alone/);
  });

  it("never formats a removable, read-only, unreadable or non-blank disk", () => {
    const devices = [
      disk("sda", { removable: true }),
      disk("sdb", { readOnly: true }),
      disk("sdc"),
      disk("sdd"),
      disk("sde"),
    ];
    const r = plan(
      "blank",
      devices,
      new Map<string, Signature | null>([
        ["sda", blank],
        ["sdb", blank],
        ["sdc", null],
        ["sdd", { kind: "data" }],
        ["sde", { kind: "filesystem", type: "xfs" }],
      ]),
    );
    assert.equal(r.plan.action, "none");
    assert.match(r.plan.action === "none" ? r.plan.reason : "", /no blank disk to make one on/);
    assert.match(r.verdicts.get("sda") ?? "", /removable: never formatted/);
    assert.match(r.verdicts.get("sdb") ?? "", /read-only/);
    assert.match(r.verdicts.get("sdc") ?? "", /could not be read/);
    assert.match(r.verdicts.get("sdd") ?? "", /data that is not a file system flatgrid knows/);
    assert.match(r.verdicts.get("sde") ?? "", /holds the signature of xfs: not ours/);
  });

  it("finds a catalog disk (FGCATALOG) beside the data partition, and never formats it", () => {
    const catalog: Signature = { kind: "ext", type: "ext4", label: "FGCATALOG", uuid: "c" };
    const r = plan(
      "blank",
      [disk("vda"), disk("vdb", { readOnly: true })],
      new Map<string, Signature | null>([
        ["vda", blank],
        ["vdb", catalog],
      ]),
    );
    assert.equal(r.plan.action, "format");
    assert.equal(r.catalog?.name, "vdb");
    assert.match(r.verdicts.get("vdb") ?? "", /the appliance catalog: mounted read-only/);
    const none = plan("never", [disk("vda")], new Map([["vda", photos]]));
    assert.equal(none.catalog, null);
  });

  it("with two FLATGRID file systems, uses the first and names the other", () => {
    const r = plan(
      "never",
      [disk("vda"), disk("vdb")],
      new Map([
        ["vda", ours],
        ["vdb", ours],
      ]),
    );
    assert.equal(r.plan.action === "mount" && r.plan.device.name, "vda");
    assert.match(r.verdicts.get("vdb") ?? "", /another FLATGRID file system: vda is used/);
  });

  it("no disk at all says so", () => {
    const r = plan("blank", [], new Map());
    assert.deepEqual(r.plan, { action: "none", reason: "no local disk" });
  });
});

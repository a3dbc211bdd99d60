// The data partition on real block devices: loop devices over sparse files stand in for the
// node's disks, and the real mke2fs, e2fsck and mount do the work. (The simulator's e2e test
// does the same on a booted node's virtio disks.)
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type BlockDevice, setUpDataPartition } from "../../src/os/data-partition.js";

const dir = mkdtempSync(join(tmpdir(), "flatgrid-data-"));
const mountpoint = join(dir, "mnt");
const loops: BlockDevice[] = [];
const MiB = 1 << 20;

function loopDevice(name: string, size: number, prepare?: (file: string) => void): BlockDevice {
  const file = join(dir, name);
  const fd = openSync(file, "w");
  ftruncateSync(fd, size);
  closeSync(fd);
  prepare?.(file);
  const path = execFileSync("losetup", ["--find", "--show", file], { encoding: "utf8" }).trim();
  const dev: BlockDevice = {
    name: path.slice("/dev/".length),
    path,
    sizeBytes: size,
    partition: false,
    removable: false,
    readOnly: false,
    partitions: [],
  };
  loops.push(dev);
  return dev;
}

const sha = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const umount = () => {
  if (existsSync(join(mountpoint, "lost+found"))) execFileSync("umount", [mountpoint]);
};

let blank: BlockDevice;
let photos: BlockDevice;
let photosSha = "";

before(() => {
  mkdirSync(mountpoint);
  photos = loopDevice("photos.raw", 64 * MiB, (f) => {
    const content = join(dir, "content");
    mkdirSync(content);
    writeFileSync(join(content, "holiday.jpg"), "not really a photo");
    execFileSync("mke2fs", ["-q", "-F", "-t", "ext4", "-L", "photos", "-d", content, f]);
  });
  blank = loopDevice("blank.raw", 128 * MiB);
  photosSha = sha(join(dir, "photos.raw"));
});

after(() => {
  try {
    umount();
  } catch {}
  for (const l of loops) execFileSync("losetup", ["-d", l.path]);
  rmSync(dir, { recursive: true, force: true });
});

describe("data partition on real block devices", () => {
  const devices = () => [photos, blank];

  it("without flatgrid.format=blank, nothing is written and the node says why", async () => {
    const s = await setUpDataPartition({ format: "never", mountpoint, devices });
    assert.equal(s.state, "ram");
    assert.match(s.reason, new RegExp(`${blank.name} is blank, and flatgrid.format=blank`));
    assert.match(s.reason, /node state is kept in RAM and lost at reboot/);
    const byDevice = new Map(s.disks.map((d) => [d.device, d.verdict]));
    assert.match(byDevice.get(photos.path) ?? "", /ext4 file system labelled "photos": not ours/);
    assert.match(byDevice.get(blank.path) ?? "", /not formatted, because flatgrid.format/);
    assert.equal(sha(join(dir, "photos.raw")), photosSha);
    assert.ok(!existsSync(join(mountpoint, "lost+found")));
  });

  it("with flatgrid.format=blank, the blank disk is formatted and mounted; the other is untouched", async () => {
    const s = await setUpDataPartition({ format: "blank", mountpoint, devices });
    assert.equal(s.state, "mounted", s.reason);
    assert.equal(s.device, blank.path);
    assert.equal(s.formatted, true);
    const mounts = readFileSync("/proc/mounts", "utf8");
    assert.ok(mounts.includes(`${blank.path} ${mountpoint} ext4`), "mounted as ext4");
    writeFileSync(join(mountpoint, "node-id"), "kept\n");
    umount();
    assert.equal(sha(join(dir, "photos.raw")), photosSha, "the foreign disk was not written");
  });

  it("at the next boot the same partition is found and mounted, not formatted again", async () => {
    const s = await setUpDataPartition({ format: "blank", mountpoint, devices });
    assert.equal(s.state, "mounted", s.reason);
    assert.equal(s.device, blank.path);
    assert.equal(s.formatted, false);
    assert.equal(readFileSync(join(mountpoint, "node-id"), "utf8"), "kept\n");
    // A supervisor restarted by init finds it mounted and leaves it be (no e2fsck on it).
    const again = await setUpDataPartition({ format: "blank", mountpoint, devices });
    assert.equal(again.state, "mounted");
    assert.equal(again.device, blank.path);
    assert.match(again.reason, /already, by an earlier start of the supervisor/);
    umount();
  });

  it("a data partition that cannot be mounted leaves the node in RAM with the reason", async () => {
    // The mountpoint is a file: the mount fails after e2fsck passed.
    const file = join(dir, "not-a-dir");
    writeFileSync(file, "");
    const s = await setUpDataPartition({ format: "blank", mountpoint: file, devices });
    assert.equal(s.state, "ram");
    assert.match(s.reason, new RegExp(`the data partition ${blank.path} could not be set up`));
    const verdict = s.disks.find((d) => d.device === blank.path)?.verdict ?? "";
    assert.match(verdict, /not mounted:/);
  });
});

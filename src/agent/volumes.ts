import { execFile } from "node:child_process";
import {
  closeSync,
  existsSync,
  fsyncSync,
  ftruncateSync,
  openSync,
  renameSync,
  rmSync,
} from "node:fs";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * An instance's data volume: a sparse file on the node's data partition, formatted ext4 by
 * the agent (mke2fs on the file itself: no loop device, no mount on the node), attached to
 * its VM as a writable virtio disk (/dev/vdb) that the guest mounts at /data. It is made
 * once and kept across restarts of the VM and of the agent; it goes with the instance's
 * directory when the instance leaves the node. Replication to a second node comes later.
 */

export class VolumeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "VolumeError";
  }
}

/**
 * The volume at `path`, made when missing; says whether it was made now. mke2fs runs
 * asynchronously: the grid service's event loop keeps its leases alive meanwhile.
 */
export async function ensureVolume(path: string, mib: number): Promise<"made" | "kept"> {
  if (existsSync(path)) return "kept";
  if (!Number.isInteger(mib) || mib < 1)
    throw new VolumeError(`a data volume of ${mib} MiB is not a size`);
  // Made aside and renamed: a crash halfway leaves no half-made volume to be taken as one.
  const making = `${path}.making`;
  rmSync(making, { force: true });
  let fd: number | null = null;
  try {
    fd = openSync(making, "w", 0o600);
    ftruncateSync(fd, mib * 1024 * 1024);
  } catch (err) {
    rmSync(making, { force: true });
    throw new VolumeError(`cannot make a ${mib} MiB data volume: ${(err as Error).message}`);
  } finally {
    if (fd !== null) closeSync(fd);
  }
  try {
    await run(
      "mke2fs",
      // No reserved blocks (the guest is root anyway); the journal kept (its data matters),
      // and not zeroed up front: a sparse file reads zeros already.
      [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        "data",
        "-m",
        "0",
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1",
        making,
      ],
      { encoding: "utf8", timeout: 60_000 },
    );
  } catch (err) {
    rmSync(making, { force: true });
    const e = err as Error & { stderr?: string };
    throw new VolumeError(
      `cannot format the data volume: mke2fs: ${e.stderr?.trim() || e.message}`,
    );
  }
  const sync = openSync(making, "r");
  fsyncSync(sync);
  closeSync(sync);
  renameSync(making, path);
  return "made";
}

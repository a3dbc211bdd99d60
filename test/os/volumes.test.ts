// An instance's data volume as the agent makes it: a sparse file formatted with the real
// mke2fs, made once and then kept. The cluster test attaches one to a VM and kills its VMM.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ensureVolume, VolumeError } from "../../src/agent/index.js";

describe("data volumes", () => {
  const dir = mkdtempSync(join(tmpdir(), "flatgrid-volumes-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("made once: a sparse ext4 labelled data, of the size asked; then kept as it is", async () => {
    const path = join(dir, "volume.ext4");
    assert.equal(await ensureVolume(path, 64), "made");
    const st = statSync(path);
    assert.equal(st.size, 64 * 2 ** 20);
    assert.ok(st.blocks * 512 < st.size / 2, `sparse: ${st.blocks * 512} bytes allocated`);
    assert.equal(st.mode & 0o777, 0o600);
    const header = execFileSync("dumpe2fs", ["-h", path], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    assert.match(header, /Filesystem volume name: +data/);
    assert.match(header, /Reserved block count: +0$/m);
    assert.match(header, /has_journal/);
    assert.equal(await ensureVolume(path, 128), "kept", "an existing volume is never made again");
    assert.equal(statSync(path).ino, st.ino);
    assert.equal(statSync(path).size, 64 * 2 ** 20);
    assert.deepEqual(readdirSync(dir), ["volume.ext4"], "nothing half-made is left");
  });

  it("what cannot be made says why, and leaves nothing behind", async () => {
    await assert.rejects(ensureVolume(join(dir, "zero.ext4"), 0), VolumeError);
    // No mke2fs to be found: the error says so, and the half-made file goes.
    const path = process.env.PATH;
    process.env.PATH = "/nonexistent";
    try {
      await assert.rejects(
        ensureVolume(join(dir, "v.ext4"), 64),
        /cannot format the data volume: mke2fs: spawn mke2fs ENOENT/,
      );
    } finally {
      process.env.PATH = path;
    }
    assert.ok(!existsSync(join(dir, "v.ext4")) && !existsSync(join(dir, "v.ext4.making")));
    await assert.rejects(
      ensureVolume(join(dir, "no-such-dir", "v.ext4"), 64),
      (err: Error) =>
        err instanceof VolumeError && /cannot make a 64 MiB data volume: ENOENT/.test(err.message),
    );
  });
});

// Class images for a node without a catalog, from peers given here as functions; the real
// path, over the peer API's mutual TLS: test/cluster/apps.test.ts (node-3 has no catalog).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ClassImages, type ImagePeers } from "../../src/agent/index.js";

const scratch = mkdtempSync(join(tmpdir(), "flatgrid-images-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");
const parts = { kernel: "the kernel", initrd: "the initrd", rootfs: "the web root disk" };
const manifest = JSON.stringify({
  kernel: { sha256: sha(parts.kernel) },
  initrd: { sha256: sha(parts.initrd) },
  classes: {
    "web@1": {
      id: sha(parts.rootfs),
      rootfs: "web.ext4",
      sha256: sha(parts.rootfs),
      kernel: "vmlinuz",
      initrd: "initrd.img",
    },
  },
});

/** Peers that serve the parts above, or other bytes for one of them; counts their work. */
function peers(tamper: string | null = null) {
  const asked: string[] = [];
  const bySha = new Map(Object.values(parts).map((p) => [sha(p), p]));
  const source: ImagePeers = {
    manifest: async () => manifest,
    part: async (sha256, dest) => {
      asked.push(sha256);
      const bytes = bySha.get(sha256);
      if (!bytes) throw new Error("no peer has it");
      writeFileSync(dest, sha256 === tamper ? `${bytes} and something else` : bytes);
    },
  };
  return { source, asked };
}

describe("class images from peers", () => {
  it("a node without a catalog gets the manifest and the parts, once, into its cache", async () => {
    const dir = join(scratch, "a");
    const { source, asked } = peers();
    const images = new ClassImages(join(dir, "no-catalog"), join(dir, "cache"), source);
    const [one, two] = await Promise.all([images.resolve("web@1"), images.resolve("web@1")]);
    assert.deepEqual(one, two);
    assert.equal(one.rootfs, join(dir, "cache", sha(parts.rootfs)));
    assert.equal(asked.length, 3, "each part fetched once, though asked for twice at once");
    await images.resolve("web@1");
    assert.equal(asked.length, 3, "then kept");
    assert.equal(await images.holds(sha(parts.kernel)), join(dir, "cache", sha(parts.kernel)));
    assert.equal(images.manifestText(), manifest);
  });

  it("keeps nothing whose bytes do not match the manifest", async () => {
    const dir = join(scratch, "b");
    const { source } = peers(sha(parts.rootfs));
    const images = new ClassImages(join(dir, "no-catalog"), join(dir, "cache"), source);
    await assert.rejects(images.resolve("web@1"), /is damaged: its sha256 is/);
    const kept = readdirSync(join(dir, "cache"));
    assert.ok(!kept.includes(sha(parts.rootfs)), `kept: ${kept.join(", ")}`);
    assert.ok(!kept.some((f) => f.endsWith(".part")), "no partial file left");
  });

  it("a node with its own catalog uses it and asks no peer", async () => {
    const dir = join(scratch, "c");
    mkdirSync(join(dir, "catalog"), { recursive: true });
    writeFileSync(join(dir, "catalog", "manifest.json"), manifest);
    writeFileSync(join(dir, "catalog", "vmlinuz"), parts.kernel);
    writeFileSync(join(dir, "catalog", "initrd.img"), parts.initrd);
    writeFileSync(join(dir, "catalog", "web.ext4"), parts.rootfs);
    const { source, asked } = peers();
    const images = new ClassImages(join(dir, "catalog"), join(dir, "cache"), source);
    const p = await images.resolve("web@1");
    assert.equal(p.rootfs, join(dir, "catalog", "web.ext4"));
    assert.equal(asked.length, 0);
    assert.ok(!existsSync(join(dir, "cache")));
    assert.equal(await images.holds(sha(parts.rootfs)), join(dir, "catalog", "web.ext4"));
    assert.equal(await images.holds(sha("something else")), null);
  });

  it("says so when no peer has what it lacks", async () => {
    const dir = join(scratch, "d");
    const images = new ClassImages(join(dir, "no-catalog"), join(dir, "cache"), {
      manifest: async () => {
        throw new Error("the catalog manifest: no other member of the grid to ask");
      },
      part: async () => {},
    });
    await assert.rejects(images.resolve("web@1"), /no other member of the grid to ask/);
  });
});

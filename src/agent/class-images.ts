import { createHash } from "node:crypto";
import { createReadStream, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { ClassParts } from "./instance-plan.js";

/**
 * The appliance class images on this node: a catalog directory as `npm run catalog` writes it
 * (manifest.json with the sha256 of every part, then the parts). A part is used only once
 * its bytes match the manifest, hashed once per file version (size and mtime) off the event
 * loop: a 1 GiB root disk takes seconds, and the grid's heartbeat must not wait for it.
 */

interface Manifest {
  kernel: { sha256: string };
  initrd: { sha256: string };
  classes: Record<
    string,
    { id: string; rootfs: string; sha256: string; kernel: string; initrd: string }
  >;
}

export class ClassImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ClassImageError";
  }
}

export class ClassImages {
  private manifest: Manifest | null = null;
  private manifestStamp = "";
  /** path -> the check of one file version ("size:mtime"). */
  private readonly checks = new Map<string, { stamp: string; done: Promise<void> }>();

  constructor(readonly dir: string) {}

  private readManifest(): Manifest {
    const path = join(this.dir, "manifest.json");
    let stamp: string;
    try {
      const st = statSync(path);
      stamp = `${st.size}:${st.mtimeMs}`;
    } catch {
      throw new ClassImageError(
        `no appliance catalog on this node: ${path} is missing (build one with \`npm run catalog\` and copy it there)`,
      );
    }
    if (this.manifest && stamp === this.manifestStamp) return this.manifest;
    try {
      const m = JSON.parse(readFileSync(path, "utf8")) as Manifest;
      if (!m.classes || !m.kernel?.sha256 || !m.initrd?.sha256)
        throw new Error("not a catalog manifest");
      this.manifest = m;
      this.manifestStamp = stamp;
      return m;
    } catch (err) {
      throw new ClassImageError(`${path}: ${(err as Error).message}`);
    }
  }

  private verify(path: string, sha256: string): Promise<void> {
    let stamp: string;
    try {
      const st = statSync(path);
      stamp = `${st.size}:${st.mtimeMs}:${sha256}`;
    } catch {
      return Promise.reject(new ClassImageError(`${path} is missing from the catalog`));
    }
    const known = this.checks.get(path);
    if (known?.stamp === stamp) return known.done;
    const done = new Promise<void>((resolve, reject) => {
      const hash = createHash("sha256");
      createReadStream(path, { highWaterMark: 1 << 20 })
        .on("data", (chunk) => hash.update(chunk))
        .on("error", (err) => reject(new ClassImageError(`${path}: ${err.message}`)))
        .on("end", () => {
          const got = hash.digest("hex");
          if (got === sha256) resolve();
          else
            reject(
              new ClassImageError(
                `${path} is damaged: its sha256 is ${got.slice(0, 16)}…, the manifest says ${sha256.slice(0, 16)}…`,
              ),
            );
        });
    });
    // A failed check is not cached: the next try reads the file again.
    done.catch(() => this.checks.delete(path));
    this.checks.set(path, { stamp, done });
    return done;
  }

  /** The parts of `name@version`, once every one has been checked. */
  async resolve(ref: string): Promise<ClassParts> {
    const m = this.readManifest();
    const c = m.classes[ref];
    if (!c)
      throw new ClassImageError(
        `class ${ref} is not in this node's catalog (${this.dir} has ${Object.keys(m.classes).sort().join(", ") || "none"})`,
      );
    const parts: ClassParts = {
      kernel: join(this.dir, c.kernel),
      initrd: join(this.dir, c.initrd),
      rootfs: join(this.dir, c.rootfs),
    };
    await Promise.all([
      this.verify(parts.kernel, m.kernel.sha256),
      this.verify(parts.initrd as string, m.initrd.sha256),
      this.verify(parts.rootfs, c.sha256),
    ]);
    return parts;
  }
}

import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  createReadStream,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
// Not vmm/index.js: the agent loads no koffi.
import { isBzImage } from "../vmm/boot/image-bytes.js";
import type { ClassParts } from "./instance-plan.js";

/**
 * The appliance class images on this node: a catalog directory as `npm run catalog` writes it
 * (manifest.json with the sha256 of every part, then the parts). A part is used only once
 * its bytes match the manifest, hashed once per file version (size and mtime) off the event
 * loop: a 1 GiB root disk takes seconds, and the grid's heartbeat must not wait for it.
 *
 * A node without the catalog (booted over PXE or from a USB stick, with no catalog disk)
 * gets the manifest and the parts from its peers, by sha256, into its image cache on the
 * data partition: a part is kept only once its bytes match, so a peer cannot slip in
 * anything else; the manifest comes from a member of the grid over mutual TLS.
 *
 * A class's kernel boots unpacked where it can: its vmlinux, made once per kernel into the
 * image cache (`flatgrid kernel unpack`, in a child process), goes to the VMM when it has a
 * PVH entry, so that no decompressor runs in the guest at each start (on the simulator's
 * emulated CPUs the gain is inside the noise; see README). The unpacked file's sha256 is
 * kept beside it and checked like any part's; a kernel that cannot be unpacked boots as it is.
 */

/** Where the bytes of a part, or the manifest, come from when this node lacks them. */
export interface ImagePeers {
  /** The catalog manifest of some member of the grid, as text. */
  manifest(): Promise<string>;
  /** Writes the part with this sha256 to `dest` (unchecked; the caller checks it). */
  part(sha256: string, dest: string): Promise<void>;
}

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

const SHA256 = /^[0-9a-f]{64}$/;
const CLI = fileURLToPath(new URL("../cli/main.js", import.meta.url));
const run = promisify(execFile);
/** A missing class is asked of peers again after this long. */
const MANIFEST_RETRY_MS = 30_000;

export class ClassImages {
  private manifest: Manifest | null = null;
  private manifestStamp = "";
  /** path -> the check of one file version ("size:mtime"). */
  private readonly checks = new Map<string, { stamp: string; done: Promise<void> }>();
  /** sha256 -> a fetch from peers under way. */
  private readonly fetches = new Map<string, Promise<string>>();
  private manifestFetchedAt = 0;
  /** Kernel sha256 -> the file to boot it from (its vmlinux, or itself). */
  private readonly bootable = new Map<string, Promise<string>>();

  /**
   * `dir`: this node's catalog (read-only; may be missing). `cache`: where parts from peers
   * go, named by sha256. `peers`: how to reach them (none: the local catalog only).
   */
  constructor(
    readonly dir: string,
    readonly cache: string | null = null,
    private readonly peers: ImagePeers | null = null,
    private readonly log: (level: "info" | "warn", msg: string) => void = () => {},
  ) {}

  /** This node's own catalog has a manifest. */
  get hasCatalog(): boolean {
    return existsSync(join(this.dir, "manifest.json"));
  }

  /** The manifest this node goes by, as text: its catalog's, else the one from its peers. */
  manifestText(): string | null {
    for (const path of this.manifestPaths()) {
      try {
        return readFileSync(path, "utf8");
      } catch {
        // Next.
      }
    }
    return null;
  }

  private manifestPaths(): string[] {
    return [
      join(this.dir, "manifest.json"),
      ...(this.cache ? [join(this.cache, "manifest.json")] : []),
    ];
  }

  private readManifest(): Manifest {
    const path = this.manifestPaths().find((p) => existsSync(p)) ?? join(this.dir, "manifest.json");
    let stamp: string;
    try {
      const st = statSync(path);
      // The path too: a catalog disk that appears later takes over from the peers' manifest.
      stamp = `${path}:${st.size}:${st.mtimeMs}`;
    } catch {
      throw new ClassImageError(
        `no appliance catalog on this node: ${path} is missing${this.peers ? ", and no peer has given one yet" : ""} (a disk labelled FGCATALOG with \`npm run catalog\`'s output)`,
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
    const done = fileSha256(path).then(
      (got) => {
        if (got !== sha256)
          throw new ClassImageError(
            `${path} is damaged: its sha256 is ${got.slice(0, 16)}…, the manifest says ${sha256.slice(0, 16)}…`,
          );
      },
      (err: Error) => {
        throw new ClassImageError(`${path}: ${err.message}`);
      },
    );
    // A failed check is not cached: the next try reads the file again.
    done.catch(() => this.checks.delete(path));
    this.checks.set(path, { stamp, done });
    return done;
  }

  /** Asks the peers for their manifest, when this node has no catalog of its own. */
  private async fetchManifest(force: boolean): Promise<void> {
    if (!this.peers || !this.cache || this.hasCatalog) return;
    const cached = join(this.cache, "manifest.json");
    const have = existsSync(cached);
    if (have && !force) return;
    if (have && Date.now() - this.manifestFetchedAt < MANIFEST_RETRY_MS) return;
    this.manifestFetchedAt = Date.now();
    const text = await this.peers.manifest();
    try {
      const m = JSON.parse(text) as Manifest;
      if (
        !m.classes ||
        !SHA256.test(m.kernel?.sha256 ?? "") ||
        !SHA256.test(m.initrd?.sha256 ?? "")
      )
        throw new Error("not a catalog manifest");
      for (const c of Object.values(m.classes))
        if (!SHA256.test(c.sha256)) throw new Error("a class without a sha256");
    } catch (err) {
      throw new ClassImageError(`the manifest from a peer: ${(err as Error).message}`);
    }
    mkdirSync(this.cache, { recursive: true });
    writeFileSync(`${cached}.new`, text);
    renameSync(`${cached}.new`, cached);
  }

  /**
   * A part by its sha256: the catalog's own file when it is there and sound, else the image
   * cache's, else fetched from peers into the cache and checked.
   */
  private async part(file: string, sha256: string): Promise<string> {
    const local = join(this.dir, file);
    if (this.hasCatalog || !this.peers || !this.cache) {
      await this.verify(local, sha256);
      return local;
    }
    const cached = join(this.cache, sha256);
    try {
      await this.verify(cached, sha256);
      return cached;
    } catch {
      // Not here, or damaged: from the peers.
    }
    let fetching = this.fetches.get(sha256);
    if (!fetching) {
      const peers = this.peers;
      const cache = this.cache;
      fetching = (async () => {
        mkdirSync(cache, { recursive: true });
        const partial = `${cached}.part`;
        try {
          await peers.part(sha256, partial);
          await this.verify(partial, sha256);
          renameSync(partial, cached);
          // Checked as it arrived: not hashed again under its new name.
          const st = statSync(cached);
          this.checks.set(cached, {
            stamp: `${st.size}:${st.mtimeMs}:${sha256}`,
            done: Promise.resolve(),
          });
        } finally {
          rmSync(partial, { force: true });
          this.checks.delete(partial);
        }
        return cached;
      })();
      this.fetches.set(sha256, fetching);
      void fetching.then(
        () => this.fetches.delete(sha256),
        () => this.fetches.delete(sha256),
      );
    }
    return fetching;
  }

  /** The path of a part this node holds, checked, by its sha256; null when it has none. */
  async holds(sha256: string): Promise<string | null> {
    if (!SHA256.test(sha256)) return null;
    let m: Manifest;
    try {
      m = this.readManifest();
    } catch {
      return null;
    }
    const candidates: string[] = [];
    if (this.hasCatalog) {
      for (const c of Object.values(m.classes)) {
        if (m.kernel.sha256 === sha256) candidates.push(join(this.dir, c.kernel));
        if (m.initrd.sha256 === sha256) candidates.push(join(this.dir, c.initrd));
        if (c.sha256 === sha256) candidates.push(join(this.dir, c.rootfs));
      }
    }
    if (this.cache) candidates.push(join(this.cache, sha256));
    for (const path of candidates) {
      try {
        await this.verify(path, sha256);
        return path;
      } catch {
        // Next.
      }
    }
    return null;
  }

  /** The parts of `name@version`, once every one has been checked. */
  async resolve(ref: string): Promise<ClassParts> {
    await this.fetchManifest(false);
    let m = this.readManifest();
    if (!m.classes[ref] && this.peers && !this.hasCatalog) {
      await this.fetchManifest(true);
      m = this.readManifest();
    }
    const c = m.classes[ref];
    if (!c)
      throw new ClassImageError(
        `class ${ref} is not in this node's catalog (${this.hasCatalog || !this.cache ? this.dir : "from its peers"} has ${Object.keys(m.classes).sort().join(", ") || "none"})`,
      );
    // Every part settled before an error is reported: no fetch goes on behind the caller.
    const [kernel, initrd, rootfs] = await Promise.allSettled([
      this.part(c.kernel, m.kernel.sha256),
      this.part(c.initrd, m.initrd.sha256),
      this.part(c.rootfs, c.sha256),
    ]);
    for (const r of [kernel, initrd, rootfs]) if (r.status === "rejected") throw r.reason;
    const got = (r: PromiseSettledResult<string>) => (r as PromiseFulfilledResult<string>).value;
    return {
      kernel: await this.bootKernel(got(kernel), m.kernel.sha256),
      initrd: got(initrd),
      rootfs: got(rootfs),
    };
  }

  /** The file to boot a checked kernel part from: its vmlinux where it has one with PVH. */
  bootKernel(path: string, sha256: string): Promise<string> {
    if (!this.cache || !isBzImageFile(path)) return Promise.resolve(path);
    let bootable = this.bootable.get(sha256);
    if (!bootable) {
      bootable = this.unpack(path, sha256, this.cache);
      this.bootable.set(sha256, bootable);
    }
    return bootable;
  }

  private async unpack(path: string, sha256: string, cache: string): Promise<string> {
    const out = join(cache, `${sha256}.vmlinux`);
    const record = `${out}.sha256`;
    try {
      await this.verify(out, readFileSync(record, "utf8").trim());
      return out;
    } catch {
      // Not unpacked yet, or damaged: again.
    }
    try {
      mkdirSync(cache, { recursive: true });
      rmSync(record, { force: true });
      const { stdout } = await run(process.execPath, [CLI, "kernel", "unpack", path, "--out", out]);
      if (!/PVH entry/.test(stdout)) {
        rmSync(out, { force: true });
        this.log(
          "info",
          `kernel ${sha256.slice(0, 12)}: its vmlinux has no PVH entry: booting the bzImage`,
        );
        return path;
      }
      const digest = await fileSha256(out);
      writeFileSync(`${record}.new`, `${digest}\n`);
      renameSync(`${record}.new`, record);
      this.log("info", `kernel ${sha256.slice(0, 12)}: unpacked to ${out}, booted through PVH`);
      return out;
    } catch (err) {
      const e = err as Error & { stderr?: string };
      this.log(
        "warn",
        `kernel ${sha256.slice(0, 12)}: cannot unpack (${(e.stderr || e.message).trim()}): booting the bzImage`,
      );
      rmSync(out, { force: true });
      return path;
    }
  }
}

/** Whether the file is a bzImage (anything else boots as it is). */
function isBzImageFile(path: string): boolean {
  const head = Buffer.alloc(0x1000);
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return false;
  }
  try {
    return isBzImage(head.subarray(0, readSync(fd, head, 0, head.length, 0)));
  } finally {
    closeSync(fd);
  }
}

function fileSha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    createReadStream(path, { highWaterMark: 1 << 20 })
      .on("data", (chunk) => hash.update(chunk))
      .on("error", reject)
      .on("end", () => resolve(hash.digest("hex")));
  });
}

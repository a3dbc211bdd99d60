import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../os/index.js";

/**
 * What a node keeps on its data partition so that, rebooted, it comes back as itself: its
 * id, the grid it belongs to, its key and certificates, the etcd endpoints it last knew, and
 * etcd's data. Every file is written whole (temporary file, fsync, rename): a power cut
 * leaves the old or the new version, never half of one.
 */

export interface StoredGrid {
  id: string;
  name: string;
  caFingerprint: string;
  joinedAt: string;
  /** This node created the grid (so its etcd started a new cluster). */
  creator: boolean;
}

export interface NodeTls {
  caPem: string;
  certPem: string;
  keyPem: string;
}

export class NodeStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NodeStateError";
  }
}

export class NodeState {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  private readJson<T>(name: string): T | null {
    const file = this.path(name);
    if (!existsSync(file)) return null;
    try {
      return JSON.parse(readFileSync(file, "utf8")) as T;
    } catch (err) {
      throw new NodeStateError(`${file} is damaged: ${(err as Error).message}`);
    }
  }

  /** The node's id, made once on first boot. */
  nodeId(): string {
    const file = this.path("node-id");
    if (existsSync(file)) {
      const id = readFileSync(file, "utf8").trim();
      if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(id))
        throw new NodeStateError(`${file} holds no node id`);
      return id;
    }
    const id = randomUUID();
    writeFileAtomic(file, `${id}\n`);
    return id;
  }

  grid(): StoredGrid | null {
    return this.readJson<StoredGrid>("grid.json");
  }

  tls(): NodeTls | null {
    const files = ["ca.pem", "node.pem", "node.key"].map((f) => this.path("tls", f));
    if (!files.every((f) => existsSync(f))) return null;
    const [caPem, certPem, keyPem] = files.map((f) => readFileSync(f, "utf8")) as [
      string,
      string,
      string,
    ];
    return { caPem, certPem, keyPem };
  }

  tlsPaths(): { ca: string; cert: string; key: string } {
    return {
      ca: this.path("tls", "ca.pem"),
      cert: this.path("tls", "node.pem"),
      key: this.path("tls", "node.key"),
    };
  }

  /** Saves the grid membership; the TLS files first, so a saved grid always has them. */
  saveMembership(grid: StoredGrid, tls: NodeTls): void {
    this.saveTls(tls);
    writeFileAtomic(this.path("grid.json"), `${JSON.stringify(grid, null, 2)}\n`);
  }

  saveTls(tls: NodeTls): void {
    const paths = this.tlsPaths();
    writeFileAtomic(paths.key, tls.keyPem, 0o600);
    writeFileAtomic(paths.cert, tls.certPem);
    writeFileAtomic(paths.ca, tls.caPem);
  }

  endpoints(): string[] {
    return this.readJson<string[]>("etcd-endpoints.json") ?? [];
  }

  saveEndpoints(endpoints: string[]): void {
    writeFileAtomic(this.path("etcd-endpoints.json"), `${JSON.stringify(endpoints)}\n`);
  }

  etcdDataDir(): string {
    return this.path("etcd");
  }

  hasEtcdData(): boolean {
    return existsSync(join(this.etcdDataDir(), "member"));
  }

  /** Drops etcd's data: the member was removed from the cluster and must come back fresh. */
  wipeEtcdData(): void {
    rmSync(this.etcdDataDir(), { recursive: true, force: true });
  }
}

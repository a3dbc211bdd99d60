import { EventEmitter } from "node:events";
import type { Etcd3, IOperation, Watcher } from "etcd3";
import { keys } from "./layout.js";
import { LeaseKeeper } from "./lease-keeper.js";

/**
 * The controller election: one key, created by whoever gets there first, on that
 * candidate's lease. The key's create revision is the controller's term and its fencing
 * token: every controller write is a transaction that succeeds only while the election key
 * still has that create revision. A controller that was paused or cut off, whose lease ran
 * out and whose key someone else now holds, can try to write but never succeeds.
 */

export class DeposedError extends Error {
  constructor(readonly term: number) {
    super(`controller term ${term} is over: the write was rejected`);
    this.name = "DeposedError";
  }
}

export interface ElectionEvents {
  elected: [term: number];
  deposed: [term: number, reason: string];
  /** Another node holds the election (or nobody does: null). */
  leader: [nodeId: string | null];
}

export class Election extends EventEmitter<ElectionEvents> {
  private lease: LeaseKeeper;
  private termValue: number | null = null;
  private watcher: Watcher | null = null;
  private stopped = false;
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  leaderId: string | null = null;

  constructor(
    private readonly client: Etcd3,
    private readonly nodeId: string,
    ttlSeconds: number,
    private readonly log: (msg: string) => void = () => {},
  ) {
    super();
    this.lease = new LeaseKeeper(client, ttlSeconds);
    this.lease.on("lost", (reason) => {
      this.depose(`its lease was lost: ${reason}`);
      this.poke();
    });
  }

  /** The current term while this node is controller, else null. */
  get term(): number | null {
    return this.termValue !== null && this.lease.held ? this.termValue : null;
  }

  start(): void {
    this.loop ??= this.campaign();
  }

  private poke(): void {
    this.wake?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = null;
        resolve();
      };
    });
  }

  private async campaign(): Promise<void> {
    await this.watchKey();
    while (!this.stopped) {
      try {
        if (this.termValue === null) await this.tryOnce();
      } catch (err) {
        this.log(`election: ${(err as Error).message}`);
      }
      // Woken at once when the key goes or the lease is lost; the timeout is a safety net
      // for missed watch events.
      await this.sleep(this.termValue === null ? 400 : 5000);
    }
  }

  private async watchKey(): Promise<void> {
    try {
      this.watcher = await this.client.watch().key(keys.election).create();
      this.watcher.on("delete", () => {
        this.setLeader(null);
        this.poke();
      });
      this.watcher.on("put", (kv) => this.setLeader(kv.value.toString()));
      this.watcher.on("error", () => {});
    } catch (err) {
      this.log(`election: cannot watch the election key yet: ${(err as Error).message}`);
    }
  }

  private setLeader(id: string | null): void {
    if (id === this.leaderId) return;
    this.leaderId = id;
    this.emit("leader", id);
  }

  private async tryOnce(): Promise<void> {
    const leaseId = this.lease.leaseId ?? (await this.lease.grant());
    const res = await this.client
      .if(keys.election, "Create", "==", 0)
      .then(this.client.put(keys.election).value(this.nodeId).lease(leaseId))
      .else(this.client.get(keys.election))
      .commit();
    if (res.succeeded) {
      // The key was created by this transaction: its create revision is the txn's revision.
      this.termValue = Number(res.header.revision);
      this.setLeader(this.nodeId);
      this.log(`election: this node is controller, term ${this.termValue}`);
      this.emit("elected", this.termValue);
      return;
    }
    const kv = res.responses[0]?.response_range?.kvs?.[0];
    const holder = kv?.value.toString() ?? null;
    if (holder === this.nodeId && kv && kv.lease === leaseId) {
      // Our own key from before a restart of this loop: take the term back.
      this.termValue = Number(kv.create_revision);
      this.setLeader(this.nodeId);
      this.emit("elected", this.termValue);
      return;
    }
    this.setLeader(holder);
  }

  private depose(reason: string): void {
    const term = this.termValue;
    if (term === null) return;
    this.termValue = null;
    if (this.leaderId === this.nodeId) this.setLeader(null);
    this.log(`election: deposed from term ${term}: ${reason}`);
    this.emit("deposed", term, reason);
  }

  /**
   * Runs operations only if this node still holds the term it thinks it holds. Throws
   * DeposedError (and steps down) when the election key is no longer ours.
   */
  async guarded(...ops: IOperation[]): Promise<void> {
    const term = this.termValue;
    if (term === null || !this.lease.held) throw new DeposedError(term ?? 0);
    const res = await this.client
      .if(keys.election, "Create", "==", term)
      .then(...ops)
      .commit();
    if (!res.succeeded) {
      this.depose("a fenced write was rejected");
      throw new DeposedError(term);
    }
  }

  /** Steps down and revokes the lease, so another node takes over at once. */
  async resign(): Promise<void> {
    this.stopped = true;
    this.poke();
    const wasLeader = this.termValue !== null;
    this.termValue = null;
    if (wasLeader) {
      await this.client
        .if(keys.election, "Value", "==", this.nodeId)
        .then(this.client.delete().key(keys.election))
        .commit()
        .catch(() => {});
    }
    await this.lease.release();
    await this.watcher?.cancel().catch(() => {});
    await this.loop?.catch(() => {});
  }
}

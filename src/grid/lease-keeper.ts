import { EventEmitter } from "node:events";
import type { Etcd3, Lease } from "etcd3";

/**
 * An etcd lease kept alive on a timer, with its validity judged locally: the lease counts
 * as held only until `ttl` after the send time of the last keepalive the server answered.
 * That errs on the safe side (the server's clock started later), so a node that cannot
 * reach etcd stops acting before anyone else can take over. The fencing transactions are
 * what make writes safe; this makes a cut-off node notice quickly.
 */
export interface LeaseKeeperEvents {
  lost: [reason: string];
}

export class LeaseKeeper extends EventEmitter<LeaseKeeperEvents> {
  private lease: Lease | null = null;
  private id: string | null = null;
  private validUntil = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    readonly ttlSeconds: number,
  ) {
    super();
  }

  get leaseId(): string | null {
    return this.held ? this.id : null;
  }

  get held(): boolean {
    return this.id !== null && Date.now() < this.validUntil;
  }

  /** Grants a new lease and keeps it alive until it is lost or released. */
  async grant(): Promise<string> {
    this.stopTimer();
    const sent = Date.now();
    const lease = this.client.lease(this.ttlSeconds, { autoKeepAlive: false });
    // etcd3 re-emits errors of its own keepalive stream; ours are handled below.
    lease.on("lost", () => {});
    const id = await lease.grant();
    this.lease = lease;
    this.id = id;
    this.validUntil = sent + this.ttlSeconds * 1000;
    this.schedule();
    return id;
  }

  private period(): number {
    return Math.max(200, (this.ttlSeconds * 1000) / 4);
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer = setTimeout(() => void this.keepalive(), this.period());
  }

  private async keepalive(): Promise<void> {
    const lease = this.lease;
    if (!lease || this.closed) return;
    const sent = Date.now();
    try {
      // A short deadline: a keepalive sent to a dead host must leave time for another try
      // (on another host) before the lease runs out.
      const res = await lease.keepaliveOnce({ deadline: sent + this.period() });
      if (lease !== this.lease) return;
      if (Number(res.TTL) <= 0) return this.lose("the lease expired on the server");
      this.validUntil = sent + this.ttlSeconds * 1000;
    } catch (err) {
      if (lease !== this.lease) return;
      if (Date.now() >= this.validUntil)
        return this.lose(
          `no keepalive answered for ${this.ttlSeconds} s: ${(err as Error).message}`,
        );
    }
    if (Date.now() >= this.validUntil) return this.lose(`keepalive answered too late`);
    this.schedule();
  }

  private lose(reason: string): void {
    this.stopTimer();
    this.lease = null;
    this.id = null;
    this.validUntil = 0;
    this.emit("lost", reason);
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Stops keeping the lease alive without revoking it: it runs out on its own. */
  abandon(): void {
    this.closed = true;
    this.stopTimer();
    this.lease = null;
    this.id = null;
    this.validUntil = 0;
  }

  /** Revokes the lease (best effort): what it held goes at once, not after the TTL. */
  async release(): Promise<void> {
    this.closed = true;
    this.stopTimer();
    const lease = this.lease;
    this.lease = null;
    this.id = null;
    this.validUntil = 0;
    if (lease) await lease.revoke({ deadline: Date.now() + 1000 }).catch(() => {});
  }
}

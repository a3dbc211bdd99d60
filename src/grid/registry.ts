import type { Etcd3 } from "etcd3";
import { keys, type NodeRecord } from "./layout.js";
import { LeaseKeeper } from "./lease-keeper.js";

/**
 * The node registry: each node keeps its own record under /flatgrid/v1/nodes/ on a lease of
 * its own, rewritten as it changes. A node that dies or loses the grid stops renewing; its
 * record goes when the lease runs out, which is how the rest of the grid sees it is gone.
 */
export class Registration {
  private lease: LeaseKeeper;
  private last = "";

  constructor(
    private readonly client: Etcd3,
    private readonly nodeId: string,
    ttlSeconds: number,
    private readonly log: (msg: string) => void,
  ) {
    this.lease = new LeaseKeeper(client, ttlSeconds);
    this.lease.on("lost", (reason) => {
      this.last = "";
      this.log(`registry: lease lost (${reason}); registering again`);
    });
  }

  get registered(): boolean {
    return this.lease.held && this.last !== "";
  }

  /** Writes the record if it changed or the lease is new. */
  async publish(record: NodeRecord): Promise<void> {
    let leaseId = this.lease.leaseId;
    if (!leaseId) {
      leaseId = await this.lease.grant();
      this.last = "";
    }
    const { updatedAt: _, ...stable } = record;
    const text = JSON.stringify(stable);
    if (text === this.last) return;
    await this.client.put(keys.node(this.nodeId)).value(JSON.stringify(record)).lease(leaseId);
    this.last = text;
  }

  /** Stops renewing without revoking: the record lives on until a new lease replaces it. */
  abandon(): void {
    this.lease.abandon();
  }

  async withdraw(): Promise<void> {
    await this.client
      .delete()
      .key(keys.node(this.nodeId))
      .catch(() => {});
    await this.lease.release();
  }
}

export async function listNodes(client: Etcd3): Promise<NodeRecord[]> {
  const all = await client.getAll().prefix(keys.nodes).strings();
  return Object.values(all)
    .map((v) => {
      try {
        return JSON.parse(v) as NodeRecord;
      } catch {
        return null;
      }
    })
    .filter((r): r is NodeRecord => r !== null)
    .sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
}

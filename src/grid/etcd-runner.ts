import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { ControlClient } from "../os/index.js";
import { writeFileAtomic } from "../os/index.js";
import { defineEtcd, type EtcdOptions, etcdServiceState, removeEtcd } from "./etcd-service.js";
import type { Assignment } from "./layout.js";
import type { NodeState } from "./node-state.js";

/**
 * This node's side of etcd membership: it runs etcd (through the supervisor) when the
 * controller assigned it a member, with the flags of that assignment, and stops it and drops
 * its data when the assignment is taken away (the member was removed). The assignment in use
 * is kept on disk, so that after a reboot etcd starts again before the grid is reachable:
 * when every node reboots at once, the voters must come up on their own.
 */
export class EtcdRunner {
  private applied: Assignment | null;

  constructor(
    private readonly state: NodeState,
    private readonly supervisor: ControlClient,
    private readonly base: Omit<EtcdOptions, "initialCluster" | "clusterState" | "dataDir">,
    private readonly log: (msg: string) => void,
  ) {
    this.applied = this.readApplied();
  }

  private file(): string {
    return join(this.state.dir, "etcd-assignment.json");
  }

  private readApplied(): Assignment | null {
    if (!existsSync(this.file())) return null;
    try {
      return JSON.parse(readFileSync(this.file(), "utf8")) as Assignment;
    } catch {
      return null;
    }
  }

  get role(): Assignment["role"] | null {
    return this.applied?.role ?? null;
  }

  /** At boot: a node that was a member starts etcd from its data before anything else. */
  async resume(): Promise<void> {
    if (this.applied && this.state.hasEtcdData()) {
      this.log(`etcd: starting the member kept on disk (${this.applied.role})`);
      await this.run(this.applied);
    }
  }

  private async run(a: Assignment): Promise<void> {
    await defineEtcd(this.supervisor, {
      ...this.base,
      dataDir: this.state.etcdDataDir(),
      initialCluster: a.initialCluster,
      clusterState: a.clusterState,
    });
  }

  /** Applies what the grid says; `assignment` undefined means "could not read". */
  async apply(assignment: Assignment | null): Promise<void> {
    if (assignment?.memberId && assignment.initialCluster) {
      const state = await etcdServiceState(this.supervisor);
      const changed = !this.applied || this.applied.memberId !== assignment.memberId;
      if (changed && this.applied && this.applied.memberId !== assignment.memberId) {
        // A new member id: this node was removed and added again; old data is of no use.
        await removeEtcd(this.supervisor);
        this.state.wipeEtcdData();
      }
      if (changed || state === null || state === "failed" || state === "stopped") {
        this.log(
          `etcd: ${state === null || changed ? "starting" : "restarting"} as ${assignment.role} (member ${assignment.memberId})`,
        );
        writeFileAtomic(this.file(), JSON.stringify(assignment));
        this.applied = assignment;
        await this.run(assignment);
      } else if (this.applied?.role !== assignment.role) {
        writeFileAtomic(this.file(), JSON.stringify(assignment));
        this.applied = assignment;
        this.log(`etcd: this node is now an etcd ${assignment.role}`);
      }
      return;
    }
    if (assignment === null && this.applied) {
      this.log(
        "etcd: this node's member was removed from the grid's etcd; stopping it and dropping its data",
      );
      await removeEtcd(this.supervisor);
      this.state.wipeEtcdData();
      rmSync(this.file(), { force: true });
      this.applied = null;
    }
  }

  /** Records the member the creator bootstrapped, without restarting it. */
  adopt(a: Assignment): void {
    writeFileAtomic(this.file(), JSON.stringify(a));
    this.applied = a;
  }

  /** Starts a brand-new one-member cluster: the creator of a grid. */
  async bootstrap(initialCluster: string): Promise<void> {
    this.state.wipeEtcdData();
    await defineEtcd(this.supervisor, {
      ...this.base,
      dataDir: this.state.etcdDataDir(),
      initialCluster,
      clusterState: "new",
    });
  }
}

import { type NodeCapacity, type Placed, place } from "./scheduler.js";

/**
 * Grid HA status: ok only if the grid could lose any one node and still run every
 * application, i.e. the instances of each node would all find a place on the others (with
 * the same rules the scheduler uses), and the grid's store keeps its quorum without that
 * node: a node that loses the grid stops its own VMs (fencing), so losing the quorum stops
 * every application on every node. Pure.
 */
export interface HaStatus {
  ok: boolean;
  /** One line per node whose loss would leave instances without a place. */
  problems: string[];
}

/** How many of `voters` etcd voters a write needs: a majority of them all, up or not. */
export function quorum(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

export function haStatus(
  nodes: readonly NodeCapacity[],
  placed: readonly Placed[],
  /** The node ids of the etcd voters. */
  voters: readonly string[],
): HaStatus {
  const alive = nodes.filter((n) => n.alive);
  const problems: string[] = [];
  if (alive.length < 2 && placed.length > 0)
    problems.push(
      `only ${alive.length} node${alive.length === 1 ? "" : "s"} up: losing it stops everything`,
    );
  else if (placed.length > 0) {
    const aliveVoters = voters.filter((v) => alive.some((n) => n.id === v));
    for (const lost of alive) {
      if (aliveVoters.includes(lost.id) && aliveVoters.length - 1 < quorum(voters.length)) {
        problems.push(
          voters.length === 1
            ? `losing node ${lost.id} would lose the grid's store (its only etcd voter): every node would stop its VMs; 3 nodes or more give 3 voters`
            : `losing node ${lost.id} would leave ${aliveVoters.length - 1} of ${voters.length} etcd voters up, short of a quorum: every node would stop its VMs`,
        );
        continue;
      }
      const displaced = placed.filter((p) => p.node === lost.id);
      if (displaced.length === 0) continue;
      const decisions = place({
        nodes: nodes.filter((n) => n.id !== lost.id),
        placed: placed.filter((p) => p.node !== lost.id),
        pending: displaced,
      });
      const homeless = decisions.filter((d) => d.node === null);
      if (homeless.length > 0)
        problems.push(
          `losing node ${lost.id} would leave ${homeless.map((d) => d.key).join(", ")} without a place (${homeless[0]?.reasons.join("; ")})`,
        );
    }
  }
  return { ok: problems.length === 0, problems };
}

/**
 * Whether a node creates a grid, joins one, or waits: one deterministic rule that every node
 * applies to what it has heard, so that nodes booting together create exactly one grid.
 * Pure.
 *
 *   1. A peer of the same grid name that is a member (it advertises a grid id and is ready)
 *      is joined: the grid exists.
 *   2. Before the discovery window has passed, wait: peers are still being heard.
 *   3. A peer of the same name that is creating the grid is waited for.
 *   4. Otherwise the lowest node id among this node and its peers still forming creates the
 *      grid; everyone else waits for it and then joins (rule 1).
 * A late arrival hears members (rule 1) or the creator (rule 3); a creator that dies before
 * it finishes stops being heard, and rule 4 picks the next one.
 */

export interface FormationPeer {
  nodeId: string;
  gridName: string;
  gridId: string;
  state: string;
  /** Address and port of its node API, when known. */
  address?: string;
  apiPort: number;
}

export type FormationDecision =
  | { action: "join"; peers: FormationPeer[]; gridId: string }
  | { action: "create" }
  | { action: "wait"; reason: string };

/**
 * How long a node listens after its own announcement before the rule may pick a creator.
 * Nodes that boot together must hear each other within it: their announcements are apart by
 * the start skew plus the random wait before the first probe (at most 250 ms), and each
 * arrives on the LAN within milliseconds. A node heard only after a creator was picked sees
 * it creating, or its grid, and joins (rules 1 and 3), so a longer window buys nothing
 * there; it only delays every grid's birth. The simulator's emulated nodes scale it.
 */
export const FORMATION_WINDOW_MS = 1000;

/** Advert states of a node in formation. */
export const STATES = {
  forming: "forming",
  creating: "creating",
  joining: "joining",
  ready: "ready",
} as const;

export function decide(
  self: { nodeId: string; gridName: string },
  peers: readonly FormationPeer[],
  elapsedMs: number,
  windowMs: number,
): FormationDecision {
  const same = peers.filter((p) => p.gridName === self.gridName && p.nodeId !== self.nodeId);
  const members = same
    .filter((p) => p.gridId !== "" && p.state === STATES.ready && p.address)
    .sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
  if (members.length > 0) {
    // Several grids of one name (made apart, during a partition) join the oldest known one
    // deterministically: the lowest grid id, so every node picks the same.
    const gridId = members.map((m) => m.gridId).sort()[0] ?? "";
    return { action: "join", gridId, peers: members.filter((m) => m.gridId === gridId) };
  }
  if (elapsedMs < windowMs)
    return {
      action: "wait",
      reason: `listening for peers (${Math.ceil((windowMs - elapsedMs) / 1000)} s)`,
    };
  const creating = same.filter((p) => p.state === STATES.creating);
  if (creating.length > 0)
    return {
      action: "wait",
      reason: `node ${creating[0]?.nodeId} is creating grid ${self.gridName}`,
    };
  const forming = same.filter((p) => p.state === STATES.forming).map((p) => p.nodeId);
  const lowest = [self.nodeId, ...forming].sort()[0];
  if (lowest === self.nodeId) return { action: "create" };
  return { action: "wait", reason: `node ${lowest} will create grid ${self.gridName}` };
}

/** Etcd voters wanted for a grid of `nodes` nodes: 1, 3, or 5 from 5 nodes up. */
export function targetVoters(nodes: number): number {
  if (nodes >= 5) return 5;
  if (nodes >= 3) return 3;
  return 1;
}

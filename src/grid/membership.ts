import type { Etcd3 } from "etcd3";
import { quorum } from "../controller/index.js";
import type { Election } from "./election.js";
import { peerUrl } from "./etcd-service.js";
import { targetVoters } from "./formation.js";
import { type Assignment, keys, type NodeRecord } from "./layout.js";

/**
 * The controller's care of etcd's membership: nodes join as learners one at a time and are
 * promoted once in sync, up to 3 voters (5 from 5 nodes up); the other nodes are clients. A
 * member whose node has been gone past a grace period is removed, and another node takes its
 * place. Every decision is first written as a fenced transaction, so a deposed controller
 * stops before it can call the membership API.
 */

export interface Member {
  id: string;
  name: string;
  peerUrls: string[];
  clientUrls: string[];
  learner: boolean;
}

export async function listMembers(client: Etcd3): Promise<Member[]> {
  const res = await client.cluster.memberList({});
  return res.members.map((m) => ({
    id: String(m.ID),
    name: m.name,
    peerUrls: m.peerURLs,
    clientUrls: m.clientURLs,
    learner: Boolean(m.isLearner),
  }));
}

/** Asks again, linearizably through a read first: the member list may be behind. */
async function isLearner(client: Etcd3, id: string): Promise<boolean> {
  await client.get(keys.grid).string();
  const members = await listMembers(client);
  return members.some((m) => m.id === id && m.learner);
}

export interface MembershipContext {
  client: Etcd3;
  election: Election;
  nodes: NodeRecord[];
  now: number;
  /** How long a member's node may be gone before the member is removed. */
  graceMs: number;
  /** How long an added learner may take to start before it is given up. */
  learnerStartMs: number;
  selfId: string;
  log: (msg: string) => void;
}

async function readAssignments(client: Etcd3): Promise<Map<string, Assignment>> {
  const all = await client.getAll().prefix(keys.assignments).strings();
  const map = new Map<string, Assignment>();
  for (const [k, v] of Object.entries(all)) {
    try {
      map.set(k.slice(keys.assignments.length), JSON.parse(v) as Assignment & { at?: number });
    } catch {}
  }
  return map;
}

/** Which node a member belongs to: its name once started, else the assignment naming it. */
function nodeOf(
  m: Member,
  assignments: Map<string, Assignment>,
  nodes: NodeRecord[],
): string | null {
  if (m.name) return m.name;
  for (const [id, a] of assignments) if (a.memberId === m.id) return id;
  const byUrl = nodes.find((n) => m.peerUrls.includes(peerUrl(n.address)));
  return byUrl?.nodeId ?? null;
}

/** One step towards the wanted membership; returns what it did, or null. */
export async function reconcileMembership(ctx: MembershipContext): Promise<string | null> {
  const { client, election, log } = ctx;
  const members = await listMembers(client);
  const assignments = await readAssignments(client);
  const downAll = await client.getAll().prefix(keys.downPrefix).strings();
  const alive = new Set(ctx.nodes.map((n) => n.nodeId));
  const voters = members.filter((m) => !m.learner);
  const learners = members.filter((m) => m.learner);

  // 1. Members whose node is gone: mark, and after the grace period remove.
  for (const m of members) {
    const node = nodeOf(m, assignments, ctx.nodes);
    const downKey = keys.downSince(node ?? `member-${m.id}`);
    const since = downAll[downKey] ? Number(downAll[downKey]) : null;
    if (node && (alive.has(node) || node === ctx.selfId)) {
      if (since !== null) await election.guarded(client.delete().key(downKey));
      continue;
    }
    if (since === null) {
      await election.guarded(client.put(downKey).value(String(ctx.now)));
      log(
        `membership: etcd member ${m.name || m.id} (node ${node ?? "unknown"}) is gone; removing it after ${ctx.graceMs} ms`,
      );
      continue;
    }
    if (ctx.now - since < ctx.graceMs) continue;
    // Only when the other voters are a majority of the voters now: then the removal can
    // commit without the "gone" member. Otherwise its success would prove the member alive,
    // and the grid would shrink around a node that is only slow (2 voters -> 1 did happen).
    if (!m.learner && voters.length - 1 < quorum(voters.length)) continue;
    const ops = [client.delete().key(downKey)];
    if (node) ops.push(client.delete().key(keys.assignment(node)));
    await election.guarded(...ops);
    await client.cluster.memberRemove({ ID: m.id });
    log(
      `membership: removed ${m.learner ? "learner" : "voter"} ${m.name || m.id} (node ${node ?? "unknown"} gone for ${Math.round((ctx.now - since) / 1000)} s)`,
    );
    return `removed ${node ?? m.id}`;
  }

  // 2. A learner that has started is promoted once etcd says it is in sync.
  for (const l of learners) {
    const node = nodeOf(l, assignments, ctx.nodes);
    const a = node ? assignments.get(node) : undefined;
    if (!l.name) {
      const at = (a as { at?: number } | undefined)?.at ?? ctx.now;
      if (ctx.now - at > ctx.learnerStartMs) {
        const ops = node ? [client.delete().key(keys.assignment(node))] : [];
        await election.guarded(...ops);
        await client.cluster.memberRemove({ ID: l.id });
        log(
          `membership: learner for node ${node ?? l.id} did not start within ${ctx.learnerStartMs} ms; removed`,
        );
        return `gave up learner ${node ?? l.id}`;
      }
      continue;
    }
    // Fence first: a deposed controller must not reach the membership API.
    if (!(await isLearner(client, l.id))) return null;
    await election.guarded();
    try {
      await client.cluster.memberPromote({ ID: l.id });
    } catch (err) {
      // Not in sync yet: etcd says so, and a later round tries again.
      if (/in sync|not ready/i.test((err as Error).message)) return null;
      throw err;
    }
    await election.guarded(
      client
        .put(keys.assignment(l.name))
        .value(JSON.stringify({ ...(a ?? {}), role: "voter", memberId: l.id })),
    );
    log(`membership: promoted node ${l.name} to etcd voter`);
    return `promoted ${l.name}`;
  }
  if (learners.length > 0) return null;

  // 3. Fewer voters than wanted: the next node (by id, so any controller picks the same)
  //    joins as a learner.
  const want = targetVoters(alive.size);
  if (voters.length >= want) return null;
  const memberNodes = new Set(members.map((m) => nodeOf(m, assignments, ctx.nodes)));
  // Any registered node will do: one that cannot run microVMs can still hold etcd.
  const candidate = ctx.nodes.find((n) => !memberNodes.has(n.nodeId));
  if (!candidate) return null;
  const url = peerUrl(candidate.address);
  // Write the intent first: a deposed controller stops here, before touching membership.
  await election.guarded(
    client.put(keys.assignment(candidate.nodeId)).value(
      JSON.stringify({
        role: "learner",
        memberId: "",
        peerUrl: url,
        initialCluster: "",
        clusterState: "existing",
        at: ctx.now,
      }),
    ),
  );
  const res = await client.cluster.memberAdd({ peerURLs: [url], isLearner: true });
  const newId = String(res.member.ID);
  const initialCluster = res.members
    .filter((m) => m.name || String(m.ID) === newId)
    .map((m) => `${m.name || candidate.nodeId}=${m.peerURLs[0]}`)
    .join(",");
  const assignment: Assignment & { at: number } = {
    role: "learner",
    memberId: newId,
    peerUrl: url,
    initialCluster,
    clusterState: "existing",
    at: ctx.now,
  };
  await election.guarded(
    client.put(keys.assignment(candidate.nodeId)).value(JSON.stringify(assignment)),
  );
  log(
    `membership: node ${candidate.nodeId} joins etcd as a learner (${want} voters wanted, ${voters.length} now)`,
  );
  return `added learner ${candidate.nodeId}`;
}

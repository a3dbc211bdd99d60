import type { Application } from "../model/index.js";
import { type Demand, type NodeCapacity, type Placed, place } from "./scheduler.js";

/**
 * The controller's placement loop, level-based: from the applications that should run, the
 * placements that exist and the nodes that are alive, what to write so that every instance
 * has a node, and why an instance has none. Pure: the controller reads etcd, calls this, and
 * writes the result fenced by its term. Running it again on its own output changes nothing.
 *
 * A node that disappears keeps its instances for `graceMs`: the node fences itself (a node
 * that has lost the grid stops its own VMs first), and only once that must have happened are
 * its instances placed elsewhere, so that no instance ever runs twice.
 */

export interface AppRecord {
  name: string;
  /** Where the descriptor came from, as the user named it (for error messages). */
  file: string;
  /** The descriptor as the user wrote it. */
  source: string;
  spec: Application;
  createdAt: string;
  /** Its network number, given at create: its addresses and its segment (agent/instance-plan). */
  net?: number;
  /** Instances the operator stopped (`app stop`): they keep their node, their VMs do not run. */
  stopped?: string[];
  /**
   * How many times the operator asked for each instance to start again (`app restart`): an
   * agent whose VM of it started at another count starts it again, its failures forgotten.
   */
  restarts?: Record<string, number>;
}

export interface PlacementRecord {
  app: string;
  /** Instance id, e.g. `web.1`. */
  instance: string;
  node: string;
  /** The controller term that decided it. */
  term: number;
  at: string;
  /** Why this node, in words (the scheduler's explanation). */
  reasons: string[];
}

export interface ScheduleRecord {
  app: string;
  /** Instances with no node, and why not. Empty when every instance is placed. */
  unplaced: { instance: string; reasons: string[] }[];
  term: number;
  at: string;
}

export interface ReconcileInput {
  apps: readonly AppRecord[];
  placements: readonly PlacementRecord[];
  schedules: readonly ScheduleRecord[];
  /** Nodes with a live registry record. */
  nodes: readonly NodeCapacity[];
  /** When this controller first saw each node that holds placements without a record. */
  missingSince: ReadonlyMap<string, number>;
  now: number;
  graceMs: number;
  term: number;
}

export interface ReconcilePlan {
  put: PlacementRecord[];
  remove: { app: string; instance: string }[];
  schedules: ScheduleRecord[];
  /** Schedule records of applications that are gone. */
  removeSchedules: string[];
  /** Nodes holding placements with no record now, with when they were first missed. */
  missingSince: Map<string, number>;
  /** What changed and why, for the controller's log. */
  notes: string[];
}

export function demandOf(app: AppRecord): Demand[] {
  return app.spec.instances.map((i) => ({
    key: `${app.name}/${i.id}`,
    app: app.name,
    component: i.component,
    cpus: i.cpus,
    memoryMiB: i.memoryMiB,
    // The root disk (shared by a class's instances, counted per instance to be safe) and
    // the instance's own volume.
    diskMiB: i.diskMiB + (i.volumeMiB ?? 0),
  }));
}

export function reconcileApps(input: ReconcileInput): ReconcilePlan {
  const plan: ReconcilePlan = {
    put: [],
    remove: [],
    schedules: [],
    removeSchedules: [],
    missingSince: new Map(),
    notes: [],
  };
  const alive = new Set(input.nodes.map((n) => n.id));
  const apps = new Map(input.apps.map((a) => [a.name, a]));
  const demands = new Map<string, Demand>();
  for (const app of input.apps) for (const d of demandOf(app)) demands.set(d.key, d);

  const kept: Placed[] = [];
  const placedKeys = new Set<string>();
  /** Instances whose node is gone past the grace: placed again, or their record removed. */
  const moving = new Set<string>();
  for (const p of [...input.placements].sort(byKey)) {
    const key = `${p.app}/${p.instance}`;
    const demand = demands.get(key);
    if (!demand) {
      plan.remove.push({ app: p.app, instance: p.instance });
      plan.notes.push(
        apps.has(p.app)
          ? `${key}: no longer in the application; its placement on ${short(p.node)} is removed`
          : `${key}: the application is gone; its placement on ${short(p.node)} is removed`,
      );
      continue;
    }
    if (!alive.has(p.node)) {
      const since = input.missingSince.get(p.node) ?? input.now;
      plan.missingSince.set(p.node, since);
      if (input.now - since < input.graceMs) {
        // Held: the node may only be slow, or be fencing itself right now.
        kept.push({ ...demand, node: p.node });
        placedKeys.add(key);
        continue;
      }
      moving.add(key);
      plan.notes.push(
        `${key}: node ${short(p.node)} gone for ${Math.round((input.now - since) / 1000)} s (past the ${Math.round(input.graceMs / 1000)} s grace): placing it again`,
      );
      continue;
    }
    kept.push({ ...demand, node: p.node });
    placedKeys.add(key);
  }

  const pending = [...demands.values()].filter((d) => !placedKeys.has(d.key));
  const maxNodes = new Map<string, number>();
  for (const app of input.apps)
    if (app.spec.budget.nodes !== null) maxNodes.set(app.name, app.spec.budget.nodes);
  const decisions = pending.length
    ? place({ nodes: input.nodes, placed: kept, pending, maxNodes })
    : [];
  const at = new Date(input.now).toISOString();
  const unplaced = new Map<string, ScheduleRecord["unplaced"]>();
  for (const d of decisions) {
    const slash = d.key.indexOf("/");
    const app = d.key.slice(0, slash);
    const instance = d.key.slice(slash + 1);
    if (d.node) {
      plan.put.push({ app, instance, node: d.node, term: input.term, at, reasons: d.reasons });
      plan.notes.push(`${d.key}: placed on ${short(d.node)}`);
    } else {
      // Its old node has fenced itself by now: the old record would only mislead.
      if (moving.has(d.key)) plan.remove.push({ app, instance });
      const list = unplaced.get(app) ?? [];
      list.push({ instance, reasons: d.reasons });
      unplaced.set(app, list);
    }
  }
  // A schedule record per application says what could not be placed; rewritten only when
  // that changes, so that a steady grid writes nothing.
  const previous = new Map(input.schedules.map((s) => [s.app, s]));
  for (const app of [...apps.keys()].sort()) {
    const now = (unplaced.get(app) ?? []).sort((a, b) => cmp(a.instance, b.instance));
    const before = previous.get(app);
    if (before && JSON.stringify(before.unplaced) === JSON.stringify(now)) continue;
    plan.schedules.push({ app, unplaced: now, term: input.term, at });
    for (const u of now) plan.notes.push(`${app}/${u.instance}: no node: ${u.reasons.join("; ")}`);
  }
  for (const s of input.schedules) if (!apps.has(s.app)) plan.removeSchedules.push(s.app);
  return plan;
}

function short(nodeId: string): string {
  return nodeId.slice(0, 8);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function byKey(a: PlacementRecord, b: PlacementRecord): number {
  return cmp(a.app, b.app) || cmp(a.instance, b.instance);
}

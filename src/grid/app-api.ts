import type { Etcd3 } from "etcd3";
import { type InstanceMetrics, type InstanceState, instanceAddress } from "../agent/index.js";
import { ApiError } from "../api/index.js";
import {
  type AppRecord,
  demandOf,
  type HaStatus,
  haStatus,
  type NodeCapacity,
} from "../controller/index.js";
import { type Catalog, DescriptorError, parseApplication } from "../model/index.js";
import { AppStoreError, createApp, destroyApp, readAppState, updateApp } from "./app-store.js";
import type { NodeRecord } from "./layout.js";

/**
 * The application API of a node: create, list, show and destroy applications. Any node
 * serves it; the desired state goes to etcd, and the controller does the rest.
 */

export interface AppSummary {
  name: string;
  description: string;
  createdAt: string;
  cpus: number;
  memoryMiB: number;
  instances: number;
  placed: number;
  /** Nodes the instances are placed on. */
  nodes: number;
}

export interface InstanceStatus {
  id: string;
  component: string;
  class: string;
  cpus: number;
  memoryMiB: number;
  /**
   * pending: no node fits (see reasons); assigned: the controller placed it on a node whose
   * agent has not reported it yet; then the agent's view (preparing, starting, booting, running,
   * restarting, failed, fenced, stopping).
   */
  state: "pending" | "assigned" | InstanceState;
  /** What the agent says about that state (a VM's last end, an alert). */
  detail: string;
  /** Ends of its VM that were not asked for, in the last 24 hours. */
  failures: number;
  node: string | null;
  hostname: string | null;
  /** The node's address. */
  nodeAddress: string | null;
  /** The instance's own address on its application's network. */
  address: string | null;
  /** Why this node, or why no node. */
  reasons: string[];
  placedAt: string | null;
  /** What it uses on its node (CPU, memory, disk and network bytes), while it runs. */
  metrics: InstanceMetrics | null;
}

export interface AppStatus {
  app: AppRecord;
  instances: InstanceStatus[];
  /** Terminals published on a node's address (`expose`), where they are now. */
  published: {
    component: string;
    terminal: string;
    instance: string | null;
    endpoint: string | null;
  }[];
}

function toApiError(err: unknown): never {
  if (err instanceof ApiError) throw err;
  if (err instanceof DescriptorError)
    throw new ApiError(err.message, "invalid-descriptor", 400, err.problems);
  if (err instanceof AppStoreError)
    throw new ApiError(
      err.message,
      err.code,
      { "app-exists": 409, "no-such-app": 404, "no-network": 507, busy: 503 }[err.code],
    );
  throw err;
}

export async function createApplication(
  client: Etcd3,
  catalog: Catalog,
  file: string,
  source: string,
): Promise<AppRecord> {
  try {
    const spec = parseApplication(file, source, catalog);
    return await createApp(client, {
      name: spec.name,
      file,
      source,
      spec,
      createdAt: new Date().toISOString(),
    });
  } catch (err) {
    return toApiError(err);
  }
}

export async function destroyApplication(client: Etcd3, name: string): Promise<void> {
  try {
    await destroyApp(client, name);
  } catch (err) {
    toApiError(err);
  }
}

/** What an operator can ask of an application's instances. */
export type InstanceAction = "restart" | "stop" | "start";

/**
 * Restarts, stops or starts instances of an application (all of them when `instances` is
 * empty), in its desired state: the agents that run them act on it. Returns the instances.
 */
export async function actOnInstances(
  client: Etcd3,
  name: string,
  action: InstanceAction,
  instances: string[],
): Promise<string[]> {
  let chosen: string[] = [];
  try {
    await updateApp(client, name, (app) => {
      const ids = app.spec.instances.map((i) => i.id);
      const unknown = instances.filter((i) => !ids.includes(i));
      if (unknown.length > 0)
        throw new ApiError(
          `${name} has no instance ${unknown.join(", ")} (it has ${ids.join(", ")})`,
          "no-such-instance",
          404,
        );
      chosen = instances.length > 0 ? [...new Set(instances)] : ids;
      const stopped = new Set(app.stopped ?? []);
      const restarts = { ...(app.restarts ?? {}) };
      for (const id of chosen) {
        if (action === "stop") stopped.add(id);
        else stopped.delete(id);
        // A restart also starts a stopped instance; a start of a running one changes nothing.
        if (action === "restart") restarts[id] = (restarts[id] ?? 0) + 1;
      }
      return { ...app, stopped: ids.filter((i) => stopped.has(i)), restarts };
    });
  } catch (err) {
    toApiError(err);
  }
  return chosen;
}

export async function listApplications(client: Etcd3): Promise<AppSummary[]> {
  const state = await readAppState(client);
  return state.apps.map((a) => {
    const mine = state.placements.filter((p) => p.app === a.name);
    return {
      name: a.name,
      description: a.spec.description,
      createdAt: a.createdAt,
      cpus: a.spec.demand.cpus,
      memoryMiB: a.spec.demand.memoryMiB,
      instances: a.spec.instances.length,
      placed: mine.length,
      nodes: new Set(mine.map((p) => p.node)).size,
    };
  });
}

/**
 * Whether the grid could lose any one of its live nodes and still run every application:
 * the instances placed on each node must all find room on the others, and etcd (whose
 * voters are the node ids in `voters`) must keep its quorum.
 */
export async function gridHa(
  client: Etcd3,
  nodes: readonly NodeCapacity[],
  voters: readonly string[],
): Promise<HaStatus> {
  const state = await readAppState(client);
  const demands = new Map(state.apps.flatMap((a) => demandOf(a).map((d) => [d.key, d] as const)));
  const placed = state.placements.flatMap((p) => {
    const d = demands.get(`${p.app}/${p.instance}`);
    return d ? [{ ...d, node: p.node }] : [];
  });
  return haStatus(nodes, placed, voters);
}

export async function applicationStatus(
  client: Etcd3,
  name: string,
  nodes: readonly NodeRecord[],
): Promise<AppStatus> {
  const state = await readAppState(client);
  const app = state.apps.find((a) => a.name === name);
  if (!app) throw new ApiError(`no application named ${name}`, "no-such-app", 404);
  const placements = new Map(
    state.placements.filter((p) => p.app === name).map((p) => [p.instance, p]),
  );
  const unplaced = new Map(
    (state.schedules.find((s) => s.app === name)?.unplaced ?? []).map((u) => [u.instance, u]),
  );
  const byId = new Map(nodes.map((n) => [n.nodeId, n]));
  const instances = app.spec.instances.map((i): InstanceStatus => {
    const p = placements.get(i.id);
    const node = p ? byId.get(p.node) : undefined;
    const seen = node?.instances?.find((x) => x.app === name && x.instance === i.id);
    return {
      id: i.id,
      component: i.component,
      class: i.class,
      cpus: i.cpus,
      memoryMiB: i.memoryMiB,
      state: seen?.state ?? (p ? "assigned" : "pending"),
      detail: seen?.detail ?? "",
      failures: seen?.failures ?? 0,
      node: p?.node ?? null,
      hostname: node?.hostname ?? null,
      nodeAddress: node?.address ?? null,
      address:
        app.net === undefined
          ? null
          : instanceAddress(
              app.net,
              app.spec.instances.findIndex((x) => x.id === i.id),
            ),
      reasons: p?.reasons ?? unplaced.get(i.id)?.reasons ?? ["not yet seen by the controller"],
      placedAt: p?.at ?? null,
      metrics: seen?.metrics ?? null,
    };
  });
  // Each node that runs an instance of the component publishes it (the first one there).
  const published = app.spec.exposures.flatMap((e): AppStatus["published"] => {
    const seen = new Set<string>();
    const on = instances.filter(
      (x) =>
        x.component === e.component &&
        x.nodeAddress &&
        !seen.has(x.nodeAddress) &&
        seen.add(x.nodeAddress),
    );
    if (on.length === 0)
      return [{ component: e.component, terminal: e.terminal, instance: null, endpoint: null }];
    return on.map((i) => ({
      component: e.component,
      terminal: e.terminal,
      instance: i.id,
      endpoint: `${i.nodeAddress}:${e.port}`,
    }));
  });
  return { app, instances, published };
}

import type { Etcd3 } from "etcd3";
import type { AppRecord } from "../controller/index.js";
import { type Catalog, DescriptorError, type Problem, parseApplication } from "../model/index.js";
import { AppStoreError, createApp, destroyApp, readAppState } from "./app-store.js";
import type { NodeRecord } from "./layout.js";

/**
 * The application API of a node: create, list, show and destroy applications. Any node
 * serves it; the desired state goes to etcd, and the controller does the rest.
 */

/** An API failure with an HTTP status and a stable code. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly status: number,
    readonly problems?: Problem[],
  ) {
    super(message);
  }
}

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
   * assigned: the controller placed it on a node; pending: no node fits (see reasons).
   * Starting the VM on the node is the agent's part, which does not exist yet.
   */
  state: "assigned" | "pending";
  node: string | null;
  hostname: string | null;
  address: string | null;
  /** Why this node, or why no node. */
  reasons: string[];
  placedAt: string | null;
}

export interface AppStatus {
  app: AppRecord;
  instances: InstanceStatus[];
}

function toApiError(err: unknown): never {
  if (err instanceof ApiError) throw err;
  if (err instanceof DescriptorError)
    throw new ApiError(err.message, "invalid-descriptor", 400, err.problems);
  if (err instanceof AppStoreError)
    throw new ApiError(err.message, err.code, err.code === "app-exists" ? 409 : 404);
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
    const record: AppRecord = {
      name: spec.name,
      file,
      source,
      spec,
      createdAt: new Date().toISOString(),
    };
    await createApp(client, record);
    return record;
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
    return {
      id: i.id,
      component: i.component,
      class: i.class,
      cpus: i.cpus,
      memoryMiB: i.memoryMiB,
      state: p ? "assigned" : "pending",
      node: p?.node ?? null,
      hostname: node?.hostname ?? null,
      address: node?.address ?? null,
      reasons: p?.reasons ?? unplaced.get(i.id)?.reasons ?? ["not yet seen by the controller"],
      placedAt: p?.at ?? null,
    };
  });
  return { app, instances };
}

import type { Etcd3 } from "etcd3";
import { APP_NETS } from "../agent/index.js";
import type {
  AppRecord,
  PlacementRecord,
  ReconcilePlan,
  ScheduleRecord,
} from "../controller/index.js";
import type { Election } from "./election.js";
import { keys } from "./layout.js";

/**
 * Applications in etcd: the desired state (one record per application, written by the API
 * on any node) and the controller's decisions (placements, and what could not be placed).
 */

export class AppStoreError extends Error {
  constructor(
    message: string,
    readonly code: "app-exists" | "no-such-app" | "no-network" | "busy",
  ) {
    super(message);
  }
}

function parseAll<T>(values: Record<string, string>): T[] {
  const out: T[] = [];
  for (const v of Object.values(values)) {
    try {
      out.push(JSON.parse(v) as T);
    } catch {
      // A record no version of flatgrid wrote; the layout is ours alone, so skip it.
    }
  }
  return out;
}

/**
 * Stores a new application with the lowest free network number (its addresses, see
 * agent/instance-plan); refuses, without touching it, one that exists. Two creates at once
 * may pick the same number: the transaction lets one win and the other tries the next.
 */
export async function createApp(client: Etcd3, app: Omit<AppRecord, "net">): Promise<AppRecord> {
  const exists = () =>
    new AppStoreError(
      `an application named ${app.name} exists already: \`flatgrid app destroy ${app.name}\` first, or choose another name`,
      "app-exists",
    );
  for (let attempt = 0; attempt < 10; attempt++) {
    const used = new Set(
      Object.keys((await client.getAll().prefix(keys.nets).strings()) ?? {}).map((k) =>
        Number(k.slice(keys.nets.length)),
      ),
    );
    let net = 0;
    while (used.has(net)) net++;
    if (net >= APP_NETS)
      throw new AppStoreError(
        `every one of the ${APP_NETS} application networks is taken: destroy an application first`,
        "no-network",
      );
    const record: AppRecord = { ...app, net };
    const res = await client
      .if(keys.app(app.name), "Version", "==", 0)
      .and(keys.net(net), "Version", "==", 0)
      .then(
        client.put(keys.app(app.name)).value(JSON.stringify(record)),
        client.put(keys.net(net)).value(app.name),
      )
      .commit();
    if (res.succeeded) return record;
    if ((await client.get(keys.app(app.name)).string()) !== null) throw exists();
  }
  throw new AppStoreError(
    "could not find a free application network: too many applications created at once, try again",
    "busy",
  );
}

/** Removes an application's desired state and frees its network; the controller then removes its placements. */
export async function destroyApp(client: Etcd3, name: string): Promise<void> {
  const kv = (await client.get(keys.app(name)).exec()).kvs[0];
  if (!kv) throw new AppStoreError(`no application named ${name}`, "no-such-app");
  let net: number | undefined;
  try {
    net = (JSON.parse(kv.value.toString()) as AppRecord).net;
  } catch {
    // Not a record we can read: remove it anyway.
  }
  const ops = [client.delete().key(keys.app(name))];
  if (net !== undefined) ops.push(client.delete().key(keys.net(net)));
  // The record as read: a destroy racing another on the same name removes it once.
  const res = await client
    .if(keys.app(name), "Mod", "==", kv.mod_revision)
    .then(...ops)
    .commit();
  if (!res.succeeded) throw new AppStoreError(`no application named ${name}`, "no-such-app");
}

/**
 * Changes an application's record by `change`, if nobody changed it meanwhile (the write
 * compares its revision; a lost race reads it again and retries).
 */
export async function updateApp(
  client: Etcd3,
  name: string,
  change: (app: AppRecord) => AppRecord,
): Promise<AppRecord> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const kv = (await client.get(keys.app(name)).exec()).kvs[0];
    if (!kv) throw new AppStoreError(`no application named ${name}`, "no-such-app");
    const next = change(JSON.parse(kv.value.toString()) as AppRecord);
    const res = await client
      .if(keys.app(name), "Mod", "==", kv.mod_revision)
      .then(client.put(keys.app(name)).value(JSON.stringify(next)))
      .commit();
    if (res.succeeded) return next;
  }
  throw new AppStoreError(`${name} is being changed by others: try again`, "busy");
}

export interface AppState {
  apps: AppRecord[];
  placements: PlacementRecord[];
  schedules: ScheduleRecord[];
}

/** Everything about applications, read at one revision so that the three agree. */
export async function readAppState(client: Etcd3): Promise<AppState> {
  // One linearizable read fixes the revision; the three ranges are then read at it.
  const revision = (await client.get(keys.grid).exec()).header.revision;
  const [apps, placements, schedules] = await Promise.all(
    [keys.apps, keys.placements, keys.schedules].map((prefix) =>
      client.getAll().prefix(prefix).revision(revision).strings(),
    ),
  );
  return {
    apps: parseAll<AppRecord>(apps ?? {}).sort((a, b) => (a.name < b.name ? -1 : 1)),
    placements: parseAll<PlacementRecord>(placements ?? {}),
    schedules: parseAll<ScheduleRecord>(schedules ?? {}),
  };
}

/** etcd refuses transactions of more than 128 operations by default. */
const MAX_OPS = 100;

/** Writes a plan of the controller, fenced by its term, in transactions of at most MAX_OPS. */
export async function applyPlan(
  client: Etcd3,
  election: Election,
  plan: ReconcilePlan,
): Promise<number> {
  const ops = [
    ...plan.remove.map((r) => client.delete().key(keys.placement(r.app, r.instance))),
    ...plan.put.map((p) => client.put(keys.placement(p.app, p.instance)).value(JSON.stringify(p))),
    ...plan.schedules.map((s) => client.put(keys.schedule(s.app)).value(JSON.stringify(s))),
    ...plan.removeSchedules.map((a) => client.delete().key(keys.schedule(a))),
  ];
  for (let i = 0; i < ops.length; i += MAX_OPS)
    await election.guarded(...ops.slice(i, i + MAX_OPS));
  return ops.length;
}

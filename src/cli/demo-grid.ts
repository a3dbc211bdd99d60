import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AppStatus, GridStatus } from "../grid/index.js";
import {
  anyAlive,
  DEFAULT_DIR,
  lanGet,
  loadState,
  nodeGridStatus,
  onNode,
  plural,
  readState,
  type SimNode,
  status,
  up,
  watchApp,
} from "../sim/index.js";
import { gridStatusText } from "./format.js";
import { simStatusText } from "./sim.js";

/**
 * `npm run demo`: a grid of simulated servers booted from the node image (build/image), on
 * the simulator's private bridge, left running for the operator to look at. It shows each
 * node's ready line, waits until the nodes have formed one grid with a controller, prints
 * that grid as `flatgrid grid status` on node-1 sees it, then deploys the example application
 * (examples/shop.yaml, from the catalog disk every node gets) and asks it for pages.
 */
export interface GridDemoOptions {
  nodes: number;
  memoryMiB: number;
  cpus: number;
  /** Deploy examples/shop.yaml from the catalog (build/catalog) once the grid is formed. */
  app: boolean;
  /** How long to wait for the grid once every node is ready. */
  gridTimeoutMs: number;
  /** How long to wait for every instance of the application to run. */
  appTimeoutMs: number;
}

const CATALOG = fileURLToPath(new URL("../../../build/catalog", import.meta.url));

/** Creates shop on node-1, waits until it runs, and asks it for a page three times. */
async function deployShop(
  nodes: SimNode[],
  namespace: string,
  o: GridDemoOptions,
): Promise<boolean> {
  const first = nodes[0] as SimNode;
  say(`== flatgrid app create -f examples/shop.yaml, on ${first.name}`);
  const created = await onNode(
    first,
    "flatgrid app create -f /usr/lib/flatgrid/examples/shop.yaml",
    {
      settleMs: 300,
    },
  );
  say(`  ${created.trim()}`);
  say();
  say("== the controller places the instances; each node's agent runs its own in microVMs");
  let view: AppStatus;
  try {
    view = await watchApp(first, "shop", {
      done: (v) => v.instances.every((i) => i.state === "running"),
      timeoutMs: o.appTimeoutMs,
      settleMs: 300,
      onChange: (line, seconds) => say(`  ${seconds.toFixed(0).padStart(4)} s  ${line}`),
    });
  } catch (err) {
    say(`  ${(err as Error).message}`);
    return false;
  }
  say();
  say(`== flatgrid app status shop, on ${first.name}`);
  say(
    (await onNode(first, "flatgrid app status shop", { settleMs: 300 }))
      .trimEnd()
      .split("\n")
      .map((l) => `  ${l}`)
      .join("\n"),
  );
  const endpoint = view.published.find((p) => p.component === "lb")?.endpoint;
  if (!endpoint) return false;
  say();
  say(`== three requests to lb at ${endpoint}, from the servers' LAN`);
  for (let i = 0; i < 3; i++) {
    const r = await lanGet(namespace, `http://${endpoint}/`);
    const page = r.error
      ? `error: ${r.error}`
      : r.body
          .replace(/<[^>]+>/g, " ")
          .replace(/\s+/g, " ")
          .trim();
    say(`  ${page}`);
  }
  say();
  say(`shop runs; see it again with: ./flatgrid sim get http://${endpoint}/`);
  return true;
}

const say = (line = "") => process.stdout.write(`${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function summary(g: GridStatus | null, error: string | null): string {
  if (!g) return error ?? "no answer yet";
  if (!g.grid) return `${g.phase}${g.reason ? `: ${g.reason}` : ""}`;
  if (!g.quorum) return `grid ${g.grid.name}: waiting for an etcd quorum`;
  return `grid ${g.grid.name}: ${plural(g.nodes.length, "node")} registered, controller ${
    g.nodes.find((n) => n.nodeId === g.controller)?.hostname ?? g.controller ?? "being elected"
  }`;
}

/** Asks node after node until one of them shows a grid of all nodes with a controller. */
async function waitForGrid(nodes: SimNode[], o: GridDemoOptions): Promise<GridStatus | null> {
  const started = Date.now();
  let last = "";
  for (;;) {
    for (const node of nodes) {
      const { grid, error } = await nodeGridStatus(node, 120_000);
      const line = `${node.name}: ${summary(grid, error)}`;
      if (line !== last)
        say(`  ${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s  ${line}`);
      last = line;
      if (grid?.quorum && grid.controller && grid.nodes.length === nodes.length) return grid;
      if (Date.now() - started > o.gridTimeoutMs) return null;
    }
    await sleep(3000);
  }
}

const NEXT_STEPS = `The grid stays up. From this directory, as root:
  ./flatgrid sim status        each server, and its grid as the node sees it
  ./flatgrid sim console 2     node-2's serial console (Ctrl-] leaves)
  ./flatgrid sim console 2 --screen   node-2's screen: the full-screen console
  ./flatgrid sim kill 1        pull node-1's power: another node takes over, its instances
                               start elsewhere after the grace period (2.5 min emulated)
  ./flatgrid sim start 1       power it on again: it rejoins as itself (data partition)
  ./flatgrid sim down          stop the servers and remove the private network`;

export async function runGridDemo(o: GridDemoOptions): Promise<number> {
  const existing = readState(DEFAULT_DIR);
  if (existing && anyAlive(existing)) {
    say(
      `A simulated grid is already up (${plural(existing.nodes.length, "node")}, namespace ${existing.namespace}): here it is.`,
    );
    say();
    say(simStatusText(await status({ dir: DEFAULT_DIR }), true));
    say();
    say(NEXT_STEPS);
    return 0;
  }
  say(
    `== booting ${plural(o.nodes, "simulated server")} from build/image, each with a blank disk, on a private bridge`,
  );
  const started = Date.now();
  if (o.app && !existsSync(join(CATALOG, "manifest.json"))) {
    say("The appliance catalog is not built (build/catalog): npm run catalog, or --no-app.");
    return 1;
  }
  const result = await up({
    nodes: o.nodes,
    memoryMiB: o.memoryMiB,
    cpus: o.cpus,
    catalog: o.app ? CATALOG : undefined,
    progress: (line) => say(`  ${line}`),
  });
  say();
  say("== each node's ready line (its serial console)");
  for (const r of result.ready) say(`  ${r.node}  ${r.line}  (${r.seconds.toFixed(0)} s)`);
  say();
  say("== the nodes find each other (mDNS), one creates the grid, the others join it");
  const nodes = loadState(DEFAULT_DIR).nodes;
  const grid = await waitForGrid(nodes, o);
  say();
  if (!grid) {
    say(
      `The nodes did not form one grid within ${(o.gridTimeoutMs / 1000).toFixed(0)} s. They are left up to look at:`,
    );
    say("  ./flatgrid sim status; ./flatgrid sim console 1, then `flatgrid logs grid` on the node");
    return 1;
  }
  say(`== flatgrid grid status, on ${grid.hostname}`);
  say(
    gridStatusText(grid)
      .split("\n")
      .map((l) => `  ${l}`)
      .join("\n"),
  );
  say();
  say(
    `${plural(o.nodes, "server")} booted and formed grid "${grid.grid?.name}" in ${((Date.now() - started) / 1000).toFixed(0)} s.`,
  );
  say();
  if (o.app) {
    const ok = await deployShop(nodes, loadState(DEFAULT_DIR).namespace, o);
    say();
    if (!ok) {
      say(
        `shop did not run within ${(o.appTimeoutMs / 1000).toFixed(0)} s: the grid is left up; \`flatgrid app status shop\` on a node says why.`,
      );
      say(NEXT_STEPS);
      return 1;
    }
  }
  say(NEXT_STEPS);
  return 0;
}

/**
 * Placement: which node runs each instance. Deterministic (the same inputs give the same
 * placement, whatever order nodes were listed in) and explainable (each decision comes
 * with its reasons, and an instance that fits nowhere says why for each kind of refusal).
 * Pure: the controller feeds it node records and the instances already placed.
 *
 * Rules, in order:
 *   1. fit: the node is alive, has KVM, and has the free CPUs, memory and disk;
 *   2. budget: an application with a node limit uses at most that many nodes;
 *   3. spread: instances of one component go to nodes that run none of its instances yet,
 *      where any such node fits (anti-affinity), so losing a node loses one of each;
 *   4. balance: the node with the most memory left after placing (then CPUs, then id).
 * Instances are placed biggest first, so large ones are not squeezed out by small ones.
 */

export interface NodeCapacity {
  id: string;
  cpus: number;
  memoryMiB: number;
  diskMiB: number;
  kvm: boolean;
  alive: boolean;
}

export interface Demand {
  /** `app/instance`, e.g. `shop/web.1`. */
  key: string;
  app: string;
  component: string;
  cpus: number;
  memoryMiB: number;
  diskMiB: number;
}

export interface Placed extends Demand {
  node: string;
}

export interface Decision {
  key: string;
  node: string | null;
  reasons: string[];
}

export interface PlacementInput {
  nodes: readonly NodeCapacity[];
  /** Instances already running or assigned: they hold their resources. */
  placed: readonly Placed[];
  /** Instances to place now. */
  pending: readonly Demand[];
  /** Node limits of applications (budget.nodes), by application name. */
  maxNodes?: ReadonlyMap<string, number>;
}

interface Free {
  node: NodeCapacity;
  cpus: number;
  memoryMiB: number;
  diskMiB: number;
  /** Components present, as `app/component`, with counts. */
  components: Map<string, number>;
  apps: Set<string>;
}

const EPSILON = 1e-9;
const [DOWN, NO_KVM, CPU, MEMORY, DISK, LIMIT] = [0, 1, 2, 3, 4, 5] as const;

export function place(input: PlacementInput): Decision[] {
  const nodes = [...input.nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const free = new Map<string, Free>();
  for (const node of nodes) {
    free.set(node.id, {
      node,
      cpus: node.cpus,
      memoryMiB: node.memoryMiB,
      diskMiB: node.diskMiB,
      components: new Map(),
      apps: new Set(),
    });
  }
  const appNodes = new Map<string, Set<string>>();
  const take = (f: Free, d: Demand) => {
    f.cpus -= d.cpus;
    f.memoryMiB -= d.memoryMiB;
    f.diskMiB -= d.diskMiB;
    const c = `${d.app}/${d.component}`;
    f.components.set(c, (f.components.get(c) ?? 0) + 1);
    f.apps.add(d.app);
    let set = appNodes.get(d.app);
    if (!set) {
      set = new Set();
      appNodes.set(d.app, set);
    }
    set.add(f.node.id);
  };
  for (const p of input.placed) {
    const f = free.get(p.node);
    if (f) take(f, p);
  }

  const pending = [...input.pending].sort(
    (a, b) =>
      b.memoryMiB - a.memoryMiB || b.cpus - a.cpus || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0),
  );
  // Nodes in order of preference (most memory free, then CPUs, then id), kept sorted as
  // placements use them up: the first node that fits and spreads is the best one.
  const order = [...free.values()].sort(byPreference);
  const reposition = (f: Free) => {
    order.splice(order.indexOf(f), 1);
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (byPreference(order[mid] as Free, f) < 0) lo = mid + 1;
      else hi = mid;
    }
    order.splice(lo, 0, f);
  };
  const decisions: Decision[] = [];
  for (const d of pending) {
    const limit = input.maxNodes?.get(d.app);
    const used = appNodes.get(d.app) ?? new Set<string>();
    const component = `${d.app}/${d.component}`;
    /** Why a node cannot take d (an index into the refusal kinds), or -1 when it can. */
    const refusal = (f: Free): number => {
      const n = f.node;
      if (!n.alive) return DOWN;
      if (!n.kvm) return NO_KVM;
      if (f.cpus + EPSILON < d.cpus) return CPU;
      if (f.memoryMiB < d.memoryMiB) return MEMORY;
      if (f.diskMiB < d.diskMiB) return DISK;
      if (limit !== undefined && !used.has(n.id) && used.size >= limit) return LIMIT;
      return -1;
    };
    let best: Free | null = null;
    let spread = false;
    for (const f of order) {
      if (refusal(f) !== -1) continue;
      if (!f.components.has(component)) {
        best = f;
        spread = true;
        break;
      }
      best ??= f;
    }
    if (!best) {
      // Counted only now: the words are needed only when nothing fits.
      const refused = [0, 0, 0, 0, 0, 0];
      for (const f of order) {
        const r = refusal(f);
        refused[r] = (refused[r] ?? 0) + 1;
      }
      const why = [
        "down",
        "no KVM",
        `not enough CPUs (needs ${d.cpus})`,
        `not enough memory (needs ${d.memoryMiB} MiB)`,
        `not enough disk (needs ${d.diskMiB} MiB)`,
        `the application may use only ${limit} nodes`,
      ];
      const reasons = refused.flatMap((count, i) =>
        count ? [`${count} node${count === 1 ? "" : "s"}: ${why[i]}`] : [],
      );
      decisions.push({
        key: d.key,
        node: null,
        reasons: reasons.length ? reasons : ["no nodes in the grid"],
      });
      continue;
    }
    const reasons = [
      `fits: ${round(best.cpus - d.cpus)} CPUs and ${best.memoryMiB - d.memoryMiB} MiB left after it`,
      spread
        ? `runs no other ${d.component} instance of ${d.app}`
        : `every node that fits already runs a ${d.component} instance of ${d.app}`,
      spread
        ? "of the nodes that fit and run none, the one with the most memory free"
        : "of the nodes that fit, the one with the most memory free",
    ];
    take(best, d);
    reposition(best);
    decisions.push({ key: d.key, node: best.node.id, reasons });
  }
  return decisions;
}

function byPreference(a: Free, b: Free): number {
  return (
    b.memoryMiB - a.memoryMiB ||
    b.cpus - a.cpus ||
    (a.node.id < b.node.id ? -1 : a.node.id > b.node.id ? 1 : 0)
  );
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

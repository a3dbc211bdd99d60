/**
 * `npm run bench -- apps`: scheduler placement of 10,000 instances on 1,000 node records,
 * time and memory, next to a plain first-fit placement of the same input in the same run
 * (the floor: no spreading, no balancing, no explanations); then shop's deploy and recovery
 * times on a real 3-node grid (apps-grid.ts), and in the simulator with real appliances
 * (apps-sim.ts, about 15 minutes; FLATGRID_BENCH_SIM=0 leaves it out). BENCH_ROUNDS sets
 * the deploy rounds on the grid (3).
 */
import { type Demand, type NodeCapacity, place } from "../src/controller/index.js";
import { deployAndRecovery } from "./apps-grid.js";
import { simDeployAndRecovery } from "./apps-sim.js";
import { median, progress, report } from "./report.js";

function input(): { nodes: NodeCapacity[]; pending: Demand[] } {
  // A fixed pseudo-random mix, so runs compare.
  let seed = 12345;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const nodes = Array.from({ length: 1000 }, (_, i) => ({
    id: `node-${String(i).padStart(4, "0")}`,
    cpus: [16, 32, 64][Math.floor(rnd() * 3)] ?? 16,
    memoryMiB: [65536, 131072, 262144][Math.floor(rnd() * 3)] ?? 65536,
    diskMiB: 2_000_000,
    kvm: rnd() > 0.02,
    alive: rnd() > 0.01,
  }));
  const pending = Array.from({ length: 10_000 }, (_, i) => {
    const app = `app-${Math.floor(i / 20)}`;
    const comp = ["lb", "web", "web", "web", "db"][i % 5] ?? "web";
    return {
      key: `${app}/${comp}.${i}`,
      app,
      component: comp,
      cpus: [0.5, 1, 2, 4][Math.floor(rnd() * 4)] ?? 1,
      memoryMiB: [256, 512, 1024, 4096][Math.floor(rnd() * 4)] ?? 512,
      diskMiB: 1024,
    };
  });
  return { nodes, pending };
}

function firstFit(nodes: NodeCapacity[], pending: Demand[]): (string | null)[] {
  const free = nodes.map((n) => ({ ...n }));
  return pending.map((d) => {
    const f = free.find(
      (n) =>
        n.alive &&
        n.kvm &&
        n.cpus >= d.cpus &&
        n.memoryMiB >= d.memoryMiB &&
        n.diskMiB >= d.diskMiB,
    );
    if (!f) return null;
    f.cpus -= d.cpus;
    f.memoryMiB -= d.memoryMiB;
    f.diskMiB -= d.diskMiB;
    return f.id;
  });
}

function measure(fn: () => unknown): { ms: number; mib: number } {
  globalThis.gc?.();
  const before = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  const result = fn();
  const ms = performance.now() - t0;
  const mib = (process.memoryUsage().heapUsed - before) / 2 ** 20;
  if (!result) throw new Error("no result");
  return { ms, mib: Math.max(0, mib) };
}

export async function run(): Promise<void> {
  const { nodes, pending } = input();
  const ours: { ms: number; mib: number }[] = [];
  const base: { ms: number; mib: number }[] = [];
  for (let r = 0; r < 5; r++) {
    base.push(measure(() => firstFit(nodes, pending)));
    ours.push(measure(() => place({ nodes, placed: [], pending })));
    progress(
      `round ${r + 1}: place ${ours.at(-1)?.ms.toFixed(0)} ms, first-fit ${base.at(-1)?.ms.toFixed(0)} ms`,
    );
  }
  const placed = place({ nodes, placed: [], pending }).filter((d) => d.node !== null).length;
  report({
    bench: "apps",
    metric: "place_10k_ms",
    value: median(ours.map((m) => m.ms)),
    unit: "ms",
    baseline: "first-fit",
    baseline_value: median(base.map((m) => m.ms)),
    note: `median of 5; ${placed} of 10000 placed on 1000 nodes`,
  });
  report({
    bench: "apps",
    metric: "place_10k_mib",
    value: median(ours.map((m) => m.mib)),
    unit: "MiB",
    baseline: "first-fit",
    baseline_value: Math.max(0.1, median(base.map((m) => m.mib))),
    note: "heap growth during one placement (run with --expose-gc for exact numbers)",
  });
  if (process.env.FLATGRID_BENCH_GRID !== "0")
    await deployAndRecovery(Number(process.env.BENCH_ROUNDS ?? 3));
  if (process.env.FLATGRID_BENCH_SIM !== "0") await simDeployAndRecovery();
}

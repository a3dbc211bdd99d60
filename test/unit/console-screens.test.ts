/**
 * The console's screens from made-up snapshots: what an operator reads in each state of a
 * node (no grid yet, member, no quorum, an instance failing). The same screens, drawn by the
 * real program from a real node, are checked in test/cluster/console.test.ts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  bar,
  esc,
  gridScreen,
  nodeScreen,
  parseCpuLine,
  plain,
  type Snapshot,
} from "../../src/console/index.js";
import type { GridStatus, NodeRecord } from "../../src/grid/index.js";

const record = (n: number, extra: Partial<NodeRecord> = {}): NodeRecord => ({
  nodeId: `${n}0000000-0000-4000-8000-000000000000`,
  hostname: `node-${n}`,
  address: `10.0.0.${n}`,
  apiPort: 7443,
  etcd: "voter",
  controller: n === 1,
  health: "ok",
  problems: [],
  inventory: { cpus: 4, memoryMiB: 8192 },
  startedAt: "2026-11-27T10:00:00.000Z",
  updatedAt: "2026-11-27T10:00:00.000Z",
  ...extra,
});

const member = (over: Partial<GridStatus> = {}): GridStatus => ({
  nodeId: record(2).nodeId,
  hostname: "node-2",
  address: "10.0.0.2",
  phase: "member",
  reason: "member of grid lab",
  grid: { id: "abcdef12-3456-4789-8abc-def012345678", name: "lab", caFingerprint: "00" },
  quorum: true,
  controller: record(1).nodeId,
  term: null,
  wroteInTerm: null,
  etcdRole: "voter",
  voters: [record(1).nodeId, record(2).nodeId],
  learners: [],
  nodes: [record(1), record(2)],
  counters: {},
  ...over,
});

const snapshot = (over: Partial<Snapshot> = {}): Snapshot => ({
  at: Date.parse("2026-11-27T10:05:00.000Z"),
  hostname: "node-2",
  links: [{ name: "eth0", state: "up", addresses: ["10.0.0.2/24"] }],
  usage: {
    cpuPercent: 25,
    cpus: 4,
    memTotalMiB: 8192,
    memUsedMiB: 2048,
    disk: { path: "/var/lib/flatgrid", totalMiB: 10240, usedMiB: 1024 },
  },
  node: null,
  services: [
    {
      name: "grid",
      description: "",
      state: "running",
      pid: 10,
      restarts: 0,
      uptimeMs: 1000,
      lastExit: null,
      reason: null,
      dependsOn: [],
      enabled: true,
    },
  ],
  grid: member(),
  apps: [],
  ha: { ok: true, problems: [] },
  logs: [
    {
      seq: 1,
      time: Date.parse("2026-11-27T10:04:59.000Z"),
      stream: "stdout",
      level: 40,
      msg: "a {warning}",
    },
  ],
  errors: {},
  ...over,
});

const text = (lines: string[]) => lines.map(plain).join("\n");

describe("console screens", () => {
  it("the node screen of a member: grid, role, controller, links, use, services, log", () => {
    const t = text(nodeScreen(snapshot(), 100));
    assert.match(t, /^NODE +node-2 +id 20000000-/m);
    assert.match(t, /^GRID +lab \(abcdef12\)$/m);
    assert.match(t, /^ROLE +etcd voter$/m);
    assert.match(t, /^HEALTH +ok$/m);
    assert.match(t, /^CONTROLLER +node-1 \(10000000\)$/m);
    assert.match(t, /^LINKS +eth0 +up +10\.0\.0\.2\/24$/m);
    assert.match(t, /^CPU +\[\|{8} {22}\] +25 % +of 4 CPUs$/m);
    assert.match(t, /^MEMORY +\[.*\] 2\.0 GiB of 8\.0 GiB$/m);
    assert.match(t, /^DISK +\[.*\] 1\.0 GiB of 10\.0 GiB {2}\/var\/lib\/flatgrid$/m);
    assert.match(t, /^SERVICES +grid running$/m);
    assert.match(t, /^ {2}none$/m);
    // Braces in a log line are text, not tags.
    assert.match(t, /warn +a \{warning\}$/m);
  });

  it("the controller says so; a node without a grid or without quorum says why", () => {
    const ctl = text(nodeScreen(snapshot({ grid: member({ term: 7 }) }), 100));
    assert.match(ctl, /^ROLE +controller, etcd voter$/m);
    const forming = text(
      nodeScreen(
        snapshot({
          grid: member({ phase: "forming", reason: "looking for peers", grid: null, nodes: [] }),
        }),
        100,
      ),
    );
    assert.match(forming, /^GRID +none yet: forming: looking for peers$/m);
    assert.match(forming, /^ROLE +-$/m);
    const cut = text(nodeScreen(snapshot({ grid: member({ quorum: false }) }), 100));
    assert.match(cut, /^GRID +lab \(abcdef12\) no etcd quorum from here: no controller$/m);
    const gone = text(
      nodeScreen(snapshot({ grid: null, errors: { grid: "connect ENOENT grid.sock" } }), 100),
    );
    assert.match(gone, /^GRID +unknown: connect ENOENT grid\.sock$/m);
  });

  it("instances on this node with their use; a failed one in red", () => {
    const instances: NodeRecord["instances"] = [
      {
        app: "shop",
        instance: "web.0",
        state: "running",
        since: "2026-11-27T10:00:00.000Z",
        detail: "",
        pid: 5,
        failures: 0,
        metrics: {
          cpuPercent: 3.4,
          memoryMiB: 148,
          memoryLimitMiB: 400,
          oomKills: 0,
          diskReadBytes: 0,
          diskWriteBytes: 0,
          netRxBytes: 0,
          netTxBytes: 0,
          at: "2026-11-27T10:04:58.000Z",
        },
      },
      {
        app: "shop",
        instance: "db.0",
        state: "failed",
        since: "2026-11-27T10:04:00.000Z",
        detail: "3 failures",
        pid: null,
        failures: 3,
        metrics: null,
      },
    ];
    const grid = member({ nodes: [record(1), record(2, { instances })] });
    const lines = nodeScreen(snapshot({ grid }), 100);
    const t = text(lines);
    assert.match(t, /^ {2}shop\/web\.0 +running +3% +148 of 400 MiB +5m00s$/m);
    assert.match(t, /^ {2}shop\/db\.0 +failed +- +- +1m00s$/m);
    assert.ok(lines.some((l) => l.includes("{red-fg}shop/db.0")));
  });

  it("the grid screen: controller, HA, nodes with roles and load, applications with state", () => {
    const running = (instance: string) => ({
      app: "shop",
      instance,
      state: "running" as const,
      since: "2026-11-27T10:00:00.000Z",
      detail: "",
      pid: 1,
      failures: 0,
      metrics: null,
    });
    const grid = member({
      nodes: [
        record(1, { instances: [running("web.0"), running("db.0")] }),
        record(2, { etcd: "none", health: "degraded", problems: ["no /dev/kvm"] }),
      ],
    });
    const apps = [
      {
        name: "shop",
        description: "",
        createdAt: "",
        cpus: 2,
        memoryMiB: 1024,
        instances: 3,
        placed: 2,
        nodes: 1,
      },
    ];
    const ha = { ok: false, problems: ["losing node-1 leaves shop/db.0 without a place"] };
    const lines = gridScreen(snapshot({ grid, apps, ha }));
    const t = text(lines);
    assert.match(t, /^CONTROLLER +node-1 \(10000000\)$/m);
    assert.match(t, /^HA +at risk$/m);
    assert.match(t, /^ +losing node-1 leaves shop\/db\.0 without a place$/m);
    assert.match(t, /^ETCD +2 voters, 0 learners$/m);
    assert.match(t, /^node-1 +10\.0\.0\.1 +controller, voter +ok +4 +8\.0 GiB +2 /m);
    assert.match(t, /^node-2 +10\.0\.0\.2 +client +degraded /m);
    assert.match(t, /^shop +1 not placed +2\/3 +1 +2 +1 GiB$/m);
    const cut = text(gridScreen(snapshot({ grid: member({ quorum: false }) })));
    assert.match(cut, /cannot be read from this node now/);
  });

  it("bars, escapes, tags and /proc/stat", () => {
    assert.equal(plain(bar(0.5, 4)), "[||  ]");
    assert.equal(plain(bar(2, 4)), "[||||]");
    assert.equal(plain(bar(Number.NaN, 2)), "[  ]");
    assert.match(bar(0.95, 4), /red-fg/);
    assert.equal(plain(esc("{bold}x{/bold}")), "{bold}x{/bold}");
    assert.deepEqual(parseCpuLine("cpu  100 0 50 800 50 0 0 0 0 0"), { busy: 150, total: 1000 });
    assert.equal(parseCpuLine("intr 1 2 3"), null);
  });
});

/**
 * A discovery node for the cluster tests, run inside a node namespace:
 *   node discovery-node.js --run '<json options>'
 * It prints JSON lines (started, announced, conflict, peer-up, peer-update, peer-down,
 * stopped, and replies) and takes JSON lines on stdin:
 *   {"cmd":"update","patch":{...},"id":"x"}  {"cmd":"stats","id":"x"}
 *   {"cmd":"peers","id":"x"}  {"cmd":"stop","id":"x"}
 * It stops cleanly (with goodbyes) on SIGTERM, on "stop", or when stdin closes.
 */
import { createInterface } from "node:readline";
import { Discovery, type Peer } from "../../src/discovery/index.js";

interface NodeArgs {
  nodeId: string;
  hostname: string;
  gridId?: string;
  state?: string;
  apiPort?: number;
  caFingerprint?: string;
  gridName?: string;
  ttl?: number;
  hostTtl?: number;
  interfaces?: string[];
  rescanMs?: number;
}

function out(value: Record<string, unknown>) {
  process.stdout.write(`${JSON.stringify({ ...value, t: Date.now() })}\n`);
}

function brief(p: Peer) {
  return { ...p };
}

async function main() {
  const i = process.argv.indexOf("--run");
  if (i === -1) return; // imported or run by mistake: do nothing
  const args = JSON.parse(process.argv[i + 1] ?? "{}") as NodeArgs;
  const d = new Discovery({
    advert: {
      nodeId: args.nodeId,
      gridId: args.gridId ?? "",
      state: args.state ?? "booting",
      apiPort: args.apiPort ?? 7443,
      caFingerprint: args.caFingerprint ?? "",
      ...(args.gridName ? { gridName: args.gridName } : {}),
    },
    hostname: args.hostname,
    ttl: args.ttl,
    hostTtl: args.hostTtl,
    interfaces: args.interfaces,
    rescanMs: args.rescanMs,
    log: (level, msg, fields) => {
      if (level !== "debug" || process.env.FLATGRID_DISCOVERY_DEBUG)
        process.stderr.write(`${level} ${msg} ${JSON.stringify(fields ?? {})}\n`);
    },
  });
  d.on("announced", (hostname) => out({ ev: "announced", hostname }));
  d.on("conflict", (c) => out({ ev: "conflict", ...c }));
  d.on("peer-up", (p) => out({ ev: "peer-up", peer: brief(p) }));
  d.on("peer-update", (p, old) => out({ ev: "peer-update", peer: brief(p), old: brief(old) }));
  d.on("peer-down", (p, reason) => out({ ev: "peer-down", peer: brief(p), reason }));
  await d.start();
  out({ ev: "started", pid: process.pid, interfaces: d.interfaces().map((x) => x.name) });

  let stopping = false;
  const stop = async (id?: string) => {
    if (stopping) return;
    stopping = true;
    await d.stop();
    out({ ev: "stopped", reply: id, stats: d.stats() });
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop());
  const rl = createInterface({ input: process.stdin });
  rl.on("close", () => void stop());
  rl.on("line", (line) => {
    let cmd: { cmd?: string; id?: string; patch?: Record<string, unknown> };
    try {
      cmd = JSON.parse(line);
    } catch {
      out({ ev: "error", error: `not JSON: ${line}` });
      return;
    }
    try {
      switch (cmd.cmd) {
        case "update":
          out({ ev: "updated", reply: cmd.id, advert: d.update(cmd.patch ?? {}) });
          break;
        case "stats":
          out({ ev: "stats", reply: cmd.id, stats: d.stats(), hostname: d.hostname });
          break;
        case "peers":
          out({ ev: "peers", reply: cmd.id, peers: d.peers() });
          break;
        case "stop":
          void stop(cmd.id);
          break;
        default:
          out({ ev: "error", reply: cmd.id, error: `unknown command ${cmd.cmd}` });
      }
    } catch (err) {
      out({ ev: "error", reply: cmd.id, error: String(err) });
    }
  });
}

main().catch((err) => {
  process.stderr.write(`discovery-node: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});

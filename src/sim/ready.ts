import { bootStep, lastLines, READY_LINE, readLog } from "./console.js";
import { SimError } from "./errors.js";
import { qemuAlive } from "./qemu.js";
import type { SimNode } from "./state.js";
import { unwedge } from "./wedge.js";

export interface ReadyNode {
  node: string;
  /** The supervisor's ready line as the console printed it. */
  line: string;
  /** Seconds from the start of waiting to the line. */
  seconds: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits until every node's console (since its QEMU started) shows the supervisor's ready
 * line, reporting each boot step as it appears and, every 30 s, where each node is. Fails
 * at once when a QEMU dies, and after `timeoutMs` with the consoles' last lines.
 */
export async function waitReady(
  nodes: SimNode[],
  o: { timeoutMs: number; progress: (line: string) => void; accel: "kvm" | "tcg" },
): Promise<ReadyNode[]> {
  const started = Date.now();
  const seconds = () => Math.round((Date.now() - started) / 1000);
  const ready = new Map<string, ReadyNode>();
  const steps = new Map<string, string | null>();
  let lastSummary = Date.now();
  o.progress(
    `waiting for ${nodes.length} node${nodes.length > 1 ? "s" : ""} to boot${o.accel === "tcg" ? " (TCG: a few minutes)" : ""}`,
  );
  for (;;) {
    for (const node of nodes) {
      if (ready.has(node.name)) continue;
      const text = readLog(node.qemu.consoleLog, node.consoleOffset);
      const step = bootStep(text);
      const line = READY_LINE.exec(text);
      if (line) {
        const r = { node: node.name, line: line[0], seconds: seconds() };
        ready.set(node.name, r);
        o.progress(`${node.name}: ${r.line} (${r.seconds} s)`);
        continue;
      }
      if (step !== (steps.get(node.name) ?? null)) {
        steps.set(node.name, step);
        if (step) o.progress(`${node.name}: ${step} (${seconds()} s)`);
      }
      if (!qemuAlive(node.pid, node.qemu.pidFile))
        throw new SimError(
          `${node.name}: QEMU (pid ${node.pid}) ended before the node was ready; its console's last lines:\n${lastLines(text, 20).join("\n")}`,
          "qemu",
        );
    }
    if (ready.size === nodes.length) return nodes.map((n) => ready.get(n.name) as ReadyNode);
    if (Date.now() - started > o.timeoutMs) {
      const waiting = nodes.filter((n) => !ready.has(n.name));
      const tails = waiting.map(
        (n) =>
          `${n.name} (${steps.get(n.name) ?? "no output"}):\n${lastLines(readLog(n.qemu.consoleLog, n.consoleOffset), 10).join("\n")}`,
      );
      throw new SimError(
        `not ready after ${seconds()} s: ${waiting.map((n) => n.name).join(", ")}. The simulator is left running: \`flatgrid sim console NODE\` to look, \`flatgrid sim down\` to stop it.\n${tails.join("\n")}`,
        "not-ready",
      );
    }
    if (Date.now() - lastSummary >= 30_000) {
      lastSummary = Date.now();
      const where = nodes.map(
        (n) => `${n.name} ${ready.has(n.name) ? "ready" : (steps.get(n.name) ?? "firmware")}`,
      );
      o.progress(`${seconds()} s: ${where.join(", ")}`);
      // A node that boots slowly may be wedged (WEDGED): nudged, it goes on.
      for (const n of nodes.filter((n) => !ready.has(n.name))) {
        const { wedged, still } = await unwedge(n.qemu);
        if (wedged)
          o.progress(
            `${n.name}: wedged (${wedged}); ${still ? "a nudge on its console did not end it" : "a nudge on its console ended it"}`,
          );
      }
    }
    await sleep(1000);
  }
}

import { connect } from "node:net";
import { vcpuLines, WEDGED } from "./qmp.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The sockets of a simulated node that looking at and ending a wedge need. */
export interface WedgeSockets {
  qmpSocket: string;
  /** ttyS0, the kernel's console: nothing on the node reads its input. */
  consoleSocket?: string;
}

/** The lines of the node's wedged vCPUs (see WEDGED), joined; "" when none is. */
export async function wedgedVcpus(qmpSocket: string): Promise<string> {
  const lines = await vcpuLines(qmpSocket).catch(() => [] as string[]);
  return lines.filter((l) => l.endsWith(WEDGED)).join("; ");
}

/**
 * Hands one carriage return to the node's ttyS0. A wedge is a lost wakeup: the node's timer
 * vector sits in the halted vCPU's IRR and QEMU never looks again; the UART's receive
 * interrupt is a new one, and with it both are delivered (seen on 2026-11-29: a wedge of more
 * than 2 minutes ended at once; an NMI does not do it). The node's only reader of ttyS0 is
 * the kernel's tty layer, for a PID 1 that never reads its stdin: the byte costs an empty
 * line in the console log. Resolves to whether the byte went into the socket (false when
 * nothing listens there). QEMU serves one client per port: while an operator is attached,
 * the byte waits in the socket until they leave, and the wedge stays.
 */
export function nudgeConsole(consoleSocket: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = connect(consoleSocket);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      conn.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    conn.once("error", () => done(false));
    conn.once("connect", () => conn.write("\r", (err) => done(!err)));
  });
}

/** What unwedge() saw and did. */
export interface UnwedgeResult {
  /** The wedged vCPUs' lines at the first look; "" when the node was not wedged. */
  wedged: string;
  /** The same a moment after the nudge: "" when the nudge (or time) ended the wedge. */
  still: string;
}

/**
 * Looks at the node's vCPUs and, when one is wedged, nudges the node through its console and
 * looks again a second later. Without a console socket it only looks again. A wedge counts
 * when a second look, half a second after the first, agrees: one look may catch a vCPU that
 * an interrupt has just reached and that has not woken yet.
 */
export async function unwedge(node: WedgeSockets): Promise<UnwedgeResult> {
  if (!(await wedgedVcpus(node.qmpSocket))) return { wedged: "", still: "" };
  await sleep(500);
  const wedged = await wedgedVcpus(node.qmpSocket);
  if (!wedged) return { wedged, still: "" };
  if (node.consoleSocket) await nudgeConsole(node.consoleSocket);
  await sleep(1000);
  return { wedged, still: await wedgedVcpus(node.qmpSocket) };
}

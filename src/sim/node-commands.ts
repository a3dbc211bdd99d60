import type { AppStatus } from "../grid/index.js";
import { SimError } from "./errors.js";
import { NodeShell } from "./shell.js";
import type { SimNode } from "./state.js";

/**
 * Commands on a simulated node, asked the way an operator at its serial console would: a
 * connection of its own to the node's debug shell for each command, so that a command that
 * times out leaves nothing behind for the next one. With the node's QMP socket, a node that
 * wedges fails the command at once (WEDGED) instead of at its timeout.
 */

export interface NodeCommandOptions {
  /** How long the command may run (180 s). */
  timeoutMs?: number;
  /** How long to let the shell settle after connecting (NodeShell.open; 1.5 s). */
  settleMs?: number;
}

/** One command in a node's debug shell; its output. */
export async function onNode(
  node: SimNode,
  command: string,
  options: NodeCommandOptions = {},
): Promise<string> {
  const shell = NodeShell.forNode(node.qemu);
  try {
    await shell.open(options.settleMs);
    return (await shell.exec(command, options.timeoutMs ?? 180_000)).output;
  } finally {
    shell.close();
  }
}

/**
 * The first line of a command's output that is a JSON object, parsed (the flatgrid CLI's
 * `--json` prints one); null when there is none or it does not parse.
 */
export function jsonLine<T>(output: string): T | null {
  const line = output.split("\n").find((l) => l.startsWith("{"));
  if (!line) return null;
  try {
    return JSON.parse(line) as T;
  } catch {
    return null;
  }
}

/** One line of an application's instances and their states (and nodes), for progress. */
export function instancesLine(view: AppStatus): string {
  return view.instances
    .map((i) => `${i.id} ${i.state}${i.hostname ? ` ${i.hostname}` : ""}`)
    .join(", ");
}

export interface WatchAppOptions {
  /** True once the application is where the caller waits for it. */
  done: (view: AppStatus) => boolean;
  timeoutMs: number;
  /** Between two questions (5 s). */
  intervalMs?: number;
  /** For each question's shell (NodeShell.open; 1.5 s). */
  settleMs?: number;
  /** Each new answer: instancesLine() of it, or why there was none; seconds since the start. */
  onChange?: (line: string, seconds: number) => void;
}

/**
 * Asks a node for `flatgrid app status APP --json` until `done` holds, and returns that
 * status. A node that answers with an error (no quorum yet, an unknown application) or not
 * at all is asked again; after `timeoutMs` a SimError says what the last answer was.
 */
export async function watchApp(
  node: SimNode,
  app: string,
  options: WatchAppOptions,
): Promise<AppStatus> {
  const started = Date.now();
  let last = "";
  for (;;) {
    const out = await onNode(node, `flatgrid app status ${app} --json`, {
      settleMs: options.settleMs,
    }).catch((err: Error) => err.message);
    const view = jsonLine<AppStatus>(out);
    const valid = Array.isArray(view?.instances) ? view : null;
    const line = valid
      ? instancesLine(valid)
      : `no answer (${out.trim().split("\n").at(-1)?.slice(0, 200)})`;
    if (line !== last) options.onChange?.(line, (Date.now() - started) / 1000);
    last = line;
    if (valid && options.done(valid)) return valid;
    if (Date.now() - started > options.timeoutMs)
      throw new SimError(
        `${app} on ${node.name}: not there within ${options.timeoutMs / 1000} s; last: ${line}`,
        "not-ready",
      );
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 5000));
  }
}

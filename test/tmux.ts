/** tmux as the tests' terminal: a session of a given size, its screen read back as text. */
import { execFileSync } from "node:child_process";

export const tmux = (...args: string[]) => execFileSync("tmux", args, { encoding: "utf8" });

/** A detached session of cols×rows running `command` (a shell command line). */
export function newTerminal(session: string, cols: number, rows: number, command: string): void {
  tmux("new-session", "-d", "-s", session, "-x", String(cols), "-y", String(rows), command);
}

import { closeSync, openSync, readSync, statSync } from "node:fs";
import { connect } from "node:net";
import { SimError } from "./errors.js";

/** The line a node's supervisor prints once its services are up. */
export const READY_LINE = /flatgrid-supervisor: ready in (\d+) ms \(kvm: (yes|no)\)/;

/** Steps of a boot as they show on the console, for progress while waiting. */
export const BOOT_STEPS: { step: string; pattern: RegExp }[] = [
  { step: "kernel started", pattern: /Linux version / },
  { step: "init running", pattern: /flatgrid-init:/ },
  { step: "supervisor starting", pattern: /flatgrid-supervisor:/ },
  { step: "ready", pattern: READY_LINE },
];

export function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** The console log from byte `from` on, carriage returns dropped. */
export function readLog(file: string, from = 0): string {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch {
    return "";
  }
  try {
    const size = statSync(file).size;
    if (size <= from) return "";
    const buf = Buffer.alloc(size - from);
    const n = readSync(fd, buf, 0, buf.length, from);
    return buf.subarray(0, n).toString("utf8").replace(/\r/g, "");
  } finally {
    closeSync(fd);
  }
}

export function lastLines(text: string, n: number): string[] {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  return n === 0 ? [] : lines.slice(-n);
}

/** The furthest boot step the text shows, or null before the kernel's first line. */
export function bootStep(text: string): string | null {
  let step: string | null = null;
  for (const s of BOOT_STEPS) if (s.pattern.test(text)) step = s.step;
  return step;
}

const DETACH = 0x1d; // Ctrl-]

export interface AttachOptions {
  /** Sent to the line once attached (Ctrl-L: a full-screen program draws everything). */
  greeting?: string;
  /** Written to this terminal when leaving (to undo a full-screen program's modes). */
  farewell?: string;
}

/**
 * Attaches the terminal to a serial console socket until Ctrl-] (or, when stdin is not a
 * terminal, until stdin ends). QEMU serves one client at a time: a second one waits.
 */
export async function attachConsole(
  socket: string,
  o: AttachOptions = {},
  stdin: NodeJS.ReadStream = process.stdin,
  stdout: NodeJS.WriteStream = process.stdout,
): Promise<void> {
  const conn = await new Promise<import("node:net").Socket>((resolve, reject) => {
    const s = connect(socket);
    s.once("connect", () => resolve(s));
    s.once("error", (err) =>
      reject(new SimError(`cannot attach to ${socket}: ${err.message}`, "qemu")),
    );
  });
  const raw = stdin.isTTY === true;
  await new Promise<void>((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      stdin.off("data", onInput);
      stdin.off("end", onEnd);
      if (raw) stdin.setRawMode(false);
      stdin.pause();
      conn.destroy();
      if (o.farewell) stdout.write(o.farewell);
      resolve();
    };
    const onInput = (d: Buffer) => {
      const at = raw ? d.indexOf(DETACH) : -1;
      if (at >= 0) {
        if (at > 0) conn.write(d.subarray(0, at));
        finish();
        return;
      }
      conn.write(d);
    };
    // Piped input: give the node a moment to answer the last line before we hang up.
    const onEnd = () => setTimeout(finish, 1000);
    if (raw) stdin.setRawMode(true);
    stdin.on("data", onInput);
    stdin.on("end", onEnd);
    stdin.resume();
    conn.on("data", (d: Buffer) => stdout.write(d));
    conn.on("close", finish);
    if (o.greeting) conn.write(o.greeting);
  });
}

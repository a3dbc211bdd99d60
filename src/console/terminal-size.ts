import { execFile } from "node:child_process";
import type { WriteStream } from "node:tty";
import { promisify } from "node:util";

/**
 * The size of a terminal the kernel cannot know. A VT and a pseudo-terminal have a size; a
 * serial line (ttyS*, an IPMI serial-over-LAN, the simulator's servers) reports 0×0 until
 * someone sets one, and blessed would then draw on a 1×1 screen: nothing at all. So the
 * console gives such a line the size every serial terminal has at least (80×24), and asks
 * the terminal at the other end for its real one, the way xterm's `resize` does: put the
 * cursor at the far corner and ask where it went.
 */

export interface Size {
  rows: number;
  cols: number;
}

export const SERIAL_DEFAULT: Size = { rows: 24, cols: 80 };

/** Larger than any terminal; a cursor sent there stops at the last row and column. */
const FAR_CORNER = "\x1b[999;999H";
/** A bound on what a reply may claim, so a garbled one cannot make blessed allocate GiBs. */
const MAX_ROWS = 500;
const MAX_COLS = 1000;

/** Whether the kernel knows this terminal's size. */
export function sizeKnown(output: WriteStream): boolean {
  return (output.columns ?? 0) > 0 && (output.rows ?? 0) > 0;
}

/** Sets the kernel's idea of the terminal's size, which everything on it then reads. */
export async function setKernelSize(device: string, size: Size): Promise<void> {
  await promisify(execFile)("stty", [
    "-F",
    device,
    "rows",
    String(size.rows),
    "cols",
    String(size.cols),
  ]);
}

/**
 * Cursor position reports (ESC [ row ; col R) in what the terminal sent. A key never sends
 * one with a row above 1 (a modified F3 is ESC [ 1 ; m R), so those are taken out wherever
 * they come, late replies included: blessed would read them as keys, and the R of one as
 * the reboot key. Pure; works on a latin1 string, so that bytes go back unchanged.
 */
export function takeCursorReplies(input: string): { rest: string; replies: Size[] } {
  const replies: Size[] = [];
  const rest = input.replace(CURSOR_REPLY, (whole, row: string, col: string) => {
    if (Number(row) < 2) return whole;
    const size = sizeFromCursor(Number(row), Number(col));
    if (size) replies.push(size);
    return "";
  });
  return { rest, replies };
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: ESC starts every reply
const CURSOR_REPLY = /\x1b\[(\d{1,6});(\d{1,6})R/g;

/** The size a cursor at the far corner reports (1-based). Null when it makes no sense. */
export function sizeFromCursor(row: number, col: number): Size | null {
  if (!Number.isInteger(row) || !Number.isInteger(col)) return null;
  if (row < 2 || col < 2 || row > MAX_ROWS || col > MAX_COLS) return null;
  return { rows: row, cols: col };
}

/** What a terminal's input stream must offer for its replies to be taken out. */
export interface TerminalInput {
  emit(event: string | symbol, ...args: unknown[]): boolean;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: ESC starts every reply
const PARTIAL_REPLY = /\x1b(?:\[(?:\d{1,6}(?:;\d{0,6})?)?)?$/;

/**
 * The end of `input` that may be the start of a cursor report cut off by the line: a serial
 * line hands over what has arrived, and a reply split as "ESC[30;10" and "0R" would reach
 * blessed as keys, its R the reboot key. Empty when the input ends in no such start. Pure.
 */
export function partialReplyAtEnd(input: string): string {
  return PARTIAL_REPLY.exec(input)?.[0] ?? "";
}

/**
 * How long a cut-off start waits for the rest: longer while an answer is expected, since
 * a start let go too early brings back the very keys this is here to stop (a busy node's
 * serial line has been seen to cut a reply).
 */
const HOLD_MS = 50;
const HOLD_ASKED_MS = 3000;
/** How long after a question its answer may still come. */
const ANSWER_WINDOW_MS = 10_000;

/**
 * Asks the terminal at the other end of a line for its size, and keeps the replies away
 * from whoever reads keys from `input` (blessed). Install it before anything reads.
 */
export class SizeProbe {
  private waiting: ((size: Size | null) => void) | null = null;
  private pending: Promise<Size | null> | null = null;
  /** The start of a reply that the line cut off, kept until the rest comes. */
  private held = "";
  private holdTimer: NodeJS.Timeout | null = null;
  private askedAt = Number.NEGATIVE_INFINITY;

  constructor(
    input: TerminalInput,
    private readonly write: (text: string) => void,
  ) {
    const emit = input.emit.bind(input);
    const pass = (text: string, binary: boolean) =>
      emit("data", binary ? Buffer.from(text, "latin1") : text);
    // Every reader of a stream gets its data through emit("data"): filtering there takes the
    // replies out for all of them, whichever listener came first.
    input.emit = (event: string | symbol, ...args: unknown[]): boolean => {
      if (event !== "data") return emit(event, ...args);
      const chunk = args[0];
      const binary = typeof chunk !== "string";
      const received = binary ? Buffer.from(chunk as Uint8Array).toString("latin1") : chunk;
      if (!this.held && !String(received).includes("\x1b")) return emit(event, ...args);
      const text = this.held + received;
      this.stopHolding();
      const tail = partialReplyAtEnd(text);
      const { rest, replies } = takeCursorReplies(text.slice(0, text.length - tail.length));
      const reply = replies.at(-1);
      if (reply && this.waiting) this.waiting(reply);
      if (tail) {
        this.held = tail;
        // A lone Escape key, or a key's sequence the line cut, goes on after a moment.
        const expecting = Date.now() - this.askedAt < ANSWER_WINDOW_MS;
        this.holdTimer = setTimeout(
          () => {
            const held = this.held;
            this.held = "";
            this.holdTimer = null;
            if (held) pass(held, binary);
          },
          expecting ? HOLD_ASKED_MS : HOLD_MS,
        );
        this.holdTimer.unref?.();
      }
      if (!rest) return true;
      return pass(rest, binary);
    };
  }

  private stopHolding(): void {
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = null;
    this.held = "";
  }

  /** The terminal's size, or null when nobody answers within `timeoutMs`. */
  ask(timeoutMs = 2000): Promise<Size | null> {
    // One question at a time: a second asker gets the first one's answer.
    this.pending ??= new Promise<Size | null>((resolve) => {
      const timer = setTimeout(() => done(null), timeoutMs);
      const done = (size: Size | null) => {
        clearTimeout(timer);
        this.waiting = null;
        this.pending = null;
        resolve(size);
      };
      this.waiting = done;
      this.askedAt = Date.now();
      // Save the cursor, go to the far corner, ask, and come back: nothing on the screen moves.
      this.write(`\x1b7${FAR_CORNER}\x1b[6n\x1b8`);
    });
    return this.pending;
  }
}

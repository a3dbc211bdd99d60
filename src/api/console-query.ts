import { ApiError } from "./api-error.js";

/** An application's and an instance's names in a path, as the model allows them (a group each). */
export const APP_IN_PATH = "([a-z][a-z0-9-]{0,31})";
export const INSTANCE_IN_PATH = String.raw`([a-z][a-z0-9-]{0,31}\.\d{1,5})`;

/** The most one call returns: a console is followed by asking again from where it ended. */
export const CONSOLE_MAX_BYTES = 1 << 20;
const DEFAULT_BYTES = 64 * 1024;
/** The most one call types at a console: typing, not file transfer (the VMM's own limit). */
export const CONSOLE_INPUT_MAX = 4096;

/** Which piece of an instance's console log: from a byte offset (null: its end), at most max. */
export interface ConsoleQuery {
  from: number | null;
  max: number;
}

/** ?from=N&max=N, checked: a bad number is the caller's mistake, said as such. */
export function parseConsoleQuery(search: string): ConsoleQuery {
  const q = new URLSearchParams(search);
  const num = (name: string, lo: number, hi: number): number | null => {
    const v = q.get(name);
    if (v === null || v === "") return null;
    const n = Number(v);
    if (!Number.isInteger(n) || n < lo || n > hi)
      throw new ApiError(
        `${name}: ${v} is not a whole number from ${lo} to ${hi}`,
        "bad-request",
        400,
      );
    return n;
  };
  return {
    from: num("from", 0, Number.MAX_SAFE_INTEGER),
    max: num("max", 1, CONSOLE_MAX_BYTES) ?? DEFAULT_BYTES,
  };
}

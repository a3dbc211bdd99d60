/**
 * A bounded in-memory log per service. The node runs from RAM, so logs must never grow
 * without limit: the oldest entries go first once either bound is reached.
 */

export type LogStream = "stdout" | "stderr" | "supervisor";

export interface LogEntry {
  /** Increases by one per entry for the life of the buffer: a follower resumes after it. */
  seq: number;
  /** Milliseconds since the epoch. */
  time: number;
  stream: LogStream;
  /** The process that wrote it, when a process did. */
  pid?: number;
  /** pino levels: 10 trace ... 60 fatal. Set for structured lines and supervisor notes. */
  level?: number;
  msg: string;
  /** The other fields of a structured (JSON) line. */
  fields?: Record<string, unknown>;
}

export type NewLogEntry = Omit<LogEntry, "seq" | "time"> & { time?: number };

export const LEVELS: Record<number, string> = {
  10: "trace",
  20: "debug",
  30: "info",
  40: "warn",
  50: "error",
  60: "fatal",
};

const MAX_LINE_BYTES = 16 * 1024;

export class LogBuffer {
  private entries: LogEntry[] = [];
  private head = 0;
  private bytes = 0;
  private nextSeq = 1;
  private readonly listeners = new Set<(entry: LogEntry) => void>();

  constructor(
    readonly maxEntries = 5000,
    readonly maxBytes = 1024 * 1024,
  ) {}

  append(entry: NewLogEntry): LogEntry {
    const msg =
      entry.msg.length > MAX_LINE_BYTES
        ? `${entry.msg.slice(0, MAX_LINE_BYTES)}… [truncated]`
        : entry.msg;
    const full: LogEntry = { ...entry, msg, seq: this.nextSeq++, time: entry.time ?? Date.now() };
    this.entries.push(full);
    this.bytes += sizeOf(full);
    while (this.size > this.maxEntries || (this.bytes > this.maxBytes && this.size > 1)) {
      const dropped = this.entries[this.head];
      if (dropped) this.bytes -= sizeOf(dropped);
      this.head += 1;
    }
    // Compact lazily so that dropping the oldest entry stays O(1) on average.
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    for (const listener of this.listeners) listener(full);
    return full;
  }

  get size(): number {
    return this.entries.length - this.head;
  }

  get byteSize(): number {
    return this.bytes;
  }

  /** The last `limit` entries with seq greater than `afterSeq`. */
  tail(limit = Number.POSITIVE_INFINITY, afterSeq = 0): LogEntry[] {
    const live = this.entries.slice(this.head).filter((e) => e.seq > afterSeq);
    return limit >= live.length ? live : live.slice(live.length - limit);
  }

  subscribe(listener: (entry: LogEntry) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

function sizeOf(entry: LogEntry): number {
  // An estimate is enough for a memory bound; serialising every entry would cost more.
  return entry.msg.length + (entry.fields ? 64 * Object.keys(entry.fields).length : 0) + 48;
}

/**
 * Turns one output line into an entry. Our own services log pino JSON; anything that does
 * not parse as such is kept verbatim as text rather than dropped.
 */
export function parseLogLine(line: string, structured: boolean): Omit<NewLogEntry, "stream"> {
  if (structured && line.startsWith("{")) {
    try {
      const obj: unknown = JSON.parse(line);
      if (obj !== null && typeof obj === "object" && !Array.isArray(obj)) {
        const {
          level,
          msg,
          time,
          pid: _pid,
          hostname: _hostname,
          ...fields
        } = obj as Record<string, unknown>;
        return {
          msg: typeof msg === "string" ? msg : "",
          ...(typeof level === "number" ? { level } : {}),
          ...(typeof time === "number" ? { time } : {}),
          ...(Object.keys(fields).length > 0 ? { fields } : {}),
        };
      }
    } catch {
      // Not JSON after all: keep it as text.
    }
  }
  return { msg: line };
}

/** Splits a byte stream into lines; a partial last line waits for more data. */
export class LineSplitter {
  private pending = "";
  constructor(private readonly onLine: (line: string) => void) {}

  push(chunk: string): void {
    const text = this.pending + chunk;
    const lines = text.split("\n");
    this.pending = lines.pop() ?? "";
    if (this.pending.length > MAX_LINE_BYTES) {
      this.onLine(this.pending);
      this.pending = "";
    }
    for (const line of lines) this.onLine(line.endsWith("\r") ? line.slice(0, -1) : line);
  }

  flush(): void {
    if (this.pending) this.onLine(this.pending);
    this.pending = "";
  }
}

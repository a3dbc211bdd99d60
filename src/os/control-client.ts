import { request } from "node:http";
import { dirname, join } from "node:path";
import type { LogEntry } from "./log-buffer.js";

export const DEFAULT_SOCKET = "/run/flatgrid/supervisor.sock";
export const DEFAULT_GRID_SOCKET = "/run/flatgrid/grid.sock";

/** Where the supervisor listens: FLATGRID_SOCKET overrides the standard path. */
export function socketPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.FLATGRID_SOCKET || DEFAULT_SOCKET;
}

/**
 * Where the grid service listens: FLATGRID_GRID_SOCKET, else grid.sock beside the
 * supervisor's socket, else the default. (Here, in os, because the supervisor asks the grid
 * service too: whether an admin token is the grid's.)
 */
export function gridSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FLATGRID_GRID_SOCKET) return env.FLATGRID_GRID_SOCKET;
  if (env.FLATGRID_SOCKET) return join(dirname(env.FLATGRID_SOCKET), "grid.sock");
  return DEFAULT_GRID_SOCKET;
}

export class ControlError extends Error {
  constructor(
    message: string,
    /** A stable code: unreachable, or the API's own error code. */
    readonly code: string,
    /** Which fields of the request are wrong and why, when the API says. */
    readonly problems: { key: string; message: string }[] = [],
  ) {
    super(message);
    this.name = "ControlError";
  }
}

/**
 * The ControlError an error answer of one of our APIs stands for: its stable code, message
 * and problems (`{"error": {...}}`), else the status. `who` names who answered.
 */
export function replyError(status: number | undefined, text: string, who: string): ControlError {
  let error: { code?: string; message?: string; problems?: ControlError["problems"] } | undefined;
  try {
    error = (JSON.parse(text) as { error?: typeof error }).error;
  } catch {
    // Not JSON: the status says it.
  }
  return new ControlError(
    error?.message ?? `${who}: HTTP ${status}`,
    error?.code ?? "error",
    error?.problems ?? [],
  );
}

/** A whole answer of one of our APIs: its JSON, or the ControlError it stands for. */
export function parseReply<T>(status: number | undefined, text: string, who: string): T {
  if ((status ?? 500) >= 400) throw replyError(status, text, who);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ControlError(
      `${who} sent a reply that is not JSON: ${text.slice(0, 200)}`,
      "bad-reply",
    );
  }
}

/** Talks to the supervisor's control socket, or another local API of the same form. */
export class ControlClient {
  constructor(
    readonly path: string = socketPath(),
    /** Who answers there, for error messages. */
    private readonly who: { name: string; hint: string; timeoutMs?: number } = {
      name: "the supervisor",
      hint: "is the supervisor running? FLATGRID_SOCKET chooses another socket",
    },
  ) {}

  async get<T>(urlPath: string): Promise<T> {
    return this.call<T>("GET", urlPath);
  }

  async post<T>(urlPath: string, body?: unknown): Promise<T> {
    return this.call<T>("POST", urlPath, body);
  }

  async put<T>(urlPath: string, body: unknown): Promise<T> {
    return this.call<T>("PUT", urlPath, body);
  }

  async delete<T>(urlPath: string): Promise<T> {
    return this.call<T>("DELETE", urlPath);
  }

  private call<T>(method: string, urlPath: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const headers = payload
        ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }
        : undefined;
      const req = request({ socketPath: this.path, path: urlPath, method, headers }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("end", () => {
          try {
            resolve(parseReply<T>(res.statusCode, body, this.who.name));
          } catch (err) {
            reject(err);
          }
        });
      });
      req.on("error", (err) => reject(this.unreachable(err)));
      if (this.who.timeoutMs !== undefined)
        req.setTimeout(this.who.timeoutMs, () =>
          req.destroy(Object.assign(new Error("timed out"), { code: "timed out" })),
        );
      req.end(payload);
    });
  }

  /**
   * Reads a service's log; with follow it keeps calling onEntry until the returned
   * promise is cancelled through the signal or the supervisor goes away.
   */
  logs(
    name: string,
    options: { lines: number; follow: boolean; signal?: AbortSignal },
    onEntry: (entry: LogEntry) => void,
  ): Promise<void> {
    const query = `lines=${options.lines}${options.follow ? "&follow=1" : ""}`;
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.path,
          path: `/v1/logs/${encodeURIComponent(name)}?${query}`,
          signal: options.signal,
        },
        (res) => {
          res.setEncoding("utf8");
          if ((res.statusCode ?? 500) >= 400) {
            let body = "";
            res.on("data", (c: string) => {
              body += c;
            });
            res.on("end", () => reject(replyError(res.statusCode, body, this.who.name)));
            return;
          }
          let pending = "";
          res.on("data", (chunk: string) => {
            const lines = (pending + chunk).split("\n");
            pending = lines.pop() ?? "";
            for (const line of lines) if (line) onEntry(JSON.parse(line) as LogEntry);
          });
          res.on("end", () => resolve());
          res.on("error", () => resolve());
        },
      );
      req.on("error", (err) => {
        if (options.signal?.aborted) resolve();
        else reject(this.unreachable(err));
      });
      req.end();
    });
  }

  private unreachable(err: NodeJS.ErrnoException): ControlError {
    const hint =
      err.code === "ENOENT" || err.code === "ECONNREFUSED"
        ? ` (${this.who.hint})`
        : err.code === "EACCES"
          ? " (the socket is for root only)"
          : "";
    return new ControlError(
      `cannot reach ${this.who.name} at ${this.path}: ${err.code ?? err.message}${hint}`,
      "unreachable",
    );
  }
}

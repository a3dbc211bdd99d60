import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import { dirname, join } from "node:path";
import type { GridNode, GridStatus } from "./grid-node.js";

/**
 * The grid service's local API, for the CLI and the console: HTTP on a Unix socket next to
 * the supervisor's (mode 0600).
 *
 *   GET  /v1/grid        GridStatus: phase, grid, quorum, controller, voters, learners, nodes
 *   POST /v1/grid/fence  a write with this node's last controller term (shows the fence)
 */

export const DEFAULT_GRID_SOCKET = "/run/flatgrid/grid.sock";

/** FLATGRID_GRID_SOCKET, else grid.sock beside the supervisor's socket, else the default. */
export function gridSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FLATGRID_GRID_SOCKET) return env.FLATGRID_GRID_SOCKET;
  if (env.FLATGRID_SOCKET) return join(dirname(env.FLATGRID_SOCKET), "grid.sock");
  return DEFAULT_GRID_SOCKET;
}

export async function listenGridSocket(path: string, node: GridNode): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true });
  rmSync(path, { force: true });
  const server = createServer((req, res) => {
    const send = (status: number, body: unknown) => {
      const text = `${JSON.stringify(body)}\n`;
      res.writeHead(status, { "content-type": "application/json" });
      res.end(text);
    };
    const route = `${req.method} ${req.url}`;
    if (route === "GET /v1/grid") return send(200, node.status());
    if (route === "POST /v1/grid/fence") {
      node
        .writeAsLastTerm()
        .then((r) => send(200, r))
        .catch((err: Error) => send(503, { error: { code: "unreachable", message: err.message } }));
      return;
    }
    send(404, { error: { code: "not-found", message: `no such endpoint: ${route}` } });
  });
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
  } finally {
    process.umask(oldMask);
  }
  chmodSync(path, 0o600);
  return server;
}

export class GridSocketError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = "GridSocketError";
  }
}

/** Calls the grid service's socket. */
export function callGrid<T>(
  method: "GET" | "POST",
  path: string,
  socketPath = gridSocketPath(),
): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => {
        try {
          const json = JSON.parse(body) as T & { error?: { code: string; message: string } };
          if ((res.statusCode ?? 500) >= 400)
            reject(
              new GridSocketError(
                json.error?.message ?? `HTTP ${res.statusCode}`,
                json.error?.code ?? "error",
              ),
            );
          else resolve(json);
        } catch {
          reject(
            new GridSocketError("the grid service sent a reply that is not JSON", "bad-reply"),
          );
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (err: NodeJS.ErrnoException) =>
      reject(
        new GridSocketError(
          `cannot reach the grid service at ${socketPath}: ${err.code ?? err.message}${
            err.code === "ENOENT" || err.code === "ECONNREFUSED"
              ? " (is the grid service running? `flatgrid services`)"
              : ""
          }`,
          "unreachable",
        ),
      ),
    );
    req.end();
  });
}

export type { GridStatus };

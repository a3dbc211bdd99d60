import { createServer, type Server } from "node:http";
import { dirname, join } from "node:path";
import { ControlClient, listenPrivateSocket } from "../os/index.js";
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
  await listenPrivateSocket(server, path, "grid service");
  return server;
}

/** Calls the grid service's socket; failures are ControlErrors, as for the supervisor. */
export function callGrid<T>(
  method: "GET" | "POST",
  path: string,
  socketPath = gridSocketPath(),
): Promise<T> {
  const client = new ControlClient(socketPath, {
    name: "the grid service",
    hint: "is the grid service running? `flatgrid services`",
    timeoutMs: 5000,
  });
  return method === "GET" ? client.get<T>(path) : client.post<T>(path);
}

export type { GridStatus };

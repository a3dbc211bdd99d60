import { createServer, type IncomingMessage, request, type Server } from "node:http";
import { readReplyError, routeGridApi } from "../api/index.js";
import { ControlClient, ControlError, gridSocketPath, listenPrivateSocket } from "../os/index.js";
import type { GridNode, GridStatus } from "./grid-node.js";

/**
 * The grid service's local API, for the CLI and the console on this node: HTTP on a Unix
 * socket next to the supervisor's (mode 0600, so root only). The routes are the grid API's
 * (api/router), with the local ones (the fence test, the console's token check); the same
 * API is on the node's HTTPS port for holders of an admin token.
 */

export { DEFAULT_GRID_SOCKET, gridSocketPath } from "../os/index.js";

export async function listenGridSocket(path: string, node: GridNode): Promise<Server> {
  const server = createServer((req, res) => routeGridApi(node, req, res, { door: "local" }));
  await listenPrivateSocket(server, path, "grid service");
  return server;
}

/** Calls the grid service's socket; failures are ControlErrors, as for the supervisor. */
export function callGrid<T>(
  method: "GET" | "POST" | "DELETE",
  path: string,
  socketPath = gridSocketPath(),
  body?: unknown,
): Promise<T> {
  const client = new ControlClient(socketPath, {
    name: "the grid service",
    hint: "is the grid service running? `flatgrid services`",
    timeoutMs: 15_000,
  });
  if (method === "GET") return client.get<T>(path);
  if (method === "DELETE") return client.delete<T>(path);
  return client.post<T>(path, body);
}

/** A streaming GET on the grid service's socket (a live console), once it answers 200. */
export function streamGrid(path: string, socketPath = gridSocketPath()): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path }, (res) => {
      if (res.statusCode === 200) return resolve(res);
      readReplyError(res, "the grid service").then(reject, reject);
    });
    req.on("error", (err) =>
      reject(
        new ControlError(
          `cannot reach the grid service at ${socketPath}: ${err.message} (is the grid service running? \`flatgrid services\`)`,
          "unreachable",
        ),
      ),
    );
    req.end();
  });
}

export type { GridStatus };

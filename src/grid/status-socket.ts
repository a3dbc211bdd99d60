import { createServer, type IncomingMessage, type Server } from "node:http";
import { dirname, join } from "node:path";
import { z } from "zod";
import { APP_NAME } from "../model/index.js";
import { ControlClient, listenPrivateSocket } from "../os/index.js";
import { ApiError, type InstanceAction } from "./app-api.js";
import type { GridNode, GridStatus } from "./grid-node.js";
import { APP_INSTANCE_CONSOLE, parseConsoleQuery } from "./peer-api.js";

/**
 * The grid service's local API, for the CLI and the console: HTTP on a Unix socket next to
 * the supervisor's (mode 0600).
 *
 *   GET  /v1/grid        GridStatus: phase, grid, quorum, controller, voters, learners, nodes
 *   GET  /v1/grid/ha     {ok, problems}: could the grid lose any one node and still run
 *                        every application
 *   POST /v1/grid/fence  a write with this node's last controller term (shows the fence)
 *   GET  /v1/apps        the applications, with how many instances are placed
 *   POST /v1/apps        {"file","source"}: validate a descriptor and store it (201; 400 with
 *                        located problems; 409 when the name is taken)
 *   GET  /v1/apps/NAME   the application, and each instance's node and why
 *   DELETE /v1/apps/NAME destroy it (the controller removes its placements)
 *   POST /v1/apps/NAME/{restart,stop,start}  {"instances": [...]} (none: all of them)
 *   GET  /v1/apps/NAME/instances/ID/console?from=N&max=N
 *                        a piece of the instance's console log, from the node that runs it
 *                        ({text, from, to, rotated, node, hostname}; ask from=to next)
 *   GET  /v1/placements  every instance's node, for agents and the console
 *   503 with code not-member or no-quorum when the grid's state cannot be reached.
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
    // API calls: an ApiError is the answer, with its status and stable code.
    const answer = (call: Promise<[number, unknown]>) => {
      call
        .then(([status, body]) => send(status, body))
        .catch((err: Error) =>
          err instanceof ApiError
            ? send(err.status, {
                error: { code: err.code, message: err.message, problems: err.problems },
              })
            : send(500, { error: { code: "internal", message: err.message } }),
        );
    };
    if (route === "GET /v1/placements")
      return answer(node.placements().then((placements) => [200, { placements }]));
    const action =
      req.method === "POST"
        ? /^\/v1\/apps\/([^/]+)\/(restart|stop|start)$/.exec(req.url ?? "")
        : null;
    if (action)
      return answer(instanceAction(req, node, action[1] ?? "", action[2] as InstanceAction));
    const consoleRoute = req.method === "GET" ? APP_INSTANCE_CONSOLE.exec(req.url ?? "") : null;
    if (consoleRoute)
      return answer(
        Promise.resolve()
          .then(() => parseConsoleQuery(consoleRoute[3] ?? ""))
          .then((q) => node.instanceConsole(consoleRoute[1] ?? "", consoleRoute[2] ?? "", q))
          .then((chunk) => [200, chunk]),
      );
    if (req.url === "/v1/apps" || req.url?.startsWith("/v1/apps/"))
      return answer(appRoute(req, node));
    if (route === "GET /v1/grid/ha") return answer(node.ha().then((ha) => [200, ha]));
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

const MAX_BODY = 1 << 20;

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
      if (body.length > MAX_BODY) {
        reject(new ApiError("the request is larger than 1 MiB", "too-large", 413));
        req.destroy();
      }
    });
    req.on("end", () => resolve(body));
    req.on("error", reject);
  });
}

/**
 * The request body as JSON checked against `schema`; `shape` names what it should be in
 * the error. An empty body stands for `empty` when one is given, else it is not JSON.
 */
async function readJson<S extends z.ZodTypeAny>(
  req: IncomingMessage,
  schema: S,
  shape: string,
  empty?: unknown,
): Promise<z.output<S>> {
  let input: unknown;
  try {
    const body = await readBody(req);
    input = empty !== undefined && !body.trim() ? empty : JSON.parse(body);
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError("the request body is not JSON", "bad-request", 400);
  }
  const parsed = schema.safeParse(input);
  if (!parsed.success)
    throw new ApiError(
      `the request body needs ${shape}: ${parsed.error.issues.map((i: z.ZodIssue) => `${i.path.join(".")}: ${i.message}`).join("; ")}`,
      "bad-request",
      400,
    );
  return parsed.data;
}

const createSchema = z.object({
  file: z.string().min(1).max(4096),
  source: z.string().max(MAX_BODY),
});

const actionSchema = z.object({ instances: z.array(z.string().max(64)).max(1000).default([]) });

async function instanceAction(
  req: IncomingMessage,
  node: GridNode,
  name: string,
  action: InstanceAction,
): Promise<[number, unknown]> {
  if (!APP_NAME.test(name)) throw new ApiError(`no application named ${name}`, "no-such-app", 404);
  // No body at all means all instances.
  const body = await readJson(req, actionSchema, '{"instances": [ids]}', {});
  const instances = await node.actOnInstances(name, action, body.instances);
  return [200, { app: name, action, instances }];
}

async function appRoute(req: IncomingMessage, node: GridNode): Promise<[number, unknown]> {
  let name = "";
  try {
    name = decodeURIComponent((req.url ?? "").slice("/v1/apps/".length));
  } catch {
    throw new ApiError(`not a valid path: ${req.url}`, "bad-request", 400);
  }
  // Names become etcd keys: only what a descriptor may be named gets that far.
  if (name && !APP_NAME.test(name))
    throw new ApiError(`no application named ${name}`, "no-such-app", 404);
  if (req.url === "/v1/apps") {
    if (req.method === "GET") return [200, { apps: await node.listApps() }];
    if (req.method === "POST") {
      const body = await readJson(req, createSchema, '{"file", "source"}');
      return [201, { app: await node.createApp(body.file, body.source) }];
    }
  } else if (name) {
    if (req.method === "GET") return [200, await node.appStatus(name)];
    if (req.method === "DELETE") {
      await node.destroyApp(name);
      return [200, { destroyed: name }];
    }
  }
  throw new ApiError(`no such endpoint: ${req.method} ${req.url}`, "not-found", 404);
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

export type { GridStatus };

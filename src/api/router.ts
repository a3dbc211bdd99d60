import type { IncomingMessage, ServerResponse } from "node:http";
import { Readable } from "node:stream";
import { z } from "zod";
import { APP_NAME } from "../model/index.js";
import type { AdminTokenInfo } from "./admin-token.js";
import { TOKEN_NAME } from "./admin-token.js";
import { ApiError, errorBody } from "./api-error.js";
import {
  APP_IN_PATH,
  CONSOLE_INPUT_MAX,
  type ConsoleQuery,
  INSTANCE_IN_PATH,
  parseConsoleQuery,
} from "./console-query.js";
import { MAX_BODY, readJson } from "./request-body.js";

/**
 * The grid API, one router for both of its doors: the grid service's Unix socket (root on
 * the node: the CLI and the console there) and the HTTPS API on every node's API port (an
 * admin token in `Authorization: Bearer`). Every route below is on both unless it says
 * "local". Bodies are JSON checked against one schema per request; failures are
 * `{"error": {code, message, problems?}}` with the stable codes of ApiError.
 *
 *   GET  /v1/grid        GridStatus: phase, grid, quorum, controller, voters, learners, nodes
 *   GET  /v1/grid/ha     {ok, problems}: could the grid lose any one node and still run
 *                        every application
 *   GET  /v1/grid/ca     {ca, fingerprint}: the grid CA certificate, which signs every
 *                        node's API certificate (what an HTTPS client trusts)
 *   POST /v1/grid/fence  local: a write with this node's last controller term (shows the fence)
 *   GET  /v1/apps        the applications, with how many instances are placed
 *   POST /v1/apps        {"file","source"}: validate a descriptor and store it (201; 400 with
 *                        located problems; 409 when the name is taken)
 *   GET  /v1/apps/NAME   the application, and each instance's node and why
 *   DELETE /v1/apps/NAME destroy it (the controller removes its placements)
 *   POST /v1/apps/NAME/{restart,stop,start}  {"instances": [...]} (none: all of them)
 *   GET  /v1/apps/NAME/instances/ID/console?from=N&max=N
 *                        a piece of the instance's console log, from the node that runs it
 *                        ({text, from, to, rotated, node, hostname}; ask from=to next)
 *   GET  /v1/apps/NAME/instances/ID/console/stream
 *                        the live console (application/octet-stream): what the VM kept,
 *                        then what the guest writes, until its VM ends or the client goes
 *   POST /v1/apps/NAME/instances/ID/console/input  {"base64"}: keys typed at the console
 *                        (at most 4 KiB a call): {queued}
 *   GET  /v1/placements  every instance's node, for agents and the console
 *   GET  /v1/tokens      the admin tokens: id, name, when and where made (never a secret)
 *   POST /v1/tokens      {"name"}: a new admin token (201, {token, info}); the token is
 *                        shown this once, the grid keeps only its digest
 *   DELETE /v1/tokens/ID revoke one: the next request with it is refused
 *   POST /v1/tokens/verify  local: {"token"}: {valid, info} (the console's check)
 *   503 with code not-member or no-quorum when the grid's state cannot be reached.
 */

/** What the router needs of the grid service (GridNode is one). */
export interface GridApi {
  status(): unknown;
  ha(): Promise<unknown>;
  ca(): { ca: string; fingerprint: string };
  writeAsLastTerm(): Promise<unknown>;
  listApps(): Promise<unknown[]>;
  createApp(file: string, source: string): Promise<unknown>;
  appStatus(name: string): Promise<unknown>;
  destroyApp(name: string): Promise<void>;
  actOnInstances(
    name: string,
    action: "restart" | "stop" | "start",
    instances: string[],
  ): Promise<string[]>;
  instanceConsole(app: string, instance: string, q: ConsoleQuery): Promise<unknown>;
  consoleStream(app: string, instance: string): Promise<Readable>;
  consoleInput(app: string, instance: string, bytes: Buffer): Promise<{ queued: number }>;
  placements(): Promise<unknown[]>;
  createToken(name: string): Promise<{ token: string; info: AdminTokenInfo }>;
  listTokens(): Promise<AdminTokenInfo[]>;
  revokeToken(id: string): Promise<void>;
  verifyToken(token: string): Promise<AdminTokenInfo | null>;
}

/** The live console's paths (both doors). */
export const APP_INSTANCE_CONSOLE_LIVE = new RegExp(
  `^/v1/apps/${APP_IN_PATH}/instances/${INSTANCE_IN_PATH}/console/(stream|input)$`,
);

/** Who is asking: root on this node, or a holder of an admin token over HTTPS. */
export type Caller = { door: "local" } | { door: "https"; token: AdminTokenInfo };

/** The local socket's path of an instance's console. */
export const APP_INSTANCE_CONSOLE = new RegExp(
  `^/v1/apps/${APP_IN_PATH}/instances/${INSTANCE_IN_PATH}/console(\\?.*)?$`,
);

const createSchema = z.object({
  file: z.string().min(1).max(4096),
  source: z.string().max(MAX_BODY),
});
const actionSchema = z.object({ instances: z.array(z.string().max(64)).max(1000).default([]) });
const tokenSchema = z.object({
  name: z
    .string()
    .regex(
      TOKEN_NAME,
      "a name of lower-case letters, digits, '.', '_' or '-', up to 63, like ci or alice",
    ),
});
const verifySchema = z.object({ token: z.string().max(200) });
const inputSchema = z.object({
  base64: z
    .string()
    .min(1)
    .max(Math.ceil(CONSOLE_INPUT_MAX / 3) * 4)
    .regex(/^[A-Za-z0-9+/]*={0,2}$/, "base64"),
});

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

/** A failure as its error answer; once an answer has begun, the connection is cut instead. */
export function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { status, body } = errorBody(err);
  sendJson(res, status, body);
}

/** A stream (a live console) as the answer: it goes on until either side ends it. */
export function sendStream(res: ServerResponse, stream: Readable): void {
  res.writeHead(200, {
    "content-type": "application/octet-stream",
    "cache-control": "no-store",
  });
  res.flushHeaders();
  stream.pipe(res);
  stream.on("error", () => res.destroy());
  res.on("close", () => stream.destroy());
}

/** Answers one request of the grid API. Never throws: a failure is an error answer. */
export function routeGridApi(
  api: GridApi,
  req: IncomingMessage,
  res: ServerResponse,
  caller: Caller,
): void {
  route(api, req, caller).then(
    ([status, body]) =>
      body instanceof Readable ? sendStream(res, body) : sendJson(res, status, body),
    (err: unknown) => sendError(res, err),
  );
}

async function route(
  api: GridApi,
  req: IncomingMessage,
  caller: Caller,
): Promise<[number, unknown]> {
  const url = req.url ?? "";
  const method = req.method ?? "";
  const local = caller.door === "local";
  const is = (m: string, path: string) => method === m && url === path;

  if (is("GET", "/v1/grid")) return [200, api.status()];
  if (is("GET", "/v1/grid/ha")) return [200, await api.ha()];
  if (is("GET", "/v1/grid/ca")) return [200, api.ca()];
  if (is("POST", "/v1/grid/fence") && local)
    return [
      200,
      await api.writeAsLastTerm().catch((err: Error) => {
        throw new ApiError(err.message, "unreachable", 503);
      }),
    ];
  if (is("GET", "/v1/placements")) return [200, { placements: await api.placements() }];

  if (url === "/v1/tokens" || url.startsWith("/v1/tokens/")) return tokenRoute(api, req, local);

  const action = method === "POST" ? /^\/v1\/apps\/([^/]+)\/(restart|stop|start)$/.exec(url) : null;
  if (action) {
    const name = action[1] ?? "";
    if (!APP_NAME.test(name))
      throw new ApiError(`no application named ${name}`, "no-such-app", 404);
    // No body at all means all instances.
    const body = await readJson(req, actionSchema, '{"instances": [ids]}', {});
    const verb = action[2] as "restart" | "stop" | "start";
    const instances = await api.actOnInstances(name, verb, body.instances);
    return [200, { app: name, action: verb, instances }];
  }
  const live = APP_INSTANCE_CONSOLE_LIVE.exec(url);
  if (live) {
    const [, app = "", instance = "", what] = live;
    if (what === "stream" && method === "GET") return [200, await api.consoleStream(app, instance)];
    if (what === "input" && method === "POST") {
      const body = await readJson(req, inputSchema, '{"base64": keys}');
      const bytes = Buffer.from(body.base64, "base64");
      if (bytes.length > CONSOLE_INPUT_MAX)
        throw new ApiError(`at most ${CONSOLE_INPUT_MAX} bytes of input a call`, "too-large", 413);
      return [200, await api.consoleInput(app, instance, bytes)];
    }
  }
  const consoleRoute = method === "GET" ? APP_INSTANCE_CONSOLE.exec(url) : null;
  if (consoleRoute) {
    const q = parseConsoleQuery(consoleRoute[3] ?? "");
    return [200, await api.instanceConsole(consoleRoute[1] ?? "", consoleRoute[2] ?? "", q)];
  }
  if (url === "/v1/apps" || url.startsWith("/v1/apps/")) return appRoute(api, req);
  throw new ApiError(`no such endpoint: ${method} ${url}`, "not-found", 404);
}

async function appRoute(api: GridApi, req: IncomingMessage): Promise<[number, unknown]> {
  const url = req.url ?? "";
  let name = "";
  try {
    name = decodeURIComponent(url.slice("/v1/apps/".length));
  } catch {
    throw new ApiError(`not a valid path: ${url}`, "bad-request", 400);
  }
  // Names become etcd keys: only what a descriptor may be named gets that far.
  if (name && !APP_NAME.test(name))
    throw new ApiError(`no application named ${name}`, "no-such-app", 404);
  if (url === "/v1/apps") {
    if (req.method === "GET") return [200, { apps: await api.listApps() }];
    if (req.method === "POST") {
      const body = await readJson(req, createSchema, '{"file", "source"}');
      return [201, { app: await api.createApp(body.file, body.source) }];
    }
  } else if (name) {
    if (req.method === "GET") return [200, await api.appStatus(name)];
    if (req.method === "DELETE") {
      await api.destroyApp(name);
      return [200, { destroyed: name }];
    }
  }
  throw new ApiError(`no such endpoint: ${req.method} ${url}`, "not-found", 404);
}

async function tokenRoute(
  api: GridApi,
  req: IncomingMessage,
  local: boolean,
): Promise<[number, unknown]> {
  const url = req.url ?? "";
  if (url === "/v1/tokens") {
    if (req.method === "GET") return [200, { tokens: await api.listTokens() }];
    if (req.method === "POST") {
      const body = await readJson(req, tokenSchema, '{"name"}');
      return [201, await api.createToken(body.name)];
    }
  } else if (url === "/v1/tokens/verify" && req.method === "POST" && local) {
    const body = await readJson(req, verifySchema, '{"token"}');
    const info = await api.verifyToken(body.token);
    return [200, { valid: info !== null, info }];
  } else if (req.method === "DELETE") {
    const id = url.slice("/v1/tokens/".length);
    await api.revokeToken(id);
    return [200, { revoked: id }];
  }
  throw new ApiError(`no such endpoint: ${req.method} ${url}`, "not-found", 404);
}

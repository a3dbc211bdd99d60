import { chmodSync, mkdirSync, unlinkSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { connect } from "node:net";
import { dirname } from "node:path";
import { z } from "zod";
import type { LogEntry } from "./log-buffer.js";
import { ServiceTableError, serviceSpecSchema } from "./service-spec.js";
import { ServiceInUseError, type Supervisor, UnknownServiceError } from "./supervisor.js";

/**
 * The supervisor's local API: HTTP over a Unix socket (mode 0600, so root only). Everything
 * the CLI and the console do to the node goes through here.
 *
 *   GET  /v1/services                      all services and their state
 *   GET  /v1/services/NAME                 one service
 *   PUT  /v1/services/NAME                 define (or redefine) a service: body is its spec
 *   DELETE /v1/services/NAME               stop and forget a service
 *   POST /v1/services/NAME/{start,stop,restart}
 *   GET  /v1/logs/NAME?lines=N&follow=1    log entries as NDJSON; follow keeps streaming
 *   GET  /v1/node                          boot mode, configuration and its errors
 *   PUT  /v1/node/settings                 {"settings": {"flatgrid.grid": ...}, "consolePassword",
 *                                          "currentPassword"}: store the node's own settings on its
 *                                          data partition; once a console password is set, the
 *                                          current one or an admin token of the grid is needed
 *                                          (400 with problems per key; 409 without a partition;
 *                                          503 when the grid cannot check a token)
 *   POST /v1/console/check-password        {"password"}: {set, ok}
 *   POST /v1/power/{poweroff,reboot}
 */

export interface ControlHandlers {
  node(): unknown;
  power(action: "poweroff" | "reboot"): void;
  /** Stores the node's own settings (and the console password); throws ApiError. */
  configure(request: SettingsRequest): Promise<unknown>;
  /** Whether a console password is set, and whether this one is it. */
  checkPassword(password: string): { set: boolean; ok: boolean };
}

export const settingsRequestSchema = z
  .object({
    /** flatgrid.* keys and their values; "" removes a key. */
    settings: z.record(z.string(), z.string().max(1024)).default({}),
    /** A new console password. */
    consolePassword: z.string().max(1024).optional(),
    /** The console password now, needed to change one that is set. */
    currentPassword: z.string().max(1024).optional(),
  })
  .strict();
export type SettingsRequest = z.infer<typeof settingsRequestSchema>;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Which fields are wrong and why, for a form to mark. */
    readonly problems?: { key: string; message: string }[],
  ) {
    super(message);
  }
}

export class SocketInUseError extends Error {
  constructor(path: string, who = "supervisor") {
    super(`another ${who} is already listening on ${path}`);
    this.name = "SocketInUseError";
  }
}

export async function listenControlSocket(
  path: string,
  supervisor: Supervisor,
  handlers: ControlHandlers,
): Promise<Server> {
  const server = createServer((req, res) => {
    handle(req, res, supervisor, handlers).catch((err: unknown) => {
      const apiError =
        err instanceof ApiError
          ? err
          : err instanceof UnknownServiceError
            ? new ApiError(404, err.code, err.message)
            : err instanceof ServiceInUseError
              ? new ApiError(409, err.code, err.message)
              : err instanceof ServiceTableError
                ? new ApiError(400, "bad-service", err.message)
                : new ApiError(500, "internal", err instanceof Error ? err.message : String(err));
      if (!res.headersSent)
        sendJson(res, apiError.status, {
          error: { code: apiError.code, message: apiError.message, problems: apiError.problems },
        });
      else res.end();
    });
  });
  await listenPrivateSocket(server, path);
  return server;
}

/**
 * Listens on a Unix socket that only root can use (0600 from the first instant), for the
 * node's local APIs. A socket file left by a dead process is removed; a live one is never
 * stolen (SocketInUseError).
 */
export async function listenPrivateSocket(
  server: Server,
  path: string,
  who = "supervisor",
): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  await removeStaleSocket(path, who);
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } finally {
    process.umask(oldMask);
  }
  chmodSync(path, 0o600);
}

/** A socket file left by a dead process is removed; a live one is never stolen. */
async function removeStaleSocket(path: string, who: string): Promise<void> {
  const alive = await new Promise<boolean>((resolve) => {
    const socket = connect(path);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
  if (alive) throw new SocketInUseError(path, who);
  try {
    unlinkSync(path);
  } catch {
    // Nothing there.
  }
}

const MAX_BODY = 256 * 1024;

async function readJson(req: IncomingMessage): Promise<unknown> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY)
      throw new ApiError(413, "too-large", `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch (err) {
    throw new ApiError(400, "bad-json", `request body is not JSON: ${(err as Error).message}`);
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  supervisor: Supervisor,
  handlers: ControlHandlers,
): Promise<void> {
  const url = new URL(req.url ?? "/", "http://supervisor");
  const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  const method = req.method ?? "GET";
  const route = `${method} /${parts.map((p, i) => (i >= 2 ? ":" : p)).join("/")}`;
  const name = parts[2] ?? "";

  switch (route) {
    case "GET /v1/services":
      return sendJson(res, 200, { services: supervisor.statuses() });
    case "GET /v1/services/:":
      return sendJson(res, 200, { service: supervisor.get(name).status() });
    case "PUT /v1/services/:": {
      const body = await readJson(req);
      const parsed = serviceSpecSchema.safeParse(body);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new ApiError(
          400,
          "bad-service",
          `service ${name}: field ${issue?.path.join(".") || "(spec)"}: ${issue?.message}`,
        );
      }
      if (parsed.data.name !== name)
        throw new ApiError(400, "bad-service", `spec names "${parsed.data.name}", not "${name}"`);
      await supervisor.define(parsed.data);
      return sendJson(res, 200, { service: supervisor.get(name).status() });
    }
    case "DELETE /v1/services/:":
      await supervisor.remove(name);
      return sendJson(res, 200, { removed: name });
    case "POST /v1/services/:/:": {
      const action = parts[3];
      if (action === "start") await supervisor.start(name);
      else if (action === "stop") await supervisor.stop(name);
      else if (action === "restart") await supervisor.restart(name);
      else
        throw new ApiError(404, "unknown-action", `no action "${action}" (start, stop, restart)`);
      return sendJson(res, 200, { service: supervisor.get(name).status() });
    }
    case "GET /v1/logs/:":
      return streamLogs(req, res, supervisor, name, url.searchParams);
    case "GET /v1/node":
      return sendJson(res, 200, handlers.node());
    case "PUT /v1/node/:": {
      if (name !== "settings")
        throw new ApiError(404, "not-found", `no such endpoint: PUT ${url.pathname}`);
      const parsed = settingsRequestSchema.safeParse(await readJson(req));
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new ApiError(
          400,
          "bad-request",
          `field ${issue?.path.join(".") || "(body)"}: ${issue?.message}`,
        );
      }
      return sendJson(res, 200, await handlers.configure(parsed.data));
    }
    case "POST /v1/console/:": {
      if (name !== "check-password")
        throw new ApiError(404, "not-found", `no such endpoint: POST ${url.pathname}`);
      const body = z.object({ password: z.string().max(1024) }).safeParse(await readJson(req));
      if (!body.success) throw new ApiError(400, "bad-request", 'the body is {"password": "..."}');
      return sendJson(res, 200, handlers.checkPassword(body.data.password));
    }
    case "POST /v1/power/:": {
      if (name !== "poweroff" && name !== "reboot") {
        throw new ApiError(404, "unknown-action", `no power action "${name}" (poweroff, reboot)`);
      }
      sendJson(res, 202, { action: name });
      handlers.power(name);
      return;
    }
    default:
      throw new ApiError(404, "not-found", `no such endpoint: ${method} ${url.pathname}`);
  }
}

function streamLogs(
  req: IncomingMessage,
  res: ServerResponse,
  supervisor: Supervisor,
  name: string,
  params: URLSearchParams,
): void {
  const buffer = supervisor.logsOf(name);
  const linesParam = params.get("lines");
  const lines = linesParam === null ? 100 : Number(linesParam);
  if (!Number.isInteger(lines) || lines < 0) {
    throw new ApiError(400, "bad-request", `lines must be a whole number, not "${linesParam}"`);
  }
  const follow = params.get("follow") === "1";
  res.writeHead(200, { "content-type": "application/x-ndjson" });
  const write = (entry: LogEntry) => res.write(`${JSON.stringify(entry)}\n`);
  let last = 0;
  for (const entry of buffer.tail(lines)) {
    write(entry);
    last = entry.seq;
  }
  if (!follow) {
    res.end();
    return;
  }
  const unsubscribe = buffer.subscribe((entry) => {
    if (entry.seq > last) write(entry);
  });
  req.socket.on("close", unsubscribe);
}

import { request } from "node:https";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import type { ConsoleChunk } from "../agent/index.js";
import { ApiError } from "./app-api.js";
import type { NodeRecord } from "./layout.js";
import type { NodeTls } from "./node-state.js";

/**
 * An instance's console log, from whichever node runs it. The local API asks the grid
 * service of this node; when the instance runs elsewhere, this node asks that node's API
 * over mutual TLS (both sides show a certificate of the grid CA: only members of the grid
 * read consoles), at GET /v1/instances/APP/ID/console?from=N&max=N.
 */

/** The peer API's path: application and instance names as the model allows them. */
export const INSTANCE_CONSOLE =
  /^\/v1\/instances\/([a-z][a-z0-9-]{0,31})\/([a-z][a-z0-9-]{0,31}\.\d{1,5})\/console(\?.*)?$/;
/** The local API's path (grid socket). */
export const APP_INSTANCE_CONSOLE =
  /^\/v1\/apps\/([a-z][a-z0-9-]{0,31})\/instances\/([a-z][a-z0-9-]{0,31}\.\d{1,5})\/console(\?.*)?$/;
/** The most one call returns: a console is followed by asking again from where it ended. */
export const CONSOLE_MAX_BYTES = 1 << 20;
const DEFAULT_BYTES = 64 * 1024;

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

/** Asks the node that runs an instance for a piece of its console. */
export function peerConsole(
  node: Pick<NodeRecord, "nodeId" | "hostname" | "address" | "apiPort">,
  tls: NodeTls,
  app: string,
  instance: string,
  q: ConsoleQuery,
  timeoutMs = 5000,
): Promise<ConsoleChunk> {
  const where = `${node.hostname} (${node.address})`;
  return new Promise((resolve, reject) => {
    const search = new URLSearchParams({
      ...(q.from !== null ? { from: String(q.from) } : {}),
      max: String(q.max),
    });
    const req = request({
      host: node.address,
      port: node.apiPort,
      path: `/v1/instances/${app}/${instance}/console?${search}`,
      method: "GET",
      agent: false,
      ca: tls.caPem,
      cert: tls.certPem,
      key: tls.keyPem,
      minVersion: "TLSv1.3",
      timeout: timeoutMs,
      // Its certificate must be the grid CA's for that very node (its id is a DNS name in it).
      servername: node.nodeId,
      checkServerIdentity: (_host: string, cert: PeerCertificate) =>
        checkServerIdentity(node.nodeId, cert),
    });
    const fail = (message: string) => {
      req.destroy();
      reject(new ApiError(message, "node-unreachable", 502));
    };
    req.on("timeout", () => fail(`${where} did not answer within ${timeoutMs} ms`));
    req.on("error", (err) => fail(`cannot reach ${where}: ${err.message}`));
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => {
        let parsed: { error?: { code: string; message: string } } & Partial<ConsoleChunk>;
        try {
          parsed = JSON.parse(body);
        } catch {
          return reject(
            new ApiError(
              `${where} answered HTTP ${res.statusCode} without JSON`,
              "node-unreachable",
              502,
            ),
          );
        }
        if (parsed.error)
          return reject(
            new ApiError(
              `${where}: ${parsed.error.message}`,
              parsed.error.code,
              res.statusCode ?? 502,
            ),
          );
        resolve(parsed as ConsoleChunk);
      });
    });
    req.end();
  });
}

import { createWriteStream } from "node:fs";
import type { IncomingMessage } from "node:http";
import { request } from "node:https";
import { pipeline } from "node:stream/promises";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import type { ConsoleChunk, ImagePeers } from "../agent/index.js";
import { APP_IN_PATH, ApiError, type ConsoleQuery, INSTANCE_IN_PATH } from "../api/index.js";
import type { NodeRecord } from "./layout.js";
import type { NodeTls } from "./node-state.js";

/**
 * The API between members of the grid (HTTPS on each node's API port, mutual TLS), and the
 * first things on it: an instance's console log, and class images by sha256.
 *
 * An instance's console log, from whichever node runs it. The local API asks the grid
 * service of this node; when the instance runs elsewhere, this node asks that node's API
 * over mutual TLS (both sides show a certificate of the grid CA: only members of the grid
 * read consoles), at GET /v1/instances/APP/ID/console?from=N&max=N.
 */

/** The peer API's path: application and instance names as the model allows them. */
export const INSTANCE_CONSOLE = new RegExp(
  `^/v1/instances/${APP_IN_PATH}/${INSTANCE_IN_PATH}/console(\\?.*)?$`,
);
/** A member of the grid, as the registry knows it. */
export type PeerNode = Pick<NodeRecord, "nodeId" | "hostname" | "address" | "apiPort">;

/**
 * GET `path` from a peer's API over mutual TLS: this node shows its certificate, and the
 * peer's must be the grid CA's for that very node (its id is a DNS name in it). Resolves with
 * a 200 response; any other answer is an ApiError with the peer's code and message.
 */
export function peerGet(
  node: PeerNode,
  tls: NodeTls,
  path: string,
  timeoutMs = 5000,
): Promise<IncomingMessage> {
  return peerRequest(node, tls, "GET", path, timeoutMs);
}

/** peerGet for any method, with an optional body. */
export function peerRequest(
  node: PeerNode,
  tls: NodeTls,
  method: "GET" | "POST",
  path: string,
  timeoutMs = 5000,
  body?: Buffer,
): Promise<IncomingMessage> {
  const where = `${node.hostname} (${node.address})`;
  return new Promise((resolve, reject) => {
    const req = request({
      host: node.address,
      port: node.apiPort,
      path,
      method,
      ...(body ? { headers: { "content-length": body.length } } : {}),
      agent: false,
      ca: tls.caPem,
      cert: tls.certPem,
      key: tls.keyPem,
      minVersion: "TLSv1.3",
      timeout: timeoutMs,
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
      // Once it answers, a slow body is the reader's business.
      req.setTimeout(0);
      if (res.statusCode === 200) return resolve(res);
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        if (body.length < 65536) body += c;
      });
      res.on("end", () => {
        let error: { code?: string; message?: string } | undefined;
        try {
          error = (JSON.parse(body) as { error?: { code: string; message: string } }).error;
        } catch {
          // Not JSON.
        }
        reject(
          new ApiError(
            `${where}: ${error?.message ?? `HTTP ${res.statusCode}`}`,
            error?.code ?? "node-unreachable",
            res.statusCode ?? 502,
          ),
        );
      });
    });
    req.end(body);
  });
}

/** Reads a whole JSON answer. */
function readJson<T>(res: IncomingMessage): Promise<T> {
  return new Promise((resolve, reject) => {
    let body = "";
    res.setEncoding("utf8");
    res.on("data", (c: string) => {
      body += c;
    });
    res.on("error", reject);
    res.on("end", () => {
      try {
        resolve(JSON.parse(body) as T);
      } catch {
        reject(new ApiError("a peer answered without JSON", "node-unreachable", 502));
      }
    });
  });
}

/** Asks the node that runs an instance for a piece of its console. */
export async function peerConsole(
  node: PeerNode,
  tls: NodeTls,
  app: string,
  instance: string,
  q: ConsoleQuery,
): Promise<ConsoleChunk> {
  const search = new URLSearchParams({
    ...(q.from !== null ? { from: String(q.from) } : {}),
    max: String(q.max),
  });
  return readJson<ConsoleChunk>(
    await peerGet(node, tls, `/v1/instances/${app}/${instance}/console?${search}`),
  );
}

/** The peer API's live console of an instance: GET .../stream, POST .../input (raw bytes). */
export const INSTANCE_CONSOLE_LIVE = new RegExp(
  `^/v1/instances/${APP_IN_PATH}/${INSTANCE_IN_PATH}/console/(stream|input)$`,
);

/** Opens the live console of an instance that a peer runs (no time limit once it answers). */
export function peerConsoleStream(
  node: PeerNode,
  tls: NodeTls,
  app: string,
  instance: string,
): Promise<IncomingMessage> {
  return peerGet(node, tls, `/v1/instances/${app}/${instance}/console/stream`);
}

/** Types at the console of an instance that a peer runs. */
export async function peerConsoleInput(
  node: PeerNode,
  tls: NodeTls,
  app: string,
  instance: string,
  bytes: Buffer,
): Promise<{ queued: number }> {
  return readJson<{ queued: number }>(
    await peerRequest(
      node,
      tls,
      "POST",
      `/v1/instances/${app}/${instance}/console/input`,
      5000,
      bytes,
    ),
  );
}

/** The peer API's class image paths: the manifest, or a part by its sha256. */
export const PEER_IMAGE = /^\/v1\/images\/(manifest|[0-9a-f]{64})$/;

/** Class images from the other members of the grid, each asked in turn until one has it. */
export function peerImages(peers: () => PeerNode[], tls: () => NodeTls | null): ImagePeers {
  const each = async <T>(what: string, get: (p: PeerNode, t: NodeTls) => Promise<T>) => {
    const t = tls();
    const list = peers();
    if (!t || list.length === 0) throw new Error(`${what}: no other member of the grid to ask`);
    const errors: string[] = [];
    // Not always the same one first: the load of a fresh node's fetches spreads.
    const start = Math.floor(Math.random() * list.length);
    for (let i = 0; i < list.length; i++) {
      const p = list[(start + i) % list.length] as PeerNode;
      try {
        return await get(p, t);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
    throw new Error(`${what}: no peer has it (${errors.join("; ")})`);
  };
  return {
    manifest: () =>
      each("the catalog manifest", async (p, t) => {
        const res = await peerGet(p, t, "/v1/images/manifest");
        let text = "";
        res.setEncoding("utf8");
        for await (const chunk of res) text += chunk;
        return text;
      }),
    part: (sha256, dest) =>
      each(`class image part ${sha256.slice(0, 12)}`, async (p, t) => {
        // A whole root disk: the time limit is on the answer, not on the transfer.
        const res = await peerGet(p, t, `/v1/images/${sha256}`, 10_000);
        await pipeline(res, createWriteStream(dest));
      }),
  };
}

/**
 * The peer API's certificate renewal, for a member whose address changed: it shows its
 * certificate of the grid (for its old address), sends a request for its new one, and gets
 * it signed by the CA for the address the peer sees it coming from.
 */
export const PEER_CERTIFICATE = "/v1/certificate";

/**
 * Asks the member at `address` to sign `csrPem` for this node's address now. Any member
 * will do: the peer's certificate only has to be the grid CA's (NODE_TLS_NAME is in all).
 */
export async function peerRenewCertificate(
  address: string,
  apiPort: number,
  tlsName: string,
  tls: NodeTls,
  csrPem: string,
  timeoutMs: number,
): Promise<string> {
  const peer: PeerNode = { nodeId: tlsName, hostname: "a member", address, apiPort };
  const body = Buffer.from(JSON.stringify({ csr: csrPem }));
  const res = await peerRequest(peer, tls, "POST", PEER_CERTIFICATE, timeoutMs, body);
  const { certPem } = await readJson<{ certPem?: string }>(res);
  if (typeof certPem !== "string")
    throw new ApiError(`${address}: no certificate`, "bad-grant", 502);
  return certPem;
}

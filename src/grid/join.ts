import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { request } from "node:https";
import type { TLSSocket } from "node:tls";
import { z } from "zod";

/**
 * Joining a grid: a node proves it holds the join token, and learns the grid's CA and its
 * own certificate, over TLS. Neither side sends the token. Each proof is an HMAC keyed by
 * the token over the TLS session's exported keying material (RFC 5705/8446) and the message,
 * so a proof cannot be replayed on another connection or relayed by a man in the middle.
 *
 *   joiner -> member   POST /v1/join  JoinRequest  (proof: "flatgrid join request")
 *   member -> joiner   200 JoinGrant  (proof: "flatgrid join grant": the member knows the
 *                      token too, so it is of the grid the joiner was configured for)
 *                      403 {"error":{"code":"wrong-token"}} and nothing else
 *
 * The discovery advert that led the joiner here is only a hint; this is the trust step.
 */

export const JOIN_PATH = "/v1/join";
const EKM_LABEL = "EXPORTER-flatgrid-join";
const EKM_BYTES = 32;
const REQUEST_CONTEXT = "flatgrid join request v1";
const GRANT_CONTEXT = "flatgrid join grant v1";

export class JoinError extends Error {
  constructor(
    message: string,
    /** wrong-token, bad-request, unreachable, not-member, bad-grant */
    readonly code: string,
  ) {
    super(message);
    this.name = "JoinError";
  }
}

export const joinRequestSchema = z
  .object({
    nodeId: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/),
    hostname: z.string().max(253),
    gridName: z.string().max(63),
    address: z.string().max(64),
    csr: z.string().max(8192),
    proof: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();
export type JoinRequest = z.infer<typeof joinRequestSchema>;

export const joinGrantSchema = z
  .object({
    gridId: z.string(),
    gridName: z.string(),
    caPem: z.string(),
    certPem: z.string(),
    /** etcd client URLs of the voters, to reach the grid's state. */
    etcdEndpoints: z.array(z.string()).min(1),
    proof: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();
export type JoinGrant = z.infer<typeof joinGrantSchema>;

/** Canonical bytes of a message without its proof: keys sorted, so both ends agree. */
function digest(message: Record<string, unknown>): Buffer {
  const { proof: _, ...rest } = message;
  const sorted = Object.fromEntries(Object.entries(rest).sort(([a], [b]) => (a < b ? -1 : 1)));
  return createHash("sha256").update(JSON.stringify(sorted)).digest();
}

export function prove(
  token: string,
  context: "request" | "grant",
  keyingMaterial: Buffer,
  message: Record<string, unknown>,
): string {
  return createHmac("sha256", token)
    .update(context === "request" ? REQUEST_CONTEXT : GRANT_CONTEXT)
    .update(keyingMaterial)
    .update(digest(message))
    .digest("hex");
}

export function checkProof(
  token: string,
  context: "request" | "grant",
  keyingMaterial: Buffer,
  message: Record<string, unknown> & { proof: string },
): boolean {
  const want = Buffer.from(prove(token, context, keyingMaterial, message), "hex");
  const got = Buffer.from(message.proof, "hex");
  return got.length === want.length && timingSafeEqual(got, want);
}

export function keyingMaterial(socket: TLSSocket): Buffer {
  // No context: the message digest in each proof binds the content.
  return socket.exportKeyingMaterial(EKM_BYTES, EKM_LABEL, Buffer.alloc(0));
}

export interface JoinTarget {
  address: string;
  port: number;
  nodeId: string;
}

/**
 * Asks one member to let this node in. The member's certificate is not checked against a CA
 * here (the joiner has none yet); its proof of the token is what counts, and then the grant's
 * CA must have signed the certificate the member presented.
 */
export function requestJoin(
  target: JoinTarget,
  token: string,
  fields: Omit<JoinRequest, "proof">,
  timeoutMs = 5000,
): Promise<{ grant: JoinGrant; peerCertPem: string }> {
  return new Promise((resolve, reject) => {
    const host = target.address.includes(":") ? `[${target.address}]` : target.address;
    const req = request({
      host: target.address,
      port: target.port,
      path: JOIN_PATH,
      method: "POST",
      agent: false,
      rejectUnauthorized: false,
      minVersion: "TLSv1.3",
      timeout: timeoutMs,
      headers: { "content-type": "application/json", host },
    });
    const fail = (message: string, code: string) => {
      req.destroy();
      reject(new JoinError(message, code));
    };
    req.on("timeout", () =>
      fail(
        `node ${target.nodeId} at ${host}:${target.port} did not answer within ${timeoutMs} ms`,
        "unreachable",
      ),
    );
    req.on("error", (err) =>
      fail(
        `cannot reach node ${target.nodeId} at ${host}:${target.port}: ${err.message}`,
        "unreachable",
      ),
    );
    req.on("socket", (socket) => {
      (socket as TLSSocket).once("secureConnect", () => {
        const ekm = keyingMaterial(socket as TLSSocket);
        const body: JoinRequest = { ...fields, proof: prove(token, "request", ekm, fields) };
        req.end(JSON.stringify(body));
        req.once("response", (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => {
            if (text.length < 65536) text += c;
          });
          res.on("end", () => {
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              return fail(
                `node ${target.nodeId} answered with something that is not JSON`,
                "bad-grant",
              );
            }
            if (res.statusCode !== 200) {
              const error = (json as { error?: { code?: string; message?: string } }).error;
              return fail(
                `node ${target.nodeId} refused the join: ${error?.message ?? `HTTP ${res.statusCode}`}`,
                error?.code ?? "refused",
              );
            }
            const parsed = joinGrantSchema.safeParse(json);
            if (!parsed.success)
              return fail(`node ${target.nodeId} sent a malformed grant`, "bad-grant");
            if (!checkProof(token, "grant", ekm, parsed.data))
              return fail(
                `node ${target.nodeId} does not know the join token: it is not of grid ${fields.gridName}`,
                "bad-grant",
              );
            const peer = (socket as TLSSocket).getPeerX509Certificate();
            resolve({ grant: parsed.data, peerCertPem: peer?.toString() ?? "" });
          });
        });
      });
    });
  });
}

import type { Etcd3 } from "etcd3";
import {
  type AdminTokenInfo,
  type AdminTokenRecord,
  ApiError,
  isTokenId,
  newAdminToken,
  parseAdminToken,
  secretDigest,
  secretMatches,
  tokenInfo,
} from "../api/index.js";
import { keys } from "./layout.js";

/**
 * The grid's admin tokens in etcd (keys.adminToken): one record per token, its secret kept
 * only as a digest. Any member with quorum makes, lists and revokes them; they are not the
 * controller's (no fencing needed: a token is the caller's, not the scheduler's, state).
 */

const MAX_TOKENS = 1000;

export async function createAdminToken(
  client: Etcd3,
  name: string,
  createdBy: string,
): Promise<{ token: string; info: AdminTokenInfo }> {
  const tokens = await listAdminTokens(client);
  if (tokens.length >= MAX_TOKENS)
    throw new ApiError(
      `the grid has ${tokens.length} admin tokens, the most it keeps: revoke some first`,
      "too-many-tokens",
      409,
    );
  const made = newAdminToken();
  const record: AdminTokenRecord = {
    id: made.id,
    name,
    digest: secretDigest(made.secret),
    createdAt: new Date().toISOString(),
    createdBy,
  };
  // A new id each time; the compare only guards a 48-bit collision.
  const key = keys.adminToken(made.id);
  const r = await client
    .if(key, "Create", "==", 0)
    .then(client.put(key).value(JSON.stringify(record)))
    .commit();
  if (!r.succeeded) throw new ApiError("a token id collided; ask again", "conflict", 409);
  return { token: made.token, info: tokenInfo(record) };
}

export async function listAdminTokens(client: Etcd3): Promise<AdminTokenInfo[]> {
  const all = await client.getAll().prefix(keys.adminTokens).strings();
  return Object.values(all)
    .map((text) => tokenInfo(JSON.parse(text) as AdminTokenRecord))
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
}

export async function revokeAdminToken(client: Etcd3, id: string): Promise<void> {
  const deleted = isTokenId(id) ? await client.delete().key(keys.adminToken(id)) : null;
  if (!deleted || Number(deleted.deleted) === 0)
    throw new ApiError(
      `no admin token with id ${id} (\`flatgrid token ls\` lists them)`,
      "no-such-token",
      404,
    );
}

/** The token's record when the grid knows it and the secret matches; else null. */
export async function verifyAdminToken(
  client: Etcd3,
  token: string,
): Promise<AdminTokenInfo | null> {
  const parsed = parseAdminToken(token);
  if (!parsed) return null;
  const text = await client.get(keys.adminToken(parsed.id)).string();
  if (!text) return null;
  const record = JSON.parse(text) as AdminTokenRecord;
  return secretMatches(record, parsed.secret) ? tokenInfo(record) : null;
}

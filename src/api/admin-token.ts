import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * Admin tokens: what a person or a script shows the HTTPS API (`Authorization: Bearer
 * TOKEN`) and the console (in place of its password). A token is `fgt1.ID.SECRET`: the id
 * names its record, the secret is 32 random bytes. The grid keeps only the secret's sha256:
 * a copy of etcd's data gives no token. With 256 bits of secret, guessing is hopeless, so a
 * plain digest is enough (a password needs a slow hash; a random secret does not).
 */

export const TOKEN_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const TOKEN_ID = /^[0-9a-f]{12}$/;
const TOKEN = /^fgt1\.([0-9a-f]{12})\.([A-Za-z0-9_-]{43})$/;

/** What the grid stores of a token: never the token itself. */
export interface AdminTokenRecord {
  id: string;
  name: string;
  /** sha256 of the secret, hex. */
  digest: string;
  createdAt: string;
  /** The hostname of the node whose API made it. */
  createdBy: string;
}

/** A token as listings show it: no digest. */
export type AdminTokenInfo = Omit<AdminTokenRecord, "digest">;

export function isTokenId(id: string): boolean {
  return TOKEN_ID.test(id);
}

export function newAdminToken(): { id: string; secret: string; token: string } {
  const id = randomBytes(6).toString("hex");
  const secret = randomBytes(32).toString("base64url");
  return { id, secret, token: `fgt1.${id}.${secret}` };
}

/** The id and secret of a token, or null when the text is not one. */
export function parseAdminToken(text: string): { id: string; secret: string } | null {
  const m = TOKEN.exec(text.trim());
  return m ? { id: m[1] as string, secret: m[2] as string } : null;
}

export function secretDigest(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

/** Whether `secret` is the one whose digest the record keeps (in constant time). */
export function secretMatches(record: Pick<AdminTokenRecord, "digest">, secret: string): boolean {
  const want = Buffer.from(record.digest, "hex");
  const got = Buffer.from(secretDigest(secret), "hex");
  return want.length === got.length && timingSafeEqual(want, got);
}

export function tokenInfo(record: AdminTokenRecord): AdminTokenInfo {
  const { digest: _digest, ...info } = record;
  return info;
}

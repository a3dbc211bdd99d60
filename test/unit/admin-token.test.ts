import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  apiOrigin,
  isTokenId,
  newAdminToken,
  parseAdminToken,
  secretDigest,
  secretMatches,
  TOKEN_NAME,
  tokenInfo,
} from "../../src/api/index.js";

describe("admin tokens", () => {
  it("a new token parses back to its id and secret; the record's digest matches only it", () => {
    const t = newAdminToken();
    assert.match(t.token, /^fgt1\.[0-9a-f]{12}\.[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(parseAdminToken(t.token), { id: t.id, secret: t.secret });
    assert.deepEqual(parseAdminToken(` ${t.token}\n`), { id: t.id, secret: t.secret });
    assert.ok(isTokenId(t.id));
    const record = { digest: secretDigest(t.secret) };
    assert.ok(secretMatches(record, t.secret));
    assert.ok(!secretMatches(record, newAdminToken().secret));
    assert.ok(!secretMatches({ digest: "00" }, t.secret), "a short digest is no match");
    assert.notEqual(newAdminToken().token, t.token);
  });

  it("what is not a token is null, never a partial parse", () => {
    for (const text of [
      "",
      "console-pass-1",
      "fgt1..",
      `fgt1.${"0".repeat(11)}.${"A".repeat(43)}`,
      `fgt1.${"0".repeat(12)}.${"A".repeat(42)}`,
      `fgt2.${"0".repeat(12)}.${"A".repeat(43)}`,
      `fgt1.${"G".repeat(12)}.${"A".repeat(43)}`,
      `fgt1.${"0".repeat(12)}.${"A".repeat(43)}x`,
    ])
      assert.equal(parseAdminToken(text), null, text);
    assert.ok(!isTokenId("../grid/ca-key"), "an id never leaves its key prefix");
  });

  it("listings never carry the digest; names are short and plain", () => {
    const info = tokenInfo({
      id: "0123456789ab",
      name: "ci",
      digest: "ff",
      createdAt: "t",
      createdBy: "n",
    });
    assert.deepEqual(info, { id: "0123456789ab", name: "ci", createdAt: "t", createdBy: "n" });
    assert.ok(TOKEN_NAME.test("alice") && TOKEN_NAME.test("ci-2.prod_x"));
    assert.ok(!TOKEN_NAME.test("Alice") && !TOKEN_NAME.test("") && !TOKEN_NAME.test("a b"));
  });
});

describe("API addresses", () => {
  it("https, a host and a port (7443 by default); anything else is a usage error naming it", () => {
    assert.equal(apiOrigin("10.0.0.5").href, "https://10.0.0.5:7443/");
    assert.equal(apiOrigin("https://node-1:8443").href, "https://node-1:8443/");
    assert.equal(apiOrigin("https://[fd00::1]").host, "[fd00::1]:7443");
    assert.equal(apiOrigin("https://node-1:443").port, "", "443 written: URL keeps it implicit");
    assert.throws(
      () => apiOrigin("http://10.0.0.5"),
      /--api http:\/\/10\.0\.0\.5: the grid API speaks only https/,
    );
    assert.throws(() => apiOrigin("https://10.0.0.5/v1/apps"), /no path/);
    assert.throws(() => apiOrigin("https://"), /not an address/);
  });
});

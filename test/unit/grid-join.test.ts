import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { decodeTxt, encodeTxt } from "../../src/discovery/index.js";
import {
  certifiedNodeId,
  checkProof,
  createCa,
  createNodeRequest,
  fingerprint,
  NodeState,
  PkiError,
  prove,
  signNodeRequest,
} from "../../src/grid/index.js";

describe("join proofs", () => {
  const ekm = randomBytes(32);
  const msg = { nodeId: "n1", csr: "x", gridName: "g" };

  it("a proof made with the token checks; any change to token, session or message fails", () => {
    const proof = prove("secret", "request", ekm, msg);
    assert.ok(checkProof("secret", "request", ekm, { ...msg, proof }));
    assert.ok(!checkProof("other", "request", ekm, { ...msg, proof }));
    assert.ok(!checkProof("secret", "request", randomBytes(32), { ...msg, proof }));
    assert.ok(!checkProof("secret", "request", ekm, { ...msg, csr: "y", proof }));
    // A request proof is not a grant proof: the contexts differ.
    assert.ok(!checkProof("secret", "grant", ekm, { ...msg, proof }));
  });

  it("key order does not matter; a malformed proof is just false", () => {
    const proof = prove("secret", "grant", ekm, { b: 1, a: 2 });
    assert.ok(checkProof("secret", "grant", ekm, { a: 2, b: 1, proof }));
    assert.ok(!checkProof("secret", "grant", ekm, { a: 2, b: 1, proof: "zz" }));
  });
});

describe("grid PKI", () => {
  it("signs a node's request; the certificate names the node and chains to the CA", async () => {
    const ca = await createCa("g", "grid-id");
    const req = await createNodeRequest("node-1");
    const cert = await signNodeRequest(ca, req.csrPem, {
      nodeId: "node-1",
      addresses: ["10.0.0.1"],
      names: ["flatgrid-node"],
    });
    assert.equal(certifiedNodeId(cert, ca.certPem), "node-1");
    assert.match(fingerprint(ca.certPem), /^[0-9a-f]{64}$/);
    const other = await createCa("g", "grid-2");
    assert.throws(() => certifiedNodeId(cert, other.certPem), PkiError);
  });

  it("refuses a request for another node id, and garbage", async () => {
    const ca = await createCa("g", "grid-id");
    const req = await createNodeRequest("node-1");
    await assert.rejects(
      signNodeRequest(ca, req.csrPem, { nodeId: "node-2", addresses: [] }),
      /names "node-1", not node node-2/,
    );
    await assert.rejects(
      signNodeRequest(
        ca,
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        {
          nodeId: "node-1",
          addresses: [],
        },
      ),
      PkiError,
    );
  });
});

describe("node state", () => {
  it("keeps the node id and writes the key for root only", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fg-state-"));
    try {
      const a = new NodeState(dir);
      const id = a.nodeId();
      assert.equal(new NodeState(dir).nodeId(), id);
      const ca = await createCa("g", "gid");
      a.saveMembership(
        {
          id: "gid",
          name: "g",
          caFingerprint: fingerprint(ca.certPem),
          joinedAt: "",
          creator: true,
        },
        { caPem: ca.certPem, certPem: ca.certPem, keyPem: ca.keyPem },
      );
      assert.equal(statSync(join(dir, "tls", "node.key")).mode & 0o777, 0o600);
      assert.equal(new NodeState(dir).grid()?.name, "g");
      assert.equal(readFileSync(join(dir, "tls", "ca.pem"), "utf8"), ca.certPem);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("advert grid name", () => {
  const base = { nodeId: "n-1", gridId: "", state: "forming", apiPort: 7443, caFingerprint: "" };
  it("travels in TXT as name=, and is optional", () => {
    assert.equal(decodeTxt(encodeTxt({ ...base, gridName: "rack-a" })).gridName, "rack-a");
    assert.equal(decodeTxt(encodeTxt(base)).gridName, undefined);
    assert.throws(() => encodeTxt({ ...base, gridName: "Not A Name" }), /grid name/);
  });
});

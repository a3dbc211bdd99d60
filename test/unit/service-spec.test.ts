import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseServiceTable, ServiceTableError, startOrder } from "../../src/os/service-spec.js";

const svc = (name: string, dependsOn: string[] = []) => ({ name, command: ["true"], dependsOn });

describe("service table", () => {
  it("fills defaults for a minimal service", () => {
    const [spec] = parseServiceTable({ services: [{ name: "etcd", command: ["etcd"] }] }, "t.json");
    assert.equal(spec?.restart.policy, "always");
    assert.equal(spec?.restart.maxFailures, 5);
    assert.deepEqual(spec?.readiness, { type: "started" });
    assert.equal(spec?.stopTimeoutMs, 10_000);
    assert.equal(spec?.enabled, true);
  });

  it("names the file, service and field of a bad entry", () => {
    assert.throws(
      () =>
        parseServiceTable(
          { services: [svc("ok"), { name: "api", command: ["x"], stopTimeoutMs: -1 }] },
          "/etc/flatgrid/services.d/api.json",
        ),
      (err: unknown) =>
        err instanceof ServiceTableError &&
        err.message.startsWith(
          "/etc/flatgrid/services.d/api.json: service api field stopTimeoutMs:",
        ),
    );
    assert.throws(
      () => parseServiceTable({ services: [{ name: "Bad Name", command: ["x"] }] }, "t.json"),
      /t\.json: service Bad Name field name: must be 1-32 characters/,
    );
    assert.throws(
      () => parseServiceTable({ services: [{ name: "a", command: ["x"], typo: 1 }] }, "t.json"),
      /service a/,
    );
    assert.throws(() => parseServiceTable({ servics: [] }, "t.json"), /t\.json/);
  });

  it("rejects duplicates, unknown dependencies and cycles", () => {
    assert.throws(
      () => parseServiceTable({ services: [svc("a"), svc("a")] }, "t"),
      /service a: is defined twice/,
    );
    assert.throws(
      () => parseServiceTable({ services: [svc("a", ["ghost"])] }, "t"),
      /service a field dependsOn: depends on unknown service "ghost"/,
    );
    assert.throws(
      () =>
        parseServiceTable(
          { services: [svc("a", ["c"]), svc("b", ["a"]), svc("c", ["b"]), svc("d")] },
          "t",
        ),
      /dependency cycle among a, b, c/,
    );
  });

  it("orders by dependency, stable in table order", () => {
    const specs = parseServiceTable(
      {
        services: [
          svc("api", ["etcd"]),
          svc("console"),
          svc("etcd"),
          svc("agent", ["etcd", "api"]),
        ],
      },
      "t",
    );
    assert.deepEqual(startOrder(specs), ["console", "etcd", "api", "agent"]);
  });
});

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RestartTracker } from "../../src/os/restart-policy.js";
import { serviceSpecSchema } from "../../src/os/service-spec.js";

const policy = (restart: object) =>
  serviceSpecSchema.parse({ name: "x", command: ["x"], restart }).restart;

describe("restart policy", () => {
  it("backs off exponentially up to the cap", () => {
    const t = new RestartTracker(
      policy({ initialDelayMs: 100, factor: 2, maxDelayMs: 500, maxFailures: 100 }),
    );
    const delays = [0, 1, 2, 3, 4].map((i) => {
      const d = t.onExit({ code: 1, signal: null, ranMs: 10, at: i * 1000 });
      assert.equal(d.action, "restart");
      return d.action === "restart" ? d.delayMs : -1;
    });
    assert.deepEqual(delays, [100, 200, 400, 500, 500]);
  });

  it("gives up after K failures within T, and forgets failures older than T", () => {
    const t = new RestartTracker(policy({ maxFailures: 3, windowMs: 10_000 }));
    assert.equal(t.onExit({ code: 1, signal: null, ranMs: 5, at: 0 }).action, "restart");
    assert.equal(t.onExit({ code: 1, signal: null, ranMs: 5, at: 1_000 }).action, "restart");
    // The first failure is out of the window by now.
    assert.equal(t.onExit({ code: 1, signal: null, ranMs: 5, at: 10_500 }).action, "restart");
    const last = t.onExit({ code: null, signal: "SIGSEGV", ranMs: 5, at: 10_900 });
    assert.equal(last.action, "give-up");
    assert.match(last.action === "give-up" ? last.reason : "", /failed 3 times within 10 s/);
  });

  it("starts the delay over after a long healthy run", () => {
    const t = new RestartTracker(
      policy({ initialDelayMs: 100, resetAfterMs: 1000, maxFailures: 100 }),
    );
    t.onExit({ code: 1, signal: null, ranMs: 5, at: 0 });
    t.onExit({ code: 1, signal: null, ranMs: 5, at: 1 });
    const after = t.onExit({ code: 1, signal: null, ranMs: 5000, at: 6000 });
    assert.deepEqual(after.action === "restart" && after.delayMs, 100);
  });

  it("honours never and on-failure", () => {
    assert.equal(
      new RestartTracker(policy({ policy: "never" })).onExit({
        code: 1,
        signal: null,
        ranMs: 1,
        at: 0,
      }).action,
      "stay-stopped",
    );
    const onFailure = new RestartTracker(policy({ policy: "on-failure" }));
    assert.equal(
      onFailure.onExit({ code: 0, signal: null, ranMs: 1, at: 0 }).action,
      "stay-stopped",
    );
    assert.equal(onFailure.onExit({ code: 2, signal: null, ranMs: 1, at: 1 }).action, "restart");
  });

  it("forgets failures on reset (a manual start)", () => {
    const t = new RestartTracker(policy({ maxFailures: 2 }));
    t.onExit({ code: 1, signal: null, ranMs: 1, at: 0 });
    t.reset();
    assert.equal(t.onExit({ code: 1, signal: null, ranMs: 1, at: 1 }).action, "restart");
  });
});

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { onInstanceFailure } from "../../src/controller/index.js";

const H = 3_600_000;

describe("crashed instances", () => {
  it("restart with a growing delay, then give up at the third failure within 24 h", () => {
    const t0 = 1_000_000_000;
    assert.deepEqual(onInstanceFailure("shop/db.0", [t0], t0), {
      action: "restart",
      atMs: t0 + 1000,
      attempt: 1,
    });
    assert.deepEqual(onInstanceFailure("shop/db.0", [t0, t0 + H], t0 + H), {
      action: "restart",
      atMs: t0 + H + 4000,
      attempt: 2,
    });
    const third = onInstanceFailure("shop/db.0", [t0, t0 + H, t0 + 2 * H], t0 + 2 * H);
    assert.equal(third.action, "give-up");
    assert.match(
      (third as { alert: string }).alert,
      /shop\/db.0 failed 3 times since .*left stopped/,
    );
  });

  it("failures older than 24 h do not count", () => {
    const now = 100 * H;
    const d = onInstanceFailure("x", [now - 30 * H, now - 25 * H, now], now);
    assert.equal(d.action, "restart");
  });
});

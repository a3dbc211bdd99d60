// Reading and cutting an instance's console log; the query of the console API. The real
// path, across nodes over mutual TLS: test/cluster/apps.test.ts ("app logs").
import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { CONSOLE_LOG_MAX, readConsole, rotateConsole } from "../../src/agent/index.js";
import { ApiError, parseConsoleQuery } from "../../src/api/index.js";

const dir = mkdtempSync(join(tmpdir(), "flatgrid-console-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("instance console logs", () => {
  it("reads the end, then follows from where the last read ended", () => {
    const log = join(dir, "a.log");
    writeFileSync(log, "0123456789");
    assert.deepEqual(readConsole(log, null, 4), { text: "6789", from: 6, to: 10, rotated: false });
    appendFileSync(log, "abc");
    assert.deepEqual(readConsole(log, 10, 100), { text: "abc", from: 10, to: 13, rotated: false });
    assert.deepEqual(readConsole(log, 13, 100), { text: "", from: 13, to: 13, rotated: false });
    assert.deepEqual(readConsole(log, 2, 3), { text: "234", from: 2, to: 5, rotated: false });
  });

  it("a log cut since the last read is read again from its start, and says so", () => {
    const log = join(dir, "b.log");
    writeFileSync(log, "new");
    assert.deepEqual(readConsole(log, 500, 100), { text: "new", from: 0, to: 3, rotated: true });
  });

  it("a missing log is empty: the VM has not started on this node yet", () => {
    assert.deepEqual(readConsole(join(dir, "none.log"), null, 100), {
      text: "",
      from: 0,
      to: 0,
      rotated: false,
    });
  });

  it("cuts a log past its limit, keeping its last part beside it", () => {
    const log = join(dir, "c.log");
    writeFileSync(log, "x".repeat(CONSOLE_LOG_MAX));
    assert.equal(rotateConsole(log), false, "at the limit it stays");
    appendFileSync(log, "the end\n");
    assert.equal(rotateConsole(log), true);
    assert.equal(readFileSync(log, "utf8"), "");
    const kept = readFileSync(`${log}.1`, "utf8");
    assert.equal(kept.length, 256 * 1024);
    assert.ok(kept.endsWith("the end\n"));
  });

  it("takes from and max as whole numbers in range, or says which is wrong", () => {
    assert.deepEqual(parseConsoleQuery(""), { from: null, max: 65536 });
    assert.deepEqual(parseConsoleQuery("?from=10&max=5"), { from: 10, max: 5 });
    assert.throws(() => parseConsoleQuery("?max=0"), ApiError);
    assert.throws(
      () => parseConsoleQuery("?max=2097152"),
      /max: 2097152 is not a whole number from 1 to 1048576/,
    );
    assert.throws(() => parseConsoleQuery("?from=-1"), /from: -1 is not/);
    assert.throws(() => parseConsoleQuery("?from=1.5"), /from: 1\.5 is not/);
  });
});

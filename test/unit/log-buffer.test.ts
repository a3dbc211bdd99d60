import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LineSplitter, LogBuffer, parseLogLine } from "../../src/os/log-buffer.js";

describe("log buffer", () => {
  it("keeps at most maxEntries, dropping the oldest", () => {
    const b = new LogBuffer(3, 1 << 20);
    for (let i = 1; i <= 5; i++) b.append({ stream: "stdout", msg: `line ${i}` });
    assert.deepEqual(
      b.tail().map((e) => e.msg),
      ["line 3", "line 4", "line 5"],
    );
    assert.deepEqual(
      b.tail().map((e) => e.seq),
      [3, 4, 5],
    );
    assert.deepEqual(
      b.tail(2, 3).map((e) => e.seq),
      [4, 5],
    );
  });

  it("keeps its byte bound under a flood", () => {
    const b = new LogBuffer(1_000_000, 64 * 1024);
    for (let i = 0; i < 20_000; i++) b.append({ stream: "stderr", msg: "x".repeat(100) });
    assert.ok(b.byteSize <= 64 * 1024, `${b.byteSize} bytes`);
    assert.ok(b.size > 100);
    assert.equal(b.tail(1)[0]?.seq, 20_000);
  });

  it("truncates a huge line rather than keeping it whole", () => {
    const b = new LogBuffer();
    const e = b.append({ stream: "stdout", msg: "y".repeat(100_000) });
    assert.ok(e.msg.length < 20_000 && e.msg.endsWith("[truncated]"));
  });

  it("notifies followers until they unsubscribe", () => {
    const b = new LogBuffer();
    const seen: string[] = [];
    const off = b.subscribe((e) => seen.push(e.msg));
    b.append({ stream: "stdout", msg: "a" });
    off();
    b.append({ stream: "stdout", msg: "b" });
    assert.deepEqual(seen, ["a"]);
  });

  it("parses pino lines into level, message and fields, and keeps anything else as text", () => {
    const line =
      '{"level":40,"time":1700000000000,"pid":9,"hostname":"n","msg":"disk slow","ms":12}';
    assert.deepEqual(parseLogLine(line, true), {
      msg: "disk slow",
      level: 40,
      time: 1700000000000,
      fields: { ms: 12 },
    });
    assert.deepEqual(parseLogLine("{not json", true), { msg: "{not json" });
    assert.deepEqual(parseLogLine(line, false), { msg: line });
  });

  it("splits chunks into lines across boundaries", () => {
    const lines: string[] = [];
    const s = new LineSplitter((l) => lines.push(l));
    s.push("ab");
    s.push("c\r\nde\nf");
    s.flush();
    assert.deepEqual(lines, ["abc", "de", "f"]);
  });
});

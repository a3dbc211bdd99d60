import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, it } from "node:test";
import {
  partialReplyAtEnd,
  SizeProbe,
  sizeFromCursor,
  takeCursorReplies,
} from "../../src/console/index.js";
import { consoleTerm } from "../../src/os/index.js";

describe("a serial line's size, asked of the terminal", () => {
  it("is where a cursor sent to the far corner stopped", () => {
    assert.deepEqual(sizeFromCursor(43, 132), { rows: 43, cols: 132 });
    assert.deepEqual(sizeFromCursor(24, 80), { rows: 24, cols: 80 });
  });

  it("is nothing when the reply makes no sense", () => {
    assert.equal(sizeFromCursor(1, 1), null);
    assert.equal(sizeFromCursor(Number.NaN, 24), null);
    assert.equal(sizeFromCursor(100_000, 80), null);
    assert.equal(sizeFromCursor(24, 5000), null);
  });

  it("takes cursor reports out of the input, and leaves keys, modified F3 included", () => {
    assert.deepEqual(takeCursorReplies("a\x1b[30;100Rb"), {
      rest: "ab",
      replies: [{ rows: 30, cols: 100 }],
    });
    // Ctrl-F3 on some terminals: the same form, row 1.
    assert.deepEqual(takeCursorReplies("\x1b[1;5R"), { rest: "\x1b[1;5R", replies: [] });
    // Nonsense is still no key: out, without a size.
    assert.deepEqual(takeCursorReplies("\x1b[9999;9999R"), { rest: "", replies: [] });
    assert.deepEqual(takeCursorReplies("\x1b[A"), { rest: "\x1b[A", replies: [] });
  });

  it("asks without moving anything (save, far corner, ask, restore); the reply never reaches the keys", async () => {
    const input = new EventEmitter();
    const written: string[] = [];
    const probe = new SizeProbe(input, (t) => written.push(t));
    const keys: string[] = [];
    input.on("data", (d: Buffer) => keys.push(d.toString("latin1")));
    const asked = probe.ask();
    assert.deepEqual(written, ["\x1b7\x1b[999;999H\x1b[6n\x1b8"]);
    input.emit("data", Buffer.from("x\x1b[30;100R", "latin1"));
    assert.deepEqual(await asked, { rows: 30, cols: 100 });
    // A late reply, after nobody waits any more: still not a key.
    input.emit("data", Buffer.from("\x1b[24;80R", "latin1"));
    input.emit("data", Buffer.from("\xe9R", "latin1"));
    assert.deepEqual(keys, ["x", "\xe9R"]);
  });

  it("finds the start of a reply that the line cut off at the end of what came", () => {
    assert.equal(partialReplyAtEnd("a\x1b"), "\x1b");
    assert.equal(partialReplyAtEnd("a\x1b["), "\x1b[");
    assert.equal(partialReplyAtEnd("\x1b[30"), "\x1b[30");
    assert.equal(partialReplyAtEnd("\x1b[30;"), "\x1b[30;");
    assert.equal(partialReplyAtEnd("\x1b[30;10"), "\x1b[30;10");
    assert.equal(partialReplyAtEnd("\x1b[30;100R"), "");
    assert.equal(partialReplyAtEnd("\x1b[A"), "");
    assert.equal(partialReplyAtEnd("abc"), "");
  });

  it("puts a reply that the line cut anywhere back together: no piece of it reaches the keys", async () => {
    const reply = "\x1b[30;100R";
    for (let cut = 1; cut < reply.length; cut++) {
      const input = new EventEmitter();
      const probe = new SizeProbe(input, () => {});
      const keys: string[] = [];
      input.on("data", (d: Buffer) => keys.push(d.toString("latin1")));
      const asked = probe.ask();
      input.emit("data", Buffer.from(`a${reply.slice(0, cut)}`, "latin1"));
      input.emit("data", Buffer.from(`${reply.slice(cut)}b`, "latin1"));
      assert.deepEqual(await asked, { rows: 30, cols: 100 }, `cut after ${cut} characters`);
      assert.deepEqual(keys, ["a", "b"], `cut after ${cut} characters`);
    }
    // One character at a time, as a slow line may hand them over.
    const input = new EventEmitter();
    const probe = new SizeProbe(input, () => {});
    const keys: string[] = [];
    input.on("data", (d: string) => keys.push(d));
    const asked = probe.ask();
    for (const c of reply) input.emit("data", c);
    assert.deepEqual(await asked, { rows: 30, cols: 100 });
    assert.deepEqual(keys, []);
  });

  it("lets a lone Escape, or a key's sequence that is no reply, go on", async () => {
    const input = new EventEmitter();
    new SizeProbe(input, () => {});
    const keys: string[] = [];
    input.on("data", (d: Buffer) => keys.push(d.toString("latin1")));
    input.emit("data", Buffer.from("\x1b", "latin1"));
    assert.deepEqual(keys, []);
    await new Promise((r) => setTimeout(r, 120));
    assert.deepEqual(keys, ["\x1b"]);
    // Cut Up arrow: joined again, and passed on whole.
    input.emit("data", Buffer.from("\x1b[", "latin1"));
    input.emit("data", Buffer.from("A", "latin1"));
    // Ctrl-F3 (row 1) is a key, never a reply.
    input.emit("data", Buffer.from("\x1b[1;5", "latin1"));
    input.emit("data", Buffer.from("R", "latin1"));
    assert.deepEqual(keys, ["\x1b", "\x1b[A", "\x1b[1;5R"]);
  });

  it("is nothing when nobody answers in time", async () => {
    const probe = new SizeProbe(new EventEmitter(), () => {});
    assert.equal(await probe.ask(20), null);
  });
});

describe("the terminal type of a console", () => {
  it("is linux on the kernel's VTs and xterm on serial lines", () => {
    assert.equal(consoleTerm("tty1"), "linux");
    assert.equal(consoleTerm("tty12"), "linux");
    assert.equal(consoleTerm("ttyS0"), "xterm");
    assert.equal(consoleTerm("ttyS2"), "xterm");
    assert.equal(consoleTerm("ttyAMA0"), "xterm");
  });
});

// watchApp and onNode against a stand-in for a node's debug shell: a Unix socket that echoes
// what is typed and answers `flatgrid app status` from a script, as the node's ash would.
// The same code runs against real emulated nodes in test/e2e/sim.test.ts.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { AppStatus } from "../../src/grid/index.js";
import { instancesLine, jsonLine, onNode, type SimNode, watchApp } from "../../src/sim/index.js";

const dir = mkdtempSync(join(tmpdir(), "flatgrid-shell-"));
const socket = join(dir, "shell.sock");
/** What `app status --json` answers, one entry per question; the last one repeats. */
let answers: string[] = [];
let asked = 0;
let server: Server;

const status = (states: string[]): string =>
  JSON.stringify({
    app: {},
    instances: states.map((state, i) => ({ id: `web.${i}`, state, hostname: "node-1" })),
    published: [],
  } as unknown as AppStatus);

function answer(command: string): { out: string; code: number } {
  if (command.startsWith("flatgrid app status shop --json")) {
    const out = answers[Math.min(asked, answers.length - 1)] ?? "";
    asked++;
    return { out, code: out.startsWith("{") ? 0 : 1 };
  }
  return { out: `ran: ${command}`, code: 0 };
}

before(async () => {
  server = createServer((c) => {
    let typed = "";
    c.on("data", (d) => {
      for (const ch of d.toString("latin1")) {
        if (ch === "\x15") continue;
        c.write(ch);
        if (ch !== "\n") {
          typed += ch;
          continue;
        }
        // echo FG"tagB"; COMMAND; echo FG"tagE"$?
        const m = /^echo FG"(\w+)B"; (.*); echo FG"\w+E"\$\?$/.exec(typed);
        typed = "";
        if (!m) continue;
        const { out, code } = answer(m[2] ?? "");
        c.write(`FG${m[1]}B\r\n${out ? `${out}\r\n` : ""}FG${m[1]}E${code}\r\n/ # `);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
});

after(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

const node = {
  index: 1,
  name: "node-1",
  qemu: { shellSocket: socket, qmpSocket: join(dir, "no-qmp.sock") },
} as unknown as SimNode;

describe("simulator: commands on a node's debug shell", () => {
  it("jsonLine takes the first JSON object line, null for none or a broken one", () => {
    assert.deepEqual(jsonLine('flatgrid: note\n{"a":1}\n{"b":2}'), { a: 1 });
    assert.equal(jsonLine("no json here"), null);
    assert.equal(jsonLine("{not json"), null);
  });

  it("onNode returns the command's output alone, without the typed line or markers", async () => {
    assert.equal(await onNode(node, "uname -r", { settleMs: 10 }), "ran: uname -r\n");
  });

  it("watchApp asks again through errors, reports each change once, returns when done", async () => {
    answers = [
      "flatgrid: no etcd quorum yet",
      status(["placed"]),
      status(["placed"]),
      status(["starting"]),
      status(["running"]),
    ];
    asked = 0;
    const changes: string[] = [];
    const view = await watchApp(node, "shop", {
      done: (v) => v.instances.every((i) => i.state === "running"),
      timeoutMs: 60_000,
      intervalMs: 10,
      settleMs: 10,
      onChange: (line) => changes.push(line),
    });
    assert.equal(instancesLine(view), "web.0 running node-1");
    assert.deepEqual(changes, [
      "no answer (flatgrid: no etcd quorum yet)",
      "web.0 placed node-1",
      "web.0 starting node-1",
      "web.0 running node-1",
    ]);
    assert.equal(asked, 5);
  });

  it("watchApp fails after its timeout, naming the application, node and last answer", async () => {
    answers = [status(["starting"])];
    asked = 0;
    await assert.rejects(
      watchApp(node, "shop", {
        done: (v) => v.instances.every((i) => i.state === "running"),
        timeoutMs: 300,
        intervalMs: 10,
        settleMs: 10,
      }),
      /shop on node-1: not there within 0.3 s; last: web.0 starting node-1/,
    );
  });
});

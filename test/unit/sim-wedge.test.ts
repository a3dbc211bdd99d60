import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { nudgeConsole, unwedge, WEDGED } from "../../src/sim/index.js";

/**
 * A node as QMP and its ttyS0 show it, on real unix sockets: its one vCPU is wedged (halted,
 * its timer vector pending) until a byte comes on the console, or for good when `stuck`.
 * The real QEMU cannot be made to wedge on demand; the e2e suite runs the same calls on a
 * live node, which is not wedged.
 */
class FakeNode {
  readonly dir = mkdtempSync(join(tmpdir(), "fg-wedge-"));
  readonly qmpSocket = join(this.dir, "qmp.sock");
  readonly consoleSocket = join(this.dir, "console.sock");
  wedged = true;
  stuck = false;
  consoleBytes = "";
  private readonly servers: Server[] = [];

  async start(): Promise<void> {
    const qmp = createServer((c) => {
      c.write(`${JSON.stringify({ QMP: { version: {} } })}\n`);
      let buffer = "";
      c.on("data", (d) => {
        buffer += d.toString();
        for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
          const msg = JSON.parse(buffer.slice(0, nl)) as {
            execute: string;
            arguments?: { "command-line": string };
          };
          buffer = buffer.slice(nl + 1);
          c.write(`${JSON.stringify({ return: this.answer(msg.arguments?.["command-line"]) })}\n`);
        }
      });
    });
    const console = createServer((c) => {
      c.on("data", (d) => {
        this.consoleBytes += d.toString();
        if (!this.stuck) this.wedged = false;
      });
    });
    for (const [server, path] of [
      [qmp, this.qmpSocket],
      [console, this.consoleSocket],
    ] as const) {
      await new Promise<void>((resolve) => server.listen(path, resolve));
      this.servers.push(server);
    }
  }

  private answer(command: string | undefined): unknown {
    if (command === undefined) return {};
    if (command === "info registers -a")
      return `CPU#0\nRIP=ffffffff81c0a3ce RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=${this.wedged ? 1 : 0}\nCR3=0000000012628000\n`;
    return [
      "LVTT\t 0x000000ec active-hi edge                 one-shot     Fixed  (vec 236)",
      "ISR\t (none)",
      `IRR\t ${this.wedged ? "236" : "(none)"} `,
      "APR 0x00 TPR 0x10 DFR 0x0f LDR 0x01 PPR 0x10",
    ].join("\n");
  }

  stop(): void {
    for (const s of this.servers) s.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe("simulator: ending a wedge", () => {
  const node = new FakeNode();
  before(() => node.start());
  after(() => node.stop());

  it("nudges a wedged node through its console, and sees it go on", async () => {
    node.wedged = true;
    node.stuck = false;
    node.consoleBytes = "";
    const r = await unwedge(node);
    assert.match(r.wedged, /^vCPU 0: RIP ffffffff81c0a3ce CPL 0 interrupts on halted/);
    assert.ok(r.wedged.endsWith(WEDGED));
    assert.equal(r.still, "");
    assert.equal(node.consoleBytes, "\r");
  });

  it("says when the nudge did not end it", async () => {
    node.wedged = true;
    node.stuck = true;
    const r = await unwedge(node);
    assert.ok(r.wedged.endsWith(WEDGED));
    assert.equal(r.still, r.wedged);
  });

  it("leaves a running node alone", async () => {
    node.wedged = false;
    node.consoleBytes = "";
    assert.deepEqual(await unwedge(node), { wedged: "", still: "" });
    assert.equal(node.consoleBytes, "");
  });

  it("only looks again without a console socket", async () => {
    node.wedged = true;
    node.stuck = false;
    const r = await unwedge({ qmpSocket: node.qmpSocket });
    assert.equal(r.still, r.wedged);
    assert.ok(r.still.endsWith(WEDGED));
  });

  it("reports a console nobody serves as not nudged, without throwing", async () => {
    assert.equal(await nudgeConsole(join(node.dir, "absent.sock")), false);
  });
});

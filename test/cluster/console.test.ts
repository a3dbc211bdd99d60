/**
 * The console, headless: the real program on a terminal of tmux, run by node 1's real
 * supervisor (as on a node, where it runs on tty1) in a 2-node grid of the cluster harness.
 * Keys go in with send-keys, the screen comes back with capture-pane.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { ControlClient, type ServiceStatus } from "../../src/os/index.js";
import { formed, GridCluster } from "./grid-harness.js";
import { sleep, sweepStale } from "./netns.js";

const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
const SESSION = `fgconsole-${process.pid}`;

function progress(msg: string): void {
  process.stderr.write(`  console: ${msg}\n`);
}

const tmux = (...args: string[]) => execFileSync("tmux", args, { encoding: "utf8" });
const screenText = () => tmux("capture-pane", "-p", "-t", SESSION);

describe("the console on a node's terminal, under tmux", { concurrency: false }, () => {
  let g: GridCluster;
  let supervisor: ControlClient;

  /** Waits until the screen matches; fails with what it shows. */
  const until = async (
    what: string,
    want: RegExp | ((text: string) => boolean),
    timeoutMs = 15_000,
  ): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    let text = "";
    while (Date.now() < deadline) {
      text = screenText();
      if (typeof want === "function" ? want(text) : want.test(text)) return text;
      await sleep(200);
    }
    assert.fail(`the screen did not show ${what} in ${timeoutMs} ms; it shows:\n${text}`);
  };
  const consoleService = async () =>
    (await supervisor.get<{ service: ServiceStatus }>("/v1/services/console")).service;

  before(async () => {
    sweepStale();
    g = GridCluster.create({ nodes: 2 });
    g.startAll();
    await g.until("one grid of 2 nodes", formed(2), 60_000);
  });

  after(async () => {
    try {
      tmux("kill-session", "-t", SESSION);
    } catch {}
    await g?.destroy();
  });

  it("run by the supervisor on a terminal, the node screen shows the node's grid, role and address", async () => {
    // A terminal of 100×30 whose own process never reads: the console opens it as a node's
    // console opens tty1, and the keys sent to the pane reach the console.
    tmux("new-session", "-d", "-s", SESSION, "-x", "100", "-y", "30", "sleep 100000");
    const pts = tmux("display-message", "-p", "-t", SESSION, "#{pane_tty}").trim();
    const term = tmux("show-options", "-gv", "default-terminal").trim() || "screen";
    supervisor = new ControlClient(g.node(1).socket);
    await supervisor.put("/v1/services/console", {
      name: "console",
      command: [
        process.execPath,
        CLI,
        "console",
        `--tty=${pts}`,
        `--socket=${g.node(1).socket}`,
        `--data-dir=${g.node(1).dir}/state`,
      ],
      env: { TERM: term },
      restart: { initialDelayMs: 200, maxFailures: 1000 },
    });
    const status = await g.status(1);
    assert.ok(status?.grid);
    // CPU use needs two readings: the second refresh has it.
    const text = await until("the node screen with CPU use", /^CPU +\[[| ]+\] +\d+ %/m);
    const role =
      (status.term !== null ? "controller, " : "") +
      (status.etcdRole === "none" ? "client" : `etcd ${status.etcdRole}`);
    assert.match(text, /^ flatgrid {2}\| {2}node-1 {2}\| {2}grid testgrid {2}\| /m);
    assert.match(text, /^ F1 Node {3}F2 Grid {3}F3 Logs/m);
    assert.match(text, new RegExp(`^NODE +node-1 +id ${status.nodeId}$`, "m"));
    assert.match(text, new RegExp(`^GRID +testgrid \\(${status.grid.id.slice(0, 8)}\\)$`, "m"));
    assert.match(text, new RegExp(`^ROLE +${role}$`, "m"));
    assert.match(text, /^LINKS +eth0 +up +10\.213\.0\.1\/24/m);
    assert.match(text, /^CPU +\[[| ]+\] +\d+ % +of \d+ CPUs?$/m);
    assert.match(text, /^SERVICES +.*grid running/m);
    progress(`node screen, role ${role}:\n${text.replace(/^/gm, "    ")}`);
  });

  it("F2 shows the grid: both nodes with their roles, the controller and HA", async () => {
    tmux("send-keys", "-t", SESSION, "F2");
    const text = await until("the grid screen", /^NODES \(2\)$/m);
    const status = await g.status(1);
    const ctl = status?.nodes.find((n) => n.nodeId === status.controller);
    assert.ok(ctl);
    assert.match(
      text,
      new RegExp(`^CONTROLLER +${ctl.hostname} \\(${ctl.nodeId.slice(0, 8)}\\)$`, "m"),
    );
    assert.match(text, /^HA +ok: the grid can lose any one node/m);
    assert.match(text, /^node-1 +10\.213\.0\.1 +.* ok /m);
    assert.match(text, /^node-2 +10\.213\.0\.2 +.* ok /m);
    assert.match(text, /^APPLICATIONS \(0\)$/m);
  });

  it("F3 follows the grid service's log live; a search keeps the matching lines", async () => {
    tmux("send-keys", "-t", SESSION, "F3");
    await until("the grid service's log", /^LOG grid {2}\d+ lines$/m);
    tmux("send-keys", "-t", SESSION, "/");
    await until("the search prompt", /^ search:/m);
    tmux("send-keys", "-t", SESSION, "-l", "phase:");
    tmux("send-keys", "-t", SESSION, "Enter");
    const text = await until(
      "the matching lines",
      /^LOG grid {2}\d+ of \d+ lines match "phase:"$/m,
    );
    const lines = text
      .split("\n")
      .slice(3)
      .filter((l) => l.trim() && !/^ Left\/Right/.test(l));
    assert.ok(lines.length >= 2, text);
    for (const l of lines) assert.match(l, /phase:/);
    assert.match(text, /phase: member/);
    // Live: a line the grid service logs now shows up without a key pressed.
    tmux("send-keys", "-t", SESSION, "Escape");
    await until("every line again", /^LOG grid {2}\d+ lines$/m);
    const count = (text: string) => Number(/^LOG grid {2}(\d+) lines$/m.exec(text)?.[1] ?? 0);
    const before = count(screenText());
    await supervisor.post("/v1/services/grid/restart");
    const after = await until(
      "the restarted grid service's lines",
      (text) => count(text) > before && /restart requested[\s\S]*grid service ready/.test(text),
      30_000,
    );
    progress(`the grid service restarted: ${count(after) - before} new lines on the log screen`);
    await g.until("one grid again", formed(2), 60_000);
  });

  it("a resize redraws at the new size", async () => {
    tmux("send-keys", "-t", SESSION, "1");
    await until("the node screen", /^ROLE /m);
    tmux("resize-window", "-t", SESSION, "-x", "80", "-y", "25");
    const text = await until("a header 80 columns wide", /^ flatgrid .{60,}\d\d:\d\d:\d\d$/m);
    const lines = text.split("\n");
    const header = lines.find((l) => l.startsWith(" flatgrid"));
    // The clock ends one column short of the right edge (a space pads it).
    assert.equal(header?.length, 79, `header: "${header}"`);
    // The footer is on the last row of 25.
    assert.match(lines[24] ?? "", /^ F1-F3 or 1-3 or Tab: screens/);
  });

  it("q does not quit on a node's terminal; killed, the console comes back, drawn anew", async () => {
    const first = await consoleService();
    assert.ok(first.pid);
    tmux("send-keys", "-t", SESSION, "F2");
    await until("the grid screen", /^NODES \(2\)$/m);
    tmux("send-keys", "-t", SESSION, "q");
    await sleep(1000);
    assert.equal((await consoleService()).pid, first.pid, "q quit the console");
    process.kill(first.pid, "SIGKILL");
    const deadline = Date.now() + 15_000;
    let now = await consoleService();
    while ((now.pid === first.pid || now.pid === null) && Date.now() < deadline) {
      await sleep(200);
      now = await consoleService();
    }
    assert.notEqual(now.pid, first.pid, "the supervisor did not start the console again");
    // A new console starts on the node screen.
    await until("the node screen of the new console", /^ROLE +\S/m);
    assert.ok(now.restarts >= 1);
    progress(`killed with SIGKILL: back as pid ${now.pid} (restarts ${now.restarts})`);
  });
});

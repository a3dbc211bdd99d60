/**
 * The console, headless: the real program on a terminal of tmux, run by node 1's real
 * supervisor (as on a node, where it runs on tty1) in a 2-node grid of the cluster harness.
 * Keys go in with send-keys, the screen comes back with capture-pane.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type AppStatus, callGrid } from "../../src/grid/index.js";
import { ControlClient, ControlError, type ServiceStatus } from "../../src/os/index.js";
import { newTerminal, tmux } from "../tmux.js";
import { CLI, formed, GridCluster } from "./grid-harness.js";
import { idleCatalog } from "./idle-catalog.js";
import { sleep, sweepStale } from "./netns.js";

const SESSION = `fgconsole-${process.pid}`;
const TTY_HANGUP = fileURLToPath(new URL("../../../native/out/tty-hangup", import.meta.url));

function progress(msg: string): void {
  process.stderr.write(`  console: ${msg}\n`);
}

const FIRST_BOOT = `${SESSION}-3`;
let target = SESSION;
const screenText = () => tmux("capture-pane", "-p", "-t", target);
const keys = (...k: string[]) => tmux("send-keys", "-t", target, ...k);
const typeText = (t: string) => tmux("send-keys", "-t", target, "-l", t);

describe("the console on a node's terminal, under tmux", { concurrency: false }, () => {
  let g: GridCluster;
  let supervisor: ControlClient;
  let scratch = "";

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
  /** A tmux terminal of 100×30 whose own process never reads, and a console on it. */
  const consoleOn = async (session: string, index: number) => {
    // The pane's own process outlives a hangup of its terminal, as a VT's getty-less line does.
    newTerminal(session, 100, 30, "trap '' HUP; exec sleep 100000");
    const pts = tmux("display-message", "-p", "-t", session, "#{pane_tty}").trim();
    const term = tmux("show-options", "-gv", "default-terminal").trim() || "screen";
    const client = new ControlClient(g.node(index).socket);
    await client.put("/v1/services/console", {
      name: "console",
      command: [
        process.execPath,
        CLI,
        "console",
        `--tty=${pts}`,
        `--socket=${g.node(index).socket}`,
        `--data-dir=${g.node(index).dir}/state`,
      ],
      env: { TERM: term },
      restart: { initialDelayMs: 200, maxFailures: 1000 },
    });
    return client;
  };

  before(async () => {
    sweepStale();
    // Node 3 has no grid configured: it waits for its console's setup form.
    scratch = mkdtempSync(join(tmpdir(), "flatgrid-console-"));
    g = GridCluster.create({
      nodes: 3,
      unconfigured: [3],
      // For an instance to attach to: the idle test guest as every class.
      images: idleCatalog(join(scratch, "catalog")),
    });
    g.startAll();
    await g.until("one grid of 2 nodes", formed(2), 60_000, [1, 2]);
  });

  after(async () => {
    for (const session of [SESSION, FIRST_BOOT])
      try {
        tmux("kill-session", "-t", session);
      } catch {}
    await g?.destroy();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it("run by the supervisor on a terminal, the node screen shows the node's grid, role and address", async () => {
    // As a node's console opens tty1: the keys sent to the pane reach the console.
    supervisor = await consoleOn(SESSION, 1);
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
    keys("F2");
    // The applications and HA are read when the grid screen opens.
    const text = await until(
      "the grid screen with HA",
      /^NODES \(2\)$[\s\S]*^APPLICATIONS \(0\)$/m,
    );
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
    keys("F3");
    await until("the grid service's log", /^LOG grid {2}\d+ lines$/m);
    keys("/");
    await until("the search prompt", /^ search:/m);
    typeText("phase:");
    keys("Enter");
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
    keys("Escape");
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
    await g.until("one grid again", formed(2), 60_000, [1, 2]);
  });

  it("a resize redraws at the new size", async () => {
    keys("1");
    await until("the node screen", /^ROLE /m);
    tmux("resize-window", "-t", SESSION, "-x", "80", "-y", "25");
    const text = await until("a header 80 columns wide", /^ flatgrid .{60,}\d\d:\d\d:\d\d$/m);
    const lines = text.split("\n");
    const header = lines.find((l) => l.startsWith(" flatgrid"));
    // The clock ends one column short of the right edge (a space pads it).
    assert.equal(header?.length, 79, `header: "${header}"`);
    // The footer is on the last row of 25.
    assert.match(lines[24] ?? "", /^ F1-F4, Tab: screens {2}R: reboot/);
  });

  it("q does not quit on a node's terminal; killed, the console comes back, drawn anew", async () => {
    const first = await consoleService();
    assert.ok(first.pid);
    keys("F2");
    await until("the grid screen", /^NODES \(2\)$/m);
    keys("q");
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

  /** The console service's pid once it is not `old` (the supervisor started it again). */
  const restarted = async (old: number | null): Promise<ServiceStatus> => {
    const deadline = Date.now() + 15_000;
    let now = await consoleService();
    while ((now.pid === old || now.pid === null) && Date.now() < deadline) {
      await sleep(200);
      now = await consoleService();
    }
    assert.notEqual(now.pid, old, "the supervisor did not start the console again");
    return now;
  };
  const pts = () => tmux("display-message", "-p", "-t", SESSION, "#{pane_tty}").trim();
  const kernelSize = () => execFileSync("stty", ["-F", pts(), "size"], { encoding: "utf8" }).trim();

  const sizeBecomes = async (want: string) => {
    const deadline = Date.now() + 10_000;
    while (kernelSize() !== want && Date.now() < deadline) await sleep(100);
    assert.equal(kernelSize(), want, "the terminal's size as the kernel has it");
  };

  it("its terminal hung up (a serial line's carrier gone), the console ends and is started again, drawn anew", async () => {
    const first = await consoleService();
    keys("F2");
    await until("the grid screen", /^NODES \(2\)$/m);
    // Every descriptor open on the terminal is dead from now on; the terminal itself is not.
    execFileSync(TTY_HANGUP, [pts()]);
    const now = await restarted(first.pid);
    await until("the node screen of the new console", /^ROLE +\S/m);
    const logged: string[] = [];
    await supervisor.logs("console", { lines: 50, follow: false }, (e) => logged.push(e.msg));
    assert.ok(
      logged.some((msg) => /console: \/dev\/pts\/\d+ hung up \(/.test(msg)),
      logged.slice(-5).join("\n"),
    );
    progress(`hung up: the console ended; back as pid ${now.pid}`);
  });

  it("on a serial line (no size the kernel knows), the console asks the terminal for its size; Ctrl-L asks again and redraws", async () => {
    // A pseudo-terminal told 0×0 is what the kernel has for a serial line. The terminal at
    // its other end (tmux, 80×25 since the resize test) still answers where its cursor is.
    execFileSync("stty", ["-F", pts(), "rows", "0", "cols", "0"]);
    const first = await consoleService();
    process.kill(first.pid ?? 0, "SIGKILL");
    await restarted(first.pid);
    // Asked, not assumed: a line nobody answers on gets 80×24.
    await sizeBecomes("25 80");
    const text = await until("the node screen", /^ROLE +\S/m);
    assert.match(text.split("\n")[24] ?? "", /^ F1-F4, Tab: screens/);
    // The terminal grows, and the line never learns it (as a serial line would not).
    tmux("resize-window", "-t", SESSION, "-x", "100", "-y", "30");
    execFileSync("stty", ["-F", pts(), "rows", "0", "cols", "0"]);
    await sleep(500);
    keys("C-l");
    const wide = await until("a header 100 columns wide", /^ flatgrid .{80,}\d\d:\d\d:\d\d$/m);
    await sizeBecomes("30 100");
    assert.match(wide.split("\n")[29] ?? "", /^ F1-F4, Tab: screens/);
    // Its answers never reach the keys: R would have asked to reboot.
    assert.doesNotMatch(wide, /Reboot this server\?/);
  });

  it("first boot: the setup form marks a bad address, takes a good one, and the node joins the grid", {
    timeout: 120_000,
  }, async () => {
    target = FIRST_BOOT;
    const node3 = await consoleOn(FIRST_BOOT, 3);
    // A node without a grid opens on the form.
    await until("the setup form", /^ +Grid name +\[/m, 20_000);
    typeText("testgrid");
    keys("Enter");
    typeText("test-token-0123456789abcdef");
    keys("Enter", "Space", "Down");
    typeText("10.213.0.300/24");
    keys("Down");
    await until("the address marked", /\^ Address is not an IPv4 address with a prefix length/);
    keys("Up");
    for (let i = 0; i < 15; i++) keys("BSpace");
    typeText("10.213.0.3/24");
    keys("Down");
    await until("the mark gone", (t) => !/\^ Address/.test(t) && /Gateway/.test(t));
    keys("Down", "Down");
    typeText("console-pass-1");
    keys("Down");
    typeText("console-pass-1");
    keys("Down", "Enter");
    const saved = await until("the settings saved", /Saved in .*node\.conf/, 20_000);
    assert.match(saved, /grid service restarted/);
    progress(
      `setup form saved:\n${saved
        .split("\n")
        .filter((l) => /Saved|restarted|\^/.test(l))
        .join("\n")}`,
    );
    const t0 = Date.now();
    await g.until("node 3 in the grid", formed(3), 60_000);
    progress(`node 3 in the grid ${Date.now() - t0} ms after the form was saved`);
    const conf = readFileSync(join(g.node(3).dir, "state", "node.conf"), "utf8");
    assert.match(conf, /^flatgrid\.grid=testgrid$/m);
    assert.match(conf, /^flatgrid\.net=static$/m);
    assert.match(conf, /^flatgrid\.ip=10\.213\.0\.3\/24$/m);
    assert.match(
      readFileSync(join(g.node(3).dir, "state", "console-password"), "utf8"),
      /^scrypt\$[0-9a-f]+\$[0-9a-f]+$/m,
    );
    assert.deepEqual(
      await node3.post("/v1/console/check-password", { password: "console-pass-1" }),
      { set: true, ok: true },
    );
    keys("F1");
    await until("the node screen with the grid", /^GRID +testgrid \(/m, 20_000);
  });

  it("actions ask for the console password or an admin token: a wrong one does nothing; a shell opens, runs a command and returns; r restarts a service", {
    timeout: 120_000,
  }, async () => {
    target = FIRST_BOOT;
    const node3 = new ControlClient(g.node(3).socket);
    const before = (await node3.get<{ pid: number }>("/v1/node")).pid;
    keys("P");
    await until("the password question", /Power this server off\? Password or admin token/);
    typeText("not-the-password");
    keys("Enter");
    await until("the refusal", /Power this server off: wrong password, nothing done/);
    assert.equal((await node3.get<{ pid: number }>("/v1/node")).pid, before, "still running");
    keys("S");
    await until("the password question", /Open a root shell\? Password or admin token/);
    typeText("console-pass-1");
    keys("Enter");
    await until("the shell's prompt", /a root shell; exit returns to the console[\s\S]*[#$] *$/m);
    typeText("echo shell-$((6*7)) in $(hostname -I 2>/dev/null | cut -d' ' -f1)");
    keys("Enter");
    const shellText = await until("the command's output", /^shell-42 in/m);
    progress(`shell: ${shellText.split("\n").find((l) => l.startsWith("shell-42"))}`);
    typeText("exit");
    keys("Enter");
    await until("the node screen again", /^ROLE +\S/m);
    keys("F3");
    await until("the grid service's log", /^LOG grid {2}\d+ lines$/m);
    // The grid's admin token does as well as the password; a made-up one does nothing.
    const { token } = await callGrid<{ token: string }>(
      "POST",
      "/v1/tokens",
      g.node(3).gridSocket,
      { name: "console-test" },
    );
    keys("r");
    await until("the password question", /Restart grid\? Password or admin token/);
    typeText(`fgt1.000000000000.${"A".repeat(43)}`);
    keys("Enter");
    await until("the refusal", /Restart grid: not an admin token of this grid, nothing done/);
    keys("r");
    await until("the password question", /Restart grid\? Password or admin token/);
    typeText(token);
    keys("Enter");
    await until("the restart said", /grid: restarted/);
    await g.until("node 3 back in the grid", formed(3), 60_000);
    // The node's settings (the setup form's save) take the admin token as well, checked by
    // the supervisor with the grid service; a made-up token or a wrong password stores nothing.
    const put = (currentPassword: string) =>
      node3
        .put<{ changed: string[] }>("/v1/node/settings", {
          settings: { "flatgrid.dns": "10.213.0.254" },
          currentPassword,
        })
        .catch((err: ControlError) => err);
    const made = await put(`fgt1.000000000000.${"A".repeat(43)}`);
    assert.ok(made instanceof ControlError);
    assert.deepEqual(made.problems, [
      { key: "currentPassword", message: "is not an admin token of this grid" },
    ]);
    const wrong = await put("not-the-password");
    assert.ok(wrong instanceof ControlError);
    assert.deepEqual(wrong.problems, [
      { key: "currentPassword", message: "is not the console password" },
    ]);
    const conf = join(g.node(3).dir, "state", "node.conf");
    assert.doesNotMatch(readFileSync(conf, "utf8"), /flatgrid\.dns/);
    const stored = await put(token);
    assert.ok(!(stored instanceof ControlError), String(stored));
    assert.deepEqual(stored.changed, ["flatgrid.dns"]);
    assert.match(readFileSync(conf, "utf8"), /^flatgrid\.dns=10\.213\.0\.254$/m);
  });

  it("A on the grid screen attaches to an instance's serial console, wherever it runs; Ctrl-] comes back", {
    timeout: 120_000,
  }, async () => {
    target = FIRST_BOOT;
    await callGrid("POST", "/v1/apps", g.node(1).gridSocket, {
      file: "one.yaml",
      source:
        "name: one\nbudget: { cpus: 1, memory: 512MiB }\ncomponents:\n  box:\n    class: base@1\n",
    });
    let where = "";
    for (const deadline = Date.now() + 60_000; Date.now() < deadline && !where; await sleep(500)) {
      const st = await callGrid<AppStatus>("GET", "/v1/apps/one", g.node(1).gridSocket);
      const box = st.instances[0];
      if (box?.state === "running") where = box.hostname ?? "";
    }
    assert.ok(where, "one/box.0 runs");
    keys("F2");
    await until("the grid screen", /A: attach to an instance's console/);
    keys("A");
    await until("the question", /Attach to the console of \(APP\/INSTANCE/);
    typeText("one/box.0");
    keys("Enter");
    await until("the password question", /Attach to one\/box\.0\? Password or admin token/);
    typeText("console-pass-1");
    keys("Enter");
    await until("the instance's console", /^flatgrid-guest: ready\s*$/m, 20_000);
    keys("C-]");
    await until("the console again, and what became of the attach", /one\/box\.0: detached/);
    progress(`attached from node-3's console to one/box.0 on ${where}, and back`);
  });
});

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { CLI, type RunningSupervisor, startSupervisor } from "./harness.js";

function flatgrid(args: string[], socket = "/nonexistent/flatgrid.sock") {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: "utf8",
    env: { ...process.env, FLATGRID_SOCKET: socket },
    timeout: 30_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("flatgrid command", { timeout: 60_000 }, () => {
  let sv: RunningSupervisor;
  before(async () => {
    sv = await startSupervisor([{ name: "sleeper", command: ["sleep", "1000"] }]);
  });
  after(async () => {
    await sv.stop();
  });

  it("exits 2 with a message that says what was wrong on bad usage", () => {
    const cases: [string[], RegExp][] = [
      [["frobnicate"], /unknown command 'frobnicate'/],
      [["logs"], /missing required argument 'service'/],
      [["logs", "sleeper", "-n", "ten"], /'ten' is invalid\. must be a whole number/],
      [["services", "--colour"], /unknown option '--colour'/],
      [["service", "restart"], /missing required argument 'name'/],
      [[], /Usage: flatgrid/],
    ];
    for (const [args, message] of cases) {
      const r = flatgrid(args);
      assert.equal(r.status, 2, `flatgrid ${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    const json = flatgrid(["frobnicate", "--json"]);
    assert.equal(json.status, 2);
    assert.equal((JSON.parse(json.stdout) as { error: { code: string } }).error.code, "usage");
  });

  it("shows help for every command with exit 0", () => {
    for (const args of [
      ["--help"],
      ["services", "--help"],
      ["service", "restart", "--help"],
      ["logs", "--help"],
      ["version", "--help"],
    ]) {
      const r = flatgrid(args);
      assert.equal(r.status, 0, args.join(" "));
      assert.match(r.stdout, /Usage: flatgrid/);
    }
  });

  it("exits 1 with a clear reason when the supervisor cannot be reached", () => {
    const r = flatgrid(["services"]);
    assert.equal(r.status, 1);
    assert.match(
      r.stderr,
      /cannot reach the supervisor at \/nonexistent\/flatgrid\.sock: ENOENT \(is the supervisor running\?/,
    );
    const j = flatgrid(["services", "--json"]);
    assert.equal((JSON.parse(j.stdout) as { error: { code: string } }).error.code, "unreachable");
  });

  it("prints JSON that parses with --json", () => {
    const version = JSON.parse(flatgrid(["version", "--json"]).stdout) as { version: string };
    assert.match(version.version, /^\d+\.\d+\.\d+/);
    const services = flatgrid(["services", "--json"], sv.socket);
    assert.equal(services.status, 0);
    const parsed = JSON.parse(services.stdout) as {
      services: { name: string; state: string; pid: number }[];
    };
    assert.equal(parsed.services[0]?.name, "sleeper");
    assert.equal(parsed.services[0]?.state, "running");
    assert.ok(parsed.services[0]?.pid > 0);
    const logs = flatgrid(["logs", "sleeper", "--json"], sv.socket);
    const entries = logs.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { msg: string });
    assert.match(entries[0]?.msg ?? "", /^started: pid \d+ \(sleep 1000\)$/);
    const unknown = flatgrid(["service", "restart", "nosuch", "--json"], sv.socket);
    assert.equal(unknown.status, 1);
    assert.deepEqual(JSON.parse(unknown.stdout), {
      error: { code: "unknown-service", message: 'no service named "nosuch" (services: sleeper)' },
    });
  });

  it("shows the service table for people", () => {
    const r = flatgrid(["services"], sv.socket);
    assert.equal(r.status, 0);
    assert.match(
      r.stdout,
      /^SERVICE +STATE +PID +RESTARTS +UPTIME +DETAIL\nsleeper +running +\d+ +0 +\d+s/,
    );
  });
});

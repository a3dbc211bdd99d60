import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { LogEntry } from "../../src/os/index.js";
import { type RunningSupervisor, SUPERVISOR, startSupervisor, waitFor } from "./harness.js";

const running: RunningSupervisor[] = [];
const scratch = mkdtempSync(join(tmpdir(), "flatgrid-test-"));
after(async () => {
  await Promise.all(running.map((s) => s.stop()));
  rmSync(scratch, { recursive: true, force: true });
});

async function supervise(...args: Parameters<typeof startSupervisor>) {
  const s = await startSupervisor(...args);
  running.push(s);
  return s;
}

async function logsOf(s: RunningSupervisor, name: string): Promise<LogEntry[]> {
  const entries: LogEntry[] = [];
  await s.client.logs(name, { lines: 1000, follow: false }, (e) => entries.push(e));
  return entries;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("supervisor with real processes", { timeout: 120_000 }, () => {
  it("restarts a crashing service with growing delays, then gives up after K failures", async () => {
    const stamps = join(scratch, "starts");
    const t = await supervise([
      {
        name: "crashy",
        command: ["sh", "-c", `date +%s%N >> ${stamps}; echo "crash $$" >&2; exit 3`],
        restart: {
          initialDelayMs: 150,
          factor: 2,
          maxDelayMs: 5000,
          maxFailures: 4,
          windowMs: 60_000,
        },
      },
    ]);
    const failed = await waitFor("crashy to be given up", async () => {
      const st = await t.service("crashy");
      return st.state === "failed" ? st : undefined;
    });
    assert.equal(failed.restarts, 3);
    assert.match(failed.reason ?? "", /exited with code 3; gave up: failed 4 times within 60 s/);
    const starts = readFileSync(stamps, "utf8")
      .trim()
      .split("\n")
      .map((l) => Number(BigInt(l) / 1_000_000n));
    assert.equal(starts.length, 4);
    const gaps = starts.slice(1).map((t0, i) => t0 - (starts[i] ?? 0));
    // Delays of 150, 300 and 600 ms plus process start-up: each gap at least its delay, and growing.
    assert.ok(gaps[0]! >= 140 && gaps[1]! >= 290 && gaps[2]! >= 590, `gaps ${gaps}`);
    assert.ok(gaps[0]! < gaps[1]! && gaps[1]! < gaps[2]!, `gaps ${gaps}`);
    const notes = (await logsOf(t, "crashy")).map((e) => e.msg);
    assert.equal(notes.filter((m) => /^crash \d+$/.test(m)).length, 4);
    assert.ok(notes.some((m) => /restarting in 150 ms/.test(m)));
    assert.ok(notes.some((m) => /restarting in 600 ms/.test(m)));
    assert.ok(notes.some((m) => /giving up: failed 4 times/.test(m)));
    // It stays down: no fifth start.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(readFileSync(stamps, "utf8").trim().split("\n").length, 4);
    // An operator's start is a fresh try.
    const started = t.cli("service", "start", "crashy", "--json");
    assert.equal(started.status, 0, started.stderr);
    await waitFor("a fifth start", () =>
      readFileSync(stamps, "utf8").trim().split("\n").length >= 5 ? true : undefined,
    );
  });

  it("starts in dependency order once each dependency is ready, and stops in reverse", async () => {
    const journal = join(scratch, "journal");
    // Each service records its start and its stop; db takes a while to become ready.
    const svc = (name: string, dependsOn: string[], readyDelay = "0") => ({
      name,
      dependsOn,
      command: [
        "sh",
        "-c",
        `echo start ${name} >> ${journal}; trap 'echo stop ${name} >> ${journal}; exit 0' TERM; sleep ${readyDelay}; echo ready; while :; do sleep 0.05; done`,
      ],
      readiness: { type: "log" as const, pattern: "^ready$" },
    });
    const s = await supervise([svc("web", ["api"]), svc("api", ["db"]), svc("db", [], "0.7")]);
    await waitFor("web running", async () =>
      (await s.service("web")).state === "running" ? true : undefined,
    );
    const code = await s.stop();
    assert.equal(code, 0);
    const lines = readFileSync(journal, "utf8").trim().split("\n");
    assert.deepEqual(lines, [
      "start db",
      "start api",
      "start web",
      "stop web",
      "stop api",
      "stop db",
    ]);
  });

  it("kills a service that ignores SIGTERM after its stop timeout", async () => {
    const s = await supervise([
      {
        name: "stubborn",
        command: ["sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.1; done"],
        stopTimeoutMs: 800,
      },
    ]);
    const pid = await waitFor(
      "stubborn's pid",
      async () => (await s.service("stubborn")).pid ?? undefined,
    );
    const began = Date.now();
    const r = s.cli("service", "stop", "stubborn");
    const took = Date.now() - began;
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /stubborn: stopped/);
    assert.ok(took >= 700, `stopped after ${took} ms`);
    assert.equal(alive(pid), false);
    const notes = (await logsOf(s, "stubborn")).map((e) => e.msg);
    assert.ok(
      notes.some((m) => m === "did not stop within 800 ms: sending SIGKILL"),
      notes.join("\n"),
    );
    assert.ok(notes.some((m) => m === "killed by SIGKILL (stopped)"));
  });

  it("keeps a service's logs across its restarts and streams new lines to followers", async () => {
    const s = await supervise([
      {
        name: "talker",
        logFormat: "json",
        command: [
          "sh",
          "-c",
          `echo '{"level":30,"time":1,"msg":"hello","run":"'$$'"}'; echo plain text; exec sleep 1000`,
        ],
      },
    ]);
    const first = await waitFor(
      "first run",
      async () => (await s.service("talker")).pid ?? undefined,
    );
    await waitFor("first lines", async () =>
      (await logsOf(s, "talker")).some((e) => e.msg === "plain text") ? true : undefined,
    );
    const follower = new AbortController();
    const followed: LogEntry[] = [];
    const following = s.client.logs(
      "talker",
      { lines: 1, follow: true, signal: follower.signal },
      (e) => followed.push(e),
    );
    // The follower is connected once it has the last line (spawnSync below blocks this process).
    await waitFor("the follower to connect", () => (followed.length > 0 ? true : undefined));
    const r = s.cli("service", "restart", "talker", "--json");
    assert.equal(r.status, 0, r.stderr);
    const reply = JSON.parse(r.stdout) as {
      service: { state: string; pid: number; restarts: number };
    };
    assert.equal(reply.service.state, "running");
    assert.notEqual(reply.service.pid, first);
    assert.equal(reply.service.restarts, 1);
    await waitFor("second run's lines", async () => {
      const runs = (await logsOf(s, "talker"))
        .filter((e) => e.msg === "hello")
        .map((e) => e.fields?.run);
      return runs.length === 2 ? runs : undefined;
    });
    await waitFor("the follower to see the second run", () =>
      followed.some((e) => e.msg === "hello" && e.fields?.run === String(reply.service.pid))
        ? true
        : undefined,
    );
    follower.abort();
    await following;
    const human = s.cli("logs", "talker", "-n", "50");
    assert.equal(human.status, 0);
    assert.match(human.stdout, /info {7}hello run=\d+/);
    assert.match(human.stdout, /supervisor restart requested/);
  });

  it("serves the control socket to root only and refuses a second supervisor on it", async () => {
    const s = await supervise([]);
    assert.equal(statSync(s.socket).mode & 0o777, 0o600);
    const second = spawnSync(
      process.execPath,
      [SUPERVISOR, "--socket", s.socket, "--cmdline", "/dev/null"],
      {
        encoding: "utf8",
        timeout: 20_000,
        killSignal: "SIGKILL",
      },
    );
    assert.equal(second.status, 1);
    assert.match(second.stdout, /another supervisor is already listening on .*; exiting/);
    assert.ok(s.cli("services").status === 0);
  });

  it("comes up with a bad configuration and a bad service table, and says what is wrong", async () => {
    const s = await supervise([{ name: "fine", command: ["sleep", "1000"] }], {
      cmdline:
        "quiet flatgrid.grid=lab flatgrid.token=0123456789abcdef flatgrid.ip=10.1.2.3 flatgrid.net=static",
      extraArgs: ["--services", "/nonexistent/table.json"],
    });
    await waitFor("fine running", async () =>
      (await s.service("fine")).state === "running" ? true : undefined,
    );
    const shown = s.cli("config");
    assert.equal(shown.status, 1);
    assert.match(
      shown.stdout,
      /kernel command line: flatgrid\.ip=10\.1\.2\.3 is not an IPv4 address with a prefix length/,
    );
    assert.match(shown.stdout, /flatgrid\.grid = lab/);
    assert.doesNotMatch(shown.stdout, /0123456789abcdef/);
    const json = JSON.parse(s.cli("config", "--json").stdout) as { configErrors: unknown[] };
    assert.equal(json.configErrors.length, 2);
    const notes = (await logsOf(s, "supervisor")).map((e) => e.msg).join("\n");
    assert.match(notes, /service table skipped: .*\/nonexistent\/table\.json/);
    assert.match(notes, /configuration: kernel command line: flatgrid\.ip=10\.1\.2\.3/);
  });

  it("takes service definitions at run time, checked first, and removes them", async () => {
    const s = await supervise([
      { name: "base", command: ["sleep", "600"], readiness: { type: "started" } },
    ]);
    await waitFor("base running", async () =>
      (await s.service("base")).state === "running" ? true : undefined,
    );
    await s.client.put("/v1/services/extra", {
      name: "extra",
      command: ["sleep", "600"],
      dependsOn: ["base"],
    });
    const extra = await waitFor("extra running", async () => {
      const st = await s.service("extra");
      return st.state === "running" ? st : undefined;
    });
    assert.ok(extra.pid && alive(extra.pid));
    // The environment tells services where the supervisor is (the grid service needs it).
    const env = readFileSync(`/proc/${extra.pid}/environ`, "utf8").split("\0");
    assert.ok(env.includes(`FLATGRID_SOCKET=${s.socket}`), "FLATGRID_SOCKET is set");

    // A bad spec is refused with its field, and changes nothing.
    await assert.rejects(
      s.client.put("/v1/services/extra", { name: "extra", command: [] }),
      /field command/,
    );
    await assert.rejects(
      s.client.put("/v1/services/loop", { name: "loop", command: ["true"], dependsOn: ["loop"] }),
      /cycle/,
    );
    assert.equal((await s.service("extra")).pid, extra.pid);

    // A service others depend on stays; one nobody needs is stopped and forgotten.
    await assert.rejects(s.client.delete("/v1/services/base"), /extra depend on it/);
    await s.client.delete("/v1/services/extra");
    assert.ok(!alive(extra.pid));
    await assert.rejects(s.service("extra"), /no service named "extra"/);
  });
});

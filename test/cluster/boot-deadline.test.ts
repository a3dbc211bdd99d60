/**
 * The boot deadline, on a real 1-node grid with real VMMs: an instance whose guest never
 * says it is ready (the mute test guest, like a kernel stuck early in its boot: its vCPU
 * runs, nothing crashes) is stopped after the deadline, and that counts as a failure. It is
 * started again with backoff, and after its third failure in 24 hours it is left stopped
 * with an alert, as a crashing one is.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { AppStatus } from "../../src/grid/index.js";
import { CLI, formed, GridCluster } from "./grid-harness.js";
import { idleCatalog } from "./idle-catalog.js";
import { sleep, sweepStale } from "./netns.js";

const DEADLINE_MS = 2000;

describe("an instance whose guest never says it is ready", { concurrency: false }, () => {
  let g: GridCluster;
  let scratch = "";
  const cli = (...args: string[]) =>
    new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      execFile(
        process.execPath,
        [CLI, ...args, "--socket", g.node(1).socket],
        { encoding: "utf8" },
        (error, out, err) =>
          resolve({ code: error ? ((error.code as number | undefined) ?? 1) : 0, out, err }),
      );
    });

  before(async () => {
    sweepStale();
    scratch = mkdtempSync(join(tmpdir(), "flatgrid-boot-deadline-"));
    g = GridCluster.create({
      nodes: 1,
      images: idleCatalog(join(scratch, "catalog"), "mute"),
      bootDeadlineMs: DEADLINE_MS,
    });
    g.startAll();
    await g.until("a 1-node grid", formed(1), 60_000);
  });

  after(async () => {
    await g?.destroy();
    rmSync(scratch, { recursive: true, force: true });
  });

  it("is stopped at the deadline, started again with backoff, and left stopped after 3 failures", async () => {
    const file = join(scratch, "stuck.yaml");
    writeFileSync(
      file,
      "name: stuck\nbudget: { cpus: 1, memory: 1GiB }\ncomponents:\n  box:\n    class: base@1\n",
    );
    const created = await cli("app", "create", "-f", file);
    assert.equal(created.code, 0, created.err);
    const seen = new Set<string>();
    let last: AppStatus["instances"][number] | undefined;
    const until = Date.now() + 60_000;
    while (Date.now() < until) {
      const r = await cli("app", "status", "stuck", "--json");
      if (r.code === 0) {
        last = (JSON.parse(r.out) as AppStatus).instances[0];
        if (last) seen.add(`${last.state}: ${last.detail}`);
        if (last?.state === "failed") break;
      }
      await sleep(250);
    }
    const history = [...seen].join("\n");
    process.stdout.write(
      `# box.0, as app status showed it:\n# ${history.replace(/\n/g, "\n# ")}\n`,
    );
    assert.equal(last?.state, "failed", history);
    // It ran (booting) and never got to running; each stop said why.
    assert.ok(
      [...seen].some((s) => s.startsWith("booting: ")),
      history,
    );
    assert.ok(![...seen].some((s) => s.startsWith("running: ")), history);
    assert.ok(
      [...seen].some((s) =>
        /^restarting: its guest did not say it was ready within 2 s; starting again in \d+ s \(failure 1 of 3 in 24 h\)$/.test(
          s,
        ),
      ),
      history,
    );
    assert.match(
      last?.detail ?? "",
      /^its guest did not say it was ready within 2 s; .*failed 3 times/,
    );
    assert.equal(last?.failures, 3);

    const text = await cli("app", "status", "stuck");
    assert.match(text.out, /^box\.0: failed: its guest did not say it was ready within 2 s/m);
    const destroyed = await cli("app", "destroy", "stuck");
    assert.equal(destroyed.code, 0, destroyed.err);
  });
});

// `flatgrid demo node` (the README's node demo) boots init and the supervisor in a namespace
// and powers them off again. It must keep working as written. (`npm run demo` boots a
// simulated grid, which the e2e sim test covers piece by piece.)
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { repo } from "./namespace.js";

test("flatgrid demo node boots a node in a namespace, shows it and powers it off", {
  timeout: 120_000,
}, () => {
  const r = spawnSync(process.execPath, [join(repo, "dist/src/cli/main.js"), "demo", "node"], {
    encoding: "utf8",
    timeout: 110_000,
  });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /SERVICE +STATE +PID +RESTARTS +UPTIME +DETAIL\ninventory +running/);
  assert.match(r.stdout, /crasher +failed .*gave up: failed 3 times within 60 s/);
  assert.match(r.stdout, /info +inventory cpus=\d+/);
  assert.match(r.stdout, /stopped inventory \(pid \d+\) left running by a previous supervisor/);
  assert.match(r.stdout, /ticker: stopped[\s\S]*inventory: stopped/);
  assert.match(r.stdout, /The namespace ended by power-off/);
  assert.match(r.stdout, /Not built yet/);
});

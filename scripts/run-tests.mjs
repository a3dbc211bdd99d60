#!/usr/bin/env node
// Runs the test suites one after another with node:test, printing progress as it goes
// and one closing line "N passed, N failed" for the whole run.
//   node scripts/run-tests.mjs all|unit|native|os [more suites]
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const SUITES = {
  unit: "pure logic, milliseconds",
  os: "the supervisor and the CLI with real processes",
  native: "native/init as PID 1 of PID namespaces, with the real supervisor",
  kvm: "the VMM on this machine's /dev/kvm with freestanding test guests",
  cluster:
    "node processes in network namespaces: mDNS discovery, grid formation with real etcd, faults",
  e2e: "the node image built from Debian packages, booted in QEMU by the grid simulator",
};

/** Work a suite needs before its tests, e.g. building the image that e2e boots. */
const PREPARE = {
  e2e: [
    "sh",
    [
      "-c",
      `"${process.execPath}" dist/image/build.js && "${process.execPath}" dist/image/catalog.js`,
    ],
  ],
};

const asked = process.argv.slice(2);
const suites = asked.length === 0 || asked.includes("all") ? Object.keys(SUITES) : asked;
for (const suite of suites) {
  if (!(suite in SUITES)) {
    console.error(`run-tests: unknown suite "${suite}" (${Object.keys(SUITES).join(", ")}, all)`);
    process.exit(2);
  }
}

const scratch = mkdtempSync(join(tmpdir(), "flatgrid-tests-"));
let passed = 0;
let failed = 0;
const started = Date.now();
for (const [i, suite] of suites.entries()) {
  const dir = join("dist/test", suite);
  if (!existsSync(dir)) {
    console.error(`run-tests: ${dir} does not exist: run npm run build first`);
    process.exit(2);
  }
  console.log(`\n=== suite ${suite} (${i + 1}/${suites.length}): ${SUITES[suite]}`);
  if (PREPARE[suite]) {
    const [cmd, args] = PREPARE[suite];
    const prep = spawnSync(cmd, args, { stdio: "inherit" });
    if (prep.status !== 0) {
      console.log(`=== suite ${suite}: preparation failed`);
      failed += 1;
      continue;
    }
  }
  const tap = join(scratch, `${suite}.tap`);
  const t0 = Date.now();
  const r = spawnSync(
    process.execPath,
    [
      "--test",
      "--test-reporter=spec",
      "--test-reporter-destination=stdout",
      "--test-reporter=tap",
      `--test-reporter-destination=${tap}`,
      dir,
    ],
    { stdio: "inherit" },
  );
  const text = existsSync(tap) ? readFileSync(tap, "utf8") : "";
  const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
  const p = count("pass");
  const f = count("fail") + count("cancelled") + (r.status !== 0 && count("fail") === 0 ? 1 : 0);
  passed += p;
  failed += f;
  console.log(
    `=== suite ${suite}: ${p} passed, ${f} failed in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  );
}
rmSync(scratch, { recursive: true, force: true });
console.log(`\nall suites (${((Date.now() - started) / 1000).toFixed(1)} s):`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);

// Tests of native/init (PID 1) with real processes: as PID 1 of a PID namespace
// (unshare --pid --fork --mount) and as a plain process. Needs root and a built init
// (make -C native).
import assert from "node:assert/strict";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  allProcs,
  CLEAN_PATH,
  descendants,
  environOf,
  mountTable,
  pidNamespace,
  procInfo,
  Run,
  readText,
  script,
  sharedDir,
  sleep,
  TEST_TIMEOUT,
  until,
} from "./namespace.js";

let dir = "";
before(() => {
  dir = sharedDir();
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("native init", () => {
  test("as PID 1 of a namespace: mode, mounts, clean environment", {
    timeout: TEST_TIMEOUT,
  }, async () => {
    const targets = ["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/tmp"];
    const hostBefore = mountTable("self").filter((m) => targets.includes(m.target));
    // No script: a shell would add PWD to the environment. `sleep` also tests that the
    // command is looked up in the clean PATH.
    const run = await Run.start(true, ["--", "sleep", "1000"], {
      TERM: "xterm-test",
      HOME: "/home/leak",
      FLATGRID_LEAK: "must not pass",
    });
    try {
      await run.logged("mode namespace");
      const supervisor = await until("the supervisor", () => run.supervisor("sleep 1000"));

      assert.deepEqual(environOf(supervisor.pid).sort(), [
        "FLATGRID_BOOT=namespace",
        "FLATGRID_INIT=1",
        "HOME=/root",
        "LANG=C.UTF-8",
        `PATH=${CLEAN_PATH}`,
        "TERM=xterm-test",
      ]);

      // The top mount on each mount point inside the namespace.
      const top = new Map(mountTable(run.initPid).map((m) => [m.target, m]));
      const expect = (target: string, fstype: string, ...options: string[]) => {
        const m = top.get(target);
        assert.ok(m, `${target} is not mounted in the namespace`);
        assert.equal(m.fstype, fstype, `${target} in the namespace: ${m.line}`);
        for (const o of options) assert.ok(m.options.includes(o), `${target} has ${o}: ${m.line}`);
      };
      // Mounted by init: their options are init's, not the host's.
      expect("/proc", "proc", "nosuid", "noexec");
      expect("/dev/pts", "devpts", "ptmxmode=666", "gid=5", "mode=620");
      expect("/dev/shm", "tmpfs", "nosuid", "nodev");
      expect("/run", "tmpfs", "nosuid", "mode=755");
      // /tmp is the host's: the namespace shares the host's files (a checkout in /tmp too).
      assert.equal(
        top.get("/tmp")?.fstype,
        hostBefore.filter((m) => m.target === "/tmp").at(-1)?.fstype,
        "init leaves /tmp alone in a namespace",
      );
      expect("/sys/fs/cgroup", "cgroup2", "nosuid");
      // sysfs (same network namespace) and devtmpfs are single superblocks already on top
      // of /sys and /dev here: the kernel refuses to stack them again (EBUSY) and init
      // keeps the existing ones. Either way the namespace has them.
      expect("/sys", "sysfs");
      expect("/dev", "devtmpfs");
      for (const target of ["/sys", "/dev"]) {
        assert.ok(
          run.log.includes(`on ${target}: Device or resource busy (already mounted there`) ||
            !run.log.includes(`on ${target}:`),
          run.log,
        );
      }
      // The proc mounted by init shows the namespace's own pids.
      assert.equal(readText(`/proc/${run.initPid}/root/proc/1/comm`)?.trim(), "init");

      // Nothing propagated to the host.
      const hostAfter = mountTable("self").filter((m) => targets.includes(m.target));
      assert.deepEqual(
        hostAfter.map((m) => m.line),
        hostBefore.map((m) => m.line),
      );
    } finally {
      await run.cleanup();
    }
  });

  test("reaps orphans, including zombies whose parent exits", {
    timeout: TEST_TIMEOUT,
  }, async () => {
    // Every background job is started from a subshell that exits at once, so the job is
    // reparented to init; the supervisor itself ends up with no children at all.
    const sup = await script(
      dir,
      "orphans.sh",
      [
        "for i in 1 2 3 4 5; do ( sleep 0.2 & ); done",
        "( sh -c 'sleep 0.3 & sleep 0.4 & exit 0' & )",
        // `true` becomes a zombie child of sleep, which never waits; once sleep exits the
        // zombie is reparented to init, which must reap it.
        "( sh -c 'true & exec sleep 0.5' & )",
        "( setsid sh -c '( sleep 0.3 & ); sleep 0.2' & )",
        `touch "$1/orphans-ready"`,
        "exec sleep 1000",
      ].join("\n"),
    );
    const run = await Run.start(true, ["--", sup, dir]);
    try {
      await until("the supervisor to start", () => existsSync(join(dir, "orphans-ready")));
      const supervisor = await until("the supervisor", () => run.supervisor("sleep 1000"));
      // The orphans (and at least the zombie case) exist right after ready: they take
      // up to 0.5 s. Then only init and the supervisor may remain, none a zombie.
      const settled = await until("the namespace to settle", () => {
        const procs = run.nsProcs();
        const pids = procs.map((p) => p.pid).sort();
        const expected = [run.initPid, supervisor.pid].sort();
        return JSON.stringify(pids) === JSON.stringify(expected) ? procs : undefined;
      });
      assert.ok(
        settled.every((p) => p.state !== "Z"),
        JSON.stringify(settled),
      );
      // Still true a moment later, and the supervisor was never restarted.
      await sleep(500);
      assert.equal(run.nsProcs().filter((p) => p.state === "Z").length, 0);
      assert.ok(!run.log.includes("restarting supervisor"), run.log);
    } finally {
      await run.cleanup();
    }
  });

  test("restarts a killed supervisor with backoff", { timeout: TEST_TIMEOUT }, async () => {
    const sup = await script(dir, "restart.sh", "exec sleep 1000");
    const run = await Run.start(true, ["--", sup]);
    try {
      const first = await until("the supervisor", () => run.supervisor("sleep 1000"));
      process.kill(first.pid, "SIGKILL");
      const second = await until("a new supervisor", () => {
        const s = run.supervisor("sleep 1000");
        return s && s.pid !== first.pid ? s : undefined;
      });
      await run.logged(/supervisor \(pid 2\) killed by signal 9 \(SIGKILL\)/);
      await run.logged("restarting supervisor in 250 ms");
      // A supervisor that dies again soon waits twice as long.
      process.kill(second.pid, "SIGKILL");
      await until("a third supervisor", () => {
        const s = run.supervisor("sleep 1000");
        return s && s.pid !== first.pid && s.pid !== second.pid ? s : undefined;
      });
      await run.logged("restarting supervisor in 500 ms");
    } finally {
      await run.cleanup();
    }
  });

  const stoppable = (name: string) =>
    script(
      dir,
      name,
      [
        `trap 'echo stopped > "$1/$2-marker"; sleep "$3"; exit 0' TERM`,
        `touch "$1/$2-ready"`,
        "while :; do sleep 0.1; done",
      ].join("\n"),
    );

  test("SIGTERM powers off: supervisor stopped, namespace ends by SIGINT", {
    timeout: TEST_TIMEOUT,
  }, async () => {
    const sup = await stoppable("poweroff.sh");
    const run = await Run.start(true, ["--stop-timeout", "15", "--", sup, dir, "poweroff", "0"]);
    try {
      await until("the supervisor to start", () => existsSync(join(dir, "poweroff-ready")));
      const started = Date.now();
      process.kill(run.initPid, "SIGTERM");
      // The kernel ends a PID namespace whose init calls reboot(RB_POWER_OFF) as if init
      // had been killed by SIGINT; unshare re-raises that on itself.
      assert.deepEqual(await run.ended(30_000), { code: null, signal: "SIGINT" });
      const elapsed = Date.now() - started;
      assert.ok(elapsed < 15_000, `took ${elapsed} ms, longer than the stop timeout`);
      assert.equal(readText(join(dir, "poweroff-marker")), "stopped\n");
      assert.match(run.log, /supervisor \(pid 2\) exited with status 0/);
      assert.match(run.log, /power off now/);
      assert.equal(allProcs().filter((p) => pidNamespace(p.pid) === run.ns).length, 0);
    } finally {
      await run.cleanup();
    }
  });

  test("SIGINT reboots: namespace ends by SIGHUP", { timeout: TEST_TIMEOUT }, async () => {
    const sup = await stoppable("reboot.sh");
    const run = await Run.start(true, ["--", sup, dir, "reboot", "0"]);
    try {
      await until("the supervisor to start", () => existsSync(join(dir, "reboot-ready")));
      process.kill(run.initPid, "SIGINT");
      assert.deepEqual(await run.ended(30_000), { code: null, signal: "SIGHUP" });
      assert.equal(readText(join(dir, "reboot-marker")), "stopped\n");
      assert.match(run.log, /reboot now/);
    } finally {
      await run.cleanup();
    }
  });

  test("a second signal during power off is ignored", { timeout: TEST_TIMEOUT }, async () => {
    const sup = await stoppable("twice.sh");
    const run = await Run.start(true, ["--", sup, dir, "twice", "1"]);
    try {
      await until("the supervisor to start", () => existsSync(join(dir, "twice-ready")));
      process.kill(run.initPid, "SIGTERM");
      await until("the supervisor to be stopping", () => existsSync(join(dir, "twice-marker")));
      process.kill(run.initPid, "SIGINT");
      // Still a power off (SIGINT), not a reboot (SIGHUP).
      assert.deepEqual(await run.ended(30_000), { code: null, signal: "SIGINT" });
      assert.match(run.log, /received SIGINT from pid 0 during shutdown: ignored/);
      assert.equal(run.log.match(/shutting down/g)?.length, 1, run.log);
    } finally {
      await run.cleanup();
    }
  });

  test("a supervisor that ignores SIGTERM is killed after the timeouts", {
    timeout: TEST_TIMEOUT,
  }, async () => {
    // The ignored disposition is inherited by the sleeps too, so only SIGKILL ends them.
    const sup = await script(
      dir,
      "stubborn.sh",
      `trap '' TERM\ntouch "$1/stubborn-ready"\nwhile :; do sleep 0.1; done`,
    );
    const run = await Run.start(true, [
      "--stop-timeout",
      "1",
      "--kill-timeout",
      "1",
      "--",
      sup,
      dir,
    ]);
    try {
      await until("the supervisor to start", () => existsSync(join(dir, "stubborn-ready")));
      const started = Date.now();
      process.kill(run.initPid, "SIGTERM");
      assert.deepEqual(await run.ended(20_000), { code: null, signal: "SIGINT" });
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 1_000 && elapsed < 10_000, `took ${elapsed} ms`);
      assert.match(run.log, /supervisor \(pid 2\) did not stop in time/);
      assert.match(run.log, /sending SIGKILL to remaining processes/);
    } finally {
      await run.cleanup();
    }
  });

  test("not PID 1: process mode, subreaper, exits 0 and leaves nothing", {
    timeout: TEST_TIMEOUT,
  }, async () => {
    const sup = await script(
      dir,
      "process.sh",
      [
        // One orphan in a session of its own, one in the supervisor's process group.
        "( setsid sleep 1000 & )",
        "( sleep 1001 & )",
        `touch "$1/process-ready"`,
        "exec sleep 1002",
      ].join("\n"),
    );
    // No TERM in init's environment: the supervisor gets TERM=linux.
    const run = await Run.start(false, ["--kill-timeout", "2", "--", sup, dir], {
      FLATGRID_LEAK: "must not pass",
    });
    try {
      await run.logged("mode process");
      assert.match(run.log, /no mounts, no reboot; acting as subreaper/);
      await until("the supervisor to start", () => existsSync(join(dir, "process-ready")));
      const tree = await until("the supervisor and both orphans", () => {
        const t = descendants(run.initPid);
        return t.length === 3 ? t : undefined;
      });
      // Subreaper: both orphans were reparented to init, not to the host's PID 1.
      assert.deepEqual(
        tree.map((p) => p.ppid),
        [run.initPid, run.initPid, run.initPid],
      );
      // Orphans inherit the supervisor's clean environment; the shell adds PWD to it.
      for (const p of tree) {
        const env = environOf(p.pid);
        assert.ok(env.includes("FLATGRID_BOOT=process"), env.join(" "));
        assert.ok(env.includes("TERM=linux"), env.join(" "));
        assert.ok(!env.some((e) => e.startsWith("FLATGRID_LEAK=")), env.join(" "));
      }

      process.kill(run.initPid, "SIGTERM");
      assert.deepEqual(await run.ended(20_000), { code: 0, signal: null });
      for (const p of tree) {
        const now = procInfo(p.pid);
        assert.ok(!now || now.startTime !== p.startTime, `pid ${p.pid} survived`);
      }
      assert.match(run.log, /stopped \(not PID 1, so no power off\); exiting/);
    } finally {
      await run.cleanup();
    }
  });
});

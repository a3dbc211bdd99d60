// The control-group file formats, on plain directories laid out as the kernel lays out a
// cgroup v2 tree and v1 trees. The real trees: test/kvm/vmm-process.test.ts (v1, this
// machine), test/cluster/apps.test.ts (v1), test/e2e/boot.test.ts (v2, a simulated node).
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { Cgroup, CgroupError, checkGroupPath, detectHierarchy } from "../../src/cgroups/index.js";
import { VMM_NODE_FLAGS, vmCgroupLimits } from "../../src/vmm/process-contract.js";

const scratch = mkdtempSync(join(tmpdir(), "flatgrid-cgroup-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

describe("control groups", () => {
  it("takes only plain names, so an application's name cannot climb out of the tree", () => {
    assert.deepEqual(checkGroupPath("flatgrid/shop/web.0"), ["flatgrid", "shop", "web.0"]);
    for (const bad of ["flatgrid/../etc", "/abs", "a//b", "flatgrid/sh op", "a/./b", ""])
      assert.throws(() => checkGroupPath(bad), CgroupError, bad);
  });

  it("v2: enables cpu and memory down the path, writes cpu.max and memory.max", () => {
    const root = join(scratch, "v2");
    mkdirSync(root);
    writeFileSync(join(root, "cgroup.controllers"), "cpuset cpu io memory pids\n");
    const h = detectHierarchy(root);
    assert.equal(h.version, 2);
    const g = new Cgroup("flatgrid/shop/web.0", h);
    g.create(vmCgroupLimits({ vcpus: 1, memoryMiB: 256 }));
    for (const dir of [root, join(root, "flatgrid"), join(root, "flatgrid/shop")])
      assert.equal(readFileSync(join(dir, "cgroup.subtree_control"), "utf8"), "+cpu +memory");
    const leaf = join(root, "flatgrid/shop/web.0");
    assert.equal(readFileSync(join(leaf, "cpu.max"), "utf8"), "100000 100000");
    assert.equal(readFileSync(join(leaf, "memory.max"), "utf8"), String((256 + 144) * 2 ** 20));
    assert.deepEqual(g.limits(), { cpus: 1, memoryBytes: (256 + 144) * 2 ** 20 });
    writeFileSync(join(leaf, "cpu.stat"), "usage_usec 1234567\nuser_usec 1000000\n");
    writeFileSync(join(leaf, "memory.current"), "52428800\n");
    writeFileSync(join(leaf, "memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
    assert.deepEqual(g.usage(), { cpuUsec: 1234567, memoryBytes: 52428800, oomKills: 1 });
  });

  it("v1: one tree per controller, quota and period, limit_in_bytes, cpuacct in ns", () => {
    const root = join(scratch, "v1");
    for (const c of ["cpu", "cpuacct", "memory"]) mkdirSync(join(root, c), { recursive: true });
    const h = detectHierarchy(root);
    assert.deepEqual(h, {
      version: 1,
      cpu: join(root, "cpu"),
      cpuacct: join(root, "cpuacct"),
      memory: join(root, "memory"),
    });
    const g = new Cgroup("flatgrid/shop/db.0", h);
    g.create({ cpus: 1.5, memoryBytes: 300 * 2 ** 20 + 1 });
    const cpu = join(root, "cpu/flatgrid/shop/db.0");
    assert.equal(readFileSync(join(cpu, "cpu.cfs_quota_us"), "utf8"), "150000");
    assert.equal(readFileSync(join(cpu, "cpu.cfs_period_us"), "utf8"), "100000");
    // Whole pages.
    assert.equal(
      readFileSync(join(root, "memory/flatgrid/shop/db.0/memory.limit_in_bytes"), "utf8"),
      String(300 * 2 ** 20),
    );
    assert.ok(existsSync(join(root, "cpuacct/flatgrid/shop/db.0")));
    writeFileSync(join(root, "cpuacct/flatgrid/shop/db.0/cpuacct.usage"), "2500000000\n");
    assert.equal(g.usage().cpuUsec, 2_500_000);
  });

  it("weighs the VMs' group against the node's processes: cpu.weight on v2, cpu.shares on v1", () => {
    const v2 = join(scratch, "w2");
    mkdirSync(v2);
    writeFileSync(join(v2, "cgroup.controllers"), "cpu memory\n");
    const g2 = new Cgroup("flatgrid", detectHierarchy(v2));
    g2.setCpuWeight(10);
    assert.equal(readFileSync(join(v2, "cgroup.subtree_control"), "utf8"), "+cpu +memory");
    assert.equal(readFileSync(join(v2, "flatgrid/cpu.weight"), "utf8"), "10");
    assert.equal(g2.cpuWeight(), 10);
    // A VM's group below it keeps the weight (create() does not touch its parents' weight).
    new Cgroup("flatgrid/shop/web.0", detectHierarchy(v2)).create({
      cpus: 1,
      memoryBytes: 2 ** 28,
    });
    assert.equal(g2.cpuWeight(), 10);

    const v1 = join(scratch, "w1");
    for (const c of ["cpu", "cpuacct", "memory"]) mkdirSync(join(v1, c), { recursive: true });
    const g1 = new Cgroup("fg-node1", detectHierarchy(v1));
    g1.setCpuWeight(10);
    assert.equal(readFileSync(join(v1, "cpu/fg-node1/cpu.shares"), "utf8"), "102");
    assert.equal(g1.cpuWeight(), 10);
    for (const bad of [0, 10_001, 1.5])
      assert.throws(
        () => g1.setCpuWeight(bad),
        /cpu weight must be a whole number from 1 to 10000/,
      );
  });

  it("says which controller a machine lacks", () => {
    const root = join(scratch, "v2-no-memory");
    mkdirSync(root);
    writeFileSync(join(root, "cgroup.controllers"), "cpu io\n");
    assert.throws(() => detectHierarchy(root), /cgroup v2 without the memory controller/);
    assert.throws(
      () => detectHierarchy(join(scratch, "nothing")),
      /no cgroup v2 tree and no cgroup v1 cpu, cpuacct and memory trees/,
    );
  });

  it("starts a monitor with the same Node.js flags from the node's flatgrid command", () => {
    const wrapper = readFileSync(
      join(import.meta.dirname, "..", "..", "..", "rootfs/usr/bin/flatgrid"),
      "utf8",
    );
    const vmmLine = wrapper.split("\n").find((l) => l.includes("exec") && l.includes("--max"));
    assert.ok(vmmLine, "the wrapper has a line for `flatgrid vmm`");
    for (const flag of VMM_NODE_FLAGS) assert.ok(vmmLine.includes(` ${flag} `), flag);
  });
});

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  bootStep,
  chooseAccel,
  type HostKvm,
  lastLines,
  probeHostKvm,
  type QemuServer,
  qemuArgs,
} from "../../src/sim/index.js";

const pvm: HostKvm = { devKvm: true, pvm: true, hardware: null, nested: null };
const amd: HostKvm = { devKvm: true, pvm: false, hardware: "kvm_amd", nested: true };

describe("simulator: accelerator choice", () => {
  it("takes TCG with -cpu max on a PVM host, and says why", () => {
    const c = chooseAccel("auto", pvm);
    assert.equal(c.accel, "tcg");
    assert.equal(c.cpu, "max");
    assert.match(c.reason, /PVM/);
    assert.match(c.reason, /does not boot stock Linux kernels/);
  });

  it("takes KVM with -cpu host where a hardware KVM module is loaded", () => {
    const c = chooseAccel("auto", amd);
    assert.deepEqual([c.accel, c.cpu, c.warning], ["kvm", "host", null]);
    assert.match(c.reason, /kvm_amd/);
  });

  it("warns when the hardware KVM does not nest: nodes would get no /dev/kvm", () => {
    assert.match(chooseAccel("auto", { ...amd, nested: false }).warning ?? "", /nested=1/);
  });

  it("takes TCG without /dev/kvm, even when KVM is asked for", () => {
    const none: HostKvm = { devKvm: false, pvm: false, hardware: null, nested: null };
    assert.equal(chooseAccel("auto", none).accel, "tcg");
    assert.match(chooseAccel("kvm", none).reason, /no \/dev\/kvm/);
  });

  it("follows --accel, warning when KVM is forced on PVM", () => {
    assert.equal(chooseAccel("tcg", amd).accel, "tcg");
    const forced = chooseAccel("kvm", pvm);
    assert.equal(forced.accel, "kvm");
    assert.match(forced.warning ?? "", /PVM/);
  });

  it("reads the host's KVM from /sys/module", () => {
    const dir = mkdtempSync(join(tmpdir(), "fg-sim-"));
    try {
      mkdirSync(join(dir, "module/kvm_intel/parameters"), { recursive: true });
      writeFileSync(join(dir, "module/kvm_intel/parameters/nested"), "Y\n");
      writeFileSync(join(dir, "kvm"), "");
      assert.deepEqual(probeHostKvm(join(dir, "module"), join(dir, "kvm")), {
        devKvm: true,
        pvm: false,
        hardware: "kvm_intel",
        nested: true,
      });
      mkdirSync(join(dir, "module/kvm_pvm"));
      assert.equal(probeHostKvm(join(dir, "module"), join(dir, "nokvm")).pvm, true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const server: QemuServer = {
  name: "node-2",
  accel: chooseAccel("auto", pvm),
  memoryMiB: 1024,
  cpus: 1,
  kernel: "/img/vmlinuz",
  initrd: "/img/initrd.img",
  cmdline: "console=ttyS0 flatgrid.grid=sim",
  tap: "tap2",
  mac: "52:54:00:15:00:02",
  disks: ["/s/node-2/disk.raw", "/s/extra.img"],
  consoleSocket: "/s/node-2/console.sock",
  consoleLog: "/s/node-2/console.log",
  shellSocket: "/s/node-2/shell.sock",
  shellLog: "/s/node-2/shell.log",
  qmpSocket: "/s/node-2/qmp.sock",
  pidFile: "/s/node-2/qemu.pid",
};

describe("simulator: QEMU command line", () => {
  const args = qemuArgs(server);
  const after = (flag: string) => args.filter((_, i) => args[i - 1] === flag);

  it("has a tap NIC only: no default devices, never user networking", () => {
    assert.ok(args.includes("-nodefaults"));
    assert.deepEqual(after("-netdev"), ["tap,id=net0,ifname=tap2,script=no,downscript=no"]);
    assert.ok(!args.some((a) => /^user(,|$)|slirp|hostfwd|guestfwd/.test(a)));
    assert.ok(!args.includes("-nic"));
  });

  it("boots the kernel directly with the accelerator chosen", () => {
    assert.deepEqual(
      [after("-accel")[0], after("-cpu")[0], after("-kernel")[0], after("-append")[0]],
      ["tcg", "max", "/img/vmlinuz", "console=ttyS0 flatgrid.grid=sim"],
    );
  });

  it("puts ttyS0 and ttyS1 on unix sockets with logs, and QMP on a socket", () => {
    const chardevs = after("-chardev");
    assert.equal(chardevs.length, 2);
    assert.match(chardevs[0] ?? "", /path=\/s\/node-2\/console\.sock,server=on,wait=off,logfile=/);
    assert.match(chardevs[1] ?? "", /path=\/s\/node-2\/shell\.sock/);
    assert.deepEqual(after("-serial"), ["chardev:console", "chardev:shell"]);
    assert.deepEqual(after("-qmp"), ["unix:/s/node-2/qmp.sock,server=on,wait=off"]);
  });

  it("gives the disks in order, the node's own blank disk first", () => {
    assert.deepEqual(
      after("-drive").map((d) => d.split(",")[0]),
      ["file=/s/node-2/disk.raw", "file=/s/extra.img"],
    );
  });
});

describe("simulator: console log", () => {
  const log = [
    "[    0.000000] Linux version 6.1.0",
    "flatgrid-init: mode os: PID 1 of the machine",
    "flatgrid-supervisor: flatgrid 0.1.0 supervisor starting",
    "flatgrid-supervisor: ready in 6601 ms (kvm: yes)",
    "",
  ].join("\n");

  it("tells how far a boot got", () => {
    assert.equal(bootStep(""), null);
    assert.equal(bootStep(log.split("\n").slice(0, 2).join("\n")), "init running");
    assert.equal(bootStep(log), "ready");
  });

  it("gives the last lines without the trailing newline's empty line", () => {
    assert.deepEqual(lastLines(log, 2), [
      "flatgrid-supervisor: flatgrid 0.1.0 supervisor starting",
      "flatgrid-supervisor: ready in 6601 ms (kvm: yes)",
    ]);
    assert.deepEqual(lastLines(log, 0), []);
  });
});

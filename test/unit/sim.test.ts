import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { dnsmasqConfig, ipxeScript, pxelinuxConfig } from "../../src/sim/boot-files.js";
import {
  bootStep,
  chooseAccel,
  type HostKvm,
  lapicSummary,
  lastLines,
  probeHostKvm,
  type QemuServer,
  qemuArgs,
  tcgVcpusWarning,
  vcpuSummary,
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

  it("warns about several vCPUs per node under TCG only", () => {
    const tcg = chooseAccel("auto", pvm);
    assert.equal(tcgVcpusWarning(tcg, 1), null);
    assert.match(tcgVcpusWarning(tcg, 2) ?? "", /^2 vCPUs per node under TCG: .*frozen/);
    assert.equal(tcgVcpusWarning(chooseAccel("auto", amd), 4), null);
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
  boot: {
    kind: "kernel",
    kernel: "/img/vmlinuz",
    initrd: "/img/initrd.img",
    cmdline: "console=ttyS0 flatgrid.grid=sim",
  },
  tap: "tap2",
  mac: "52:54:00:15:00:02",
  disks: ["/s/node-2/disk.raw", "/s/extra.img"],
  consoleSocket: "/s/node-2/console.sock",
  consoleLog: "/s/node-2/console.log",
  shellSocket: "/s/node-2/shell.sock",
  shellLog: "/s/node-2/shell.log",
  screenSocket: "/s/node-2/screen.sock",
  qmpSocket: "/s/node-2/qmp.sock",
  pidFile: "/s/node-2/qemu.pid",
};

describe("simulator: vCPU summary", () => {
  it("says where each vCPU is, from info registers -a", () => {
    // Abridged from a frozen node under QEMU 7.2: vCPU 1 spinning on a lock with interrupts
    // off, vCPU 0 on a patched int3.
    const text = [
      "",
      "CPU#0",
      "RAX=0000000000000001 RBX=ffffffffada03d68 RCX=ffffffffacc01199 RDX=0000000000000002",
      "RIP=ffffffffacc00ba0 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0",
      "CR0=80050033 CR2=00007fa9d80d4000 CR3=0000000012628000 CR4=00751eb0",
      "",
      "CPU#1",
      "RIP=ffffffffaca18710 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0",
      "CR0=80050033 CR2=000029b143878000 CR3=00000000bfd18000 CR4=00751ea0",
      "CPU#2",
      "RIP=ffffffffae217a0b RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1",
      "",
    ].join("\n");
    assert.deepEqual(vcpuSummary(text), [
      "vCPU 0: RIP ffffffffacc00ba0 CPL 0 interrupts off CR3 0000000012628000",
      "vCPU 1: RIP ffffffffaca18710 CPL 0 interrupts off CR3 00000000bfd18000",
      "vCPU 2: RIP ffffffffae217a0b CPL 0 interrupts on halted CR3 ?",
    ]);
    assert.deepEqual(vcpuSummary("QMP says nothing useful"), []);
  });

  it("tells a wedged vCPU from `info lapic`: halted, its timer vector pending above its priority", () => {
    // Captured from a bench node that stopped answering (QEMU 7.2, TCG, nested SVM).
    const wedged = [
      "dumping local APIC state for CPU 0 ",
      "",
      "LVTT\t 0x000000ec active-hi edge                 one-shot     Fixed  (vec 236)",
      "Timer\t DCR=0x3 (divide by 16) initial_count = 64313 current_count = 0",
      "ISR\t (none)",
      "IRR\t 236 ",
      "",
      "APR 0x00 TPR 0x10 DFR 0x0f LDR 0x01 PPR 0x10",
    ].join("\n");
    const s = lapicSummary(wedged);
    assert.deepEqual(s?.deliverable, [236]);
    assert.equal(s?.text, "IRR 236, ISR none, PPR 0x10");
    // In service at a higher class, or the priority above it: it waits, rightly.
    const busy = wedged.replace("ISR\t (none)", "ISR\t 239 ");
    assert.deepEqual(lapicSummary(busy)?.deliverable, []);
    assert.deepEqual(lapicSummary(wedged.replace("PPR 0x10", "PPR 0xf0"))?.deliverable, []);
    assert.equal(lapicSummary("no APIC here"), null);
  });
});

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

  it("boots over the network from the NIC first, with no kernel of its own; on UEFI with OVMF", () => {
    const pxe = qemuArgs({ ...server, boot: { kind: "network" }, uefi: "/ovmf/OVMF.fd" });
    const of = (flag: string) => pxe.filter((_, i) => pxe[i - 1] === flag);
    assert.deepEqual([of("-kernel"), of("-initrd"), of("-append")], [[], [], []]);
    assert.deepEqual(of("-device"), [
      "virtio-net-pci,netdev=net0,mac=52:54:00:15:00:02,bootindex=0",
    ]);
    assert.deepEqual(of("-bios"), ["/ovmf/OVMF.fd"]);
    // SeaBIOS unless asked; a direct kernel boot leaves the boot order alone.
    assert.deepEqual(after("-bios"), []);
    assert.ok(!after("-device").some((d) => d.includes("bootindex")));
  });

  it("puts ttyS0 and ttyS1 on unix sockets with logs, ttyS2 (the screen) on one without, and QMP on a socket", () => {
    const chardevs = after("-chardev");
    assert.equal(chardevs.length, 3);
    assert.match(chardevs[0] ?? "", /path=\/s\/node-2\/console\.sock,server=on,wait=off,logfile=/);
    assert.match(chardevs[1] ?? "", /path=\/s\/node-2\/shell\.sock,.*,logfile=/);
    assert.equal(chardevs[2], "socket,id=screen,path=/s/node-2/screen.sock,server=on,wait=off");
    assert.deepEqual(after("-serial"), ["chardev:console", "chardev:shell", "chardev:screen"]);
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

describe("simulator and image: network boot files", () => {
  const grid = ["flatgrid.grid=rack1", "flatgrid.token=0123456789abcdef"];

  it("iPXE: relative file names, the grid's keys on the kernel line, the DHCP name as host name", () => {
    const script = ipxeScript({ args: grid, hostnameFromDhcp: true });
    const lines = script.split("\n");
    assert.equal(lines[0], "#!ipxe");
    assert.ok(lines.includes("initrd initrd.img"));
    assert.equal(lines.at(-2), "boot");
    const kernel = lines.find((l) => l.startsWith("kernel "));
    assert.equal(
      kernel,
      // biome-ignore lint/suspicious/noTemplateCurlyInString: iPXE's own ${setting} syntax.
      "kernel vmlinuz initrd=initrd.img console=tty0 console=ttyS0,115200 flatgrid.grid=rack1 flatgrid.token=0123456789abcdef ${fg-host}",
    );
    // biome-ignore lint/suspicious/noTemplateCurlyInString: iPXE's own ${setting} syntax.
    assert.ok(lines.includes("isset ${hostname} && set fg-host flatgrid.hostname=${hostname} ||"));
    // The simulator's nodes have their console on ttyS0 alone.
    const sim = ipxeScript({ args: [], console: ["console=ttyS0"], hostnameFromDhcp: false });
    assert.ok(sim.includes("kernel vmlinuz initrd=initrd.img console=ttyS0\n"));
    assert.ok(!sim.includes("fg-host"));
  });

  it("PXELINUX: one default entry with the same kernel line", () => {
    const cfg = pxelinuxConfig({ args: grid, hostnameFromDhcp: true });
    assert.match(cfg, /^DEFAULT flatgrid$/m);
    assert.match(cfg, /^ {2}KERNEL vmlinuz$/m);
    assert.match(cfg, /^ {2}INITRD initrd\.img$/m);
    assert.match(cfg, /^ {2}APPEND console=tty0 console=ttyS0,115200 flatgrid\.grid=rack1 /m);
  });

  it("dnsmasq: DHCP and TFTP only, fixed hosts, iPXE gets the script and plain PXE gets iPXE", () => {
    const conf = dnsmasqConfig({
      iface: "br0",
      tftpRoot: "/srv/pxe",
      range: { first: "10.0.0.100", last: "10.0.0.199", netmask: "255.255.255.0" },
      hosts: [{ mac: "52:54:00:15:00:01", ip: "10.0.0.1", hostname: "node-1" }],
      noRouter: true,
    }).split("\n");
    assert.ok(conf.includes("port=0"), "no DNS");
    assert.ok(conf.includes("interface=br0") && conf.includes("bind-interfaces"));
    assert.ok(conf.includes("dhcp-host=52:54:00:15:00:01,10.0.0.1,node-1,infinite"));
    assert.ok(conf.includes("dhcp-option=option:router"));
    assert.ok(conf.includes("tftp-root=/srv/pxe"));
    assert.ok(conf.includes("dhcp-boot=tag:ipxe,boot.ipxe"));
    assert.ok(conf.includes("dhcp-option=tag:ipxe,encap:175,176,1b"), "iPXE: no ProxyDHCP wait");
    assert.ok(conf.includes("dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi"));
    assert.ok(conf.includes("dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe"));
    // No router advertisements unless asked: only a commented example for an operator's LAN.
    assert.ok(!conf.includes("enable-ra"));
    assert.ok(conf.includes("# enable-ra"));
  });

  it("dnsmasq: IPv6 router advertisements from a router that is nobody's default route, when asked", () => {
    const conf = dnsmasqConfig({
      iface: "br0",
      tftpRoot: "/srv/pxe",
      range: { first: "10.0.0.100", last: "10.0.0.199", netmask: "255.255.255.0" },
      hosts: [],
      routerAdvertisement: { prefix: "fd15:215::" },
    }).split("\n");
    assert.ok(conf.includes("enable-ra"));
    assert.ok(conf.includes("dhcp-range=fd15:215::,ra-only,64"));
    assert.ok(conf.includes("ra-param=br0,60,0"), "router lifetime 0: no default route");
  });
});

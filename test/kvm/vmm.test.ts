// The VMM on this machine's /dev/kvm, running the freestanding guests of native/testguest:
// real KVM VMs, real vCPU threads, real port I/O and MMIO exits.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { ElfError, Vm, type VmConfig, VmConfigError } from "../../src/vmm/index.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const guest = (name: string) => join(ROOT, "native/out", `testguest-${name}.elf`);

async function run(config: Partial<VmConfig> & { kernel: string }, limitMs = 30_000) {
  const vm = new Vm({ memoryMiB: 16, vcpus: 1, debugExit: true, ...config });
  vm.start();
  const timer = setTimeout(() => void vm.stop(), limitMs);
  const end = await vm.ended;
  clearTimeout(timer);
  return { end, console: vm.console.text(), stats: vm.stats() };
}

describe("VMM with test guests on /dev/kvm", { timeout: 120_000 }, () => {
  it("boots a long-mode guest that prints on the serial port and resets", async () => {
    const r = await run({ kernel: guest("hello") });
    assert.equal(r.console, "hello from the flatgrid test guest\n");
    assert.deepEqual(r.end, { reason: "reset", resultCode: 0 });
    assert.ok(r.stats.bootMs !== null && r.stats.bootMs > 0, "the boot timer port was written");
    assert.equal(r.stats.unclaimedPio, 0);
  });

  it("gives the guest normalised CPUID: the host's vendor, the hypervisor bit, APIC id 0", async () => {
    const r = await run({ kernel: guest("cpuid") });
    const vendor = /^vendor_id\s*:\s*(\S+)/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1];
    assert.match(
      r.console,
      new RegExp(`^cpuid vendor=${vendor} family=\\d+ model=\\d+ hypervisor=1 apic=0\\n$`),
    );
    assert.equal(r.end.resultCode, 0);
  });

  it("maps guest RAM where the guest expects it", async () => {
    // Touching guest pages is slow on this machine's paravirtual KVM, so the RAM is small.
    const r = await run({ kernel: guest("memcheck"), memoryMiB: 8 }, 60_000);
    assert.equal(r.console, "memcheck ok 8 MiB\n");
    assert.deepEqual(r.end, { reason: "reset", resultCode: 0 });
  });

  it("survives a guest that pokes at unassigned ports and addresses outside RAM", async () => {
    const r = await run({ kernel: guest("bad") });
    assert.match(r.console, /^bad guest\n/);
    assert.deepEqual(r.end, { reason: "reset", resultCode: 0 });
    assert.ok(r.stats.unclaimedMmio > 0, "MMIO outside RAM reached the VMM and was refused");
    assert.ok(r.stats.unclaimedPio > 0);
  });

  it("stops a busy guest at once: stop() kicks the vCPU out of KVM_RUN", async () => {
    const vm = new Vm({ memoryMiB: 64, vcpus: 1, kernel: guest("memcheck"), debugExit: true });
    vm.start();
    await new Promise((r) => setTimeout(r, 300));
    const asked = performance.now();
    const end = await vm.stop();
    assert.equal(end.reason, "stopped");
    assert.ok(performance.now() - asked < 5000, `stopped after ${performance.now() - asked} ms`);
  });

  it("refuses bad configurations and images with errors that say what is wrong", async () => {
    assert.throws(
      () => new Vm({ memoryMiB: 3, vcpus: 1, kernel: guest("hello") }),
      (e: unknown) =>
        e instanceof VmConfigError &&
        /field memoryMiB: must be a whole number from 8/.test(e.message),
    );
    assert.throws(() => new Vm({ memoryMiB: 16, vcpus: 0, kernel: guest("hello") }), /field vcpus/);
    const garbage = join(ROOT, "dist", "garbage.elf");
    writeFileSync(garbage, Buffer.alloc(200, 0x41));
    const vm = new Vm({ memoryMiB: 16, vcpus: 1, kernel: garbage });
    assert.throws(
      () => vm.start(),
      (e: unknown) => e instanceof ElfError && /garbage\.elf: .*no ELF magic/.test(e.message),
    );
    assert.deepEqual(await vm.stop(), { reason: "stopped", resultCode: null });
  });
});

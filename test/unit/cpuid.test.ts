// normaliseCpuid is pure: what it makes of a KVM_GET_SUPPORTED_CPUID answer. The kvm suite
// runs the same code under real KVM, with a guest that prints what it sees.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CpuidEntry } from "../../src/kvm/index.js";
import { normaliseCpuid } from "../../src/vmm/cpuid.js";

const entry = (fn: number, index: number, regs: Partial<CpuidEntry> = {}): CpuidEntry => ({
  function: fn,
  index,
  flags: 0,
  eax: 0,
  ebx: 0,
  ecx: 0,
  edx: 0,
  ...regs,
});

// Leaf 1 as KVM reports it: HTT set (the host's), hypervisor and TSC-deadline clear.
const supported = [
  entry(0, 0, { eax: 0x10 }),
  entry(1, 0, { eax: 0x00a50f00, ebx: 0x07080800, ecx: 0x7ed8320b, edx: 0x178bfbff }),
  entry(0xb, 0, { eax: 1, ebx: 2, ecx: 0x100 }),
  entry(0xb, 1, { eax: 4, ebx: 16, ecx: 0x201 }),
];
const leaf = (entries: CpuidEntry[], fn: number, index = 0) => {
  const e = entries.find((x) => x.function === fn && x.index === index);
  assert.ok(e, `leaf ${fn.toString(16)}.${index}`);
  return e;
};

describe("normaliseCpuid", () => {
  it("gives each vCPU its APIC id and the vCPU count, and sets the hypervisor bit", () => {
    const e = leaf(normaliseCpuid(supported, 3, 4, { tscDeadline: false }), 1);
    assert.equal(e.ebx >>> 24, 3);
    assert.equal((e.ebx >>> 16) & 0xff, 4);
    assert.equal(e.ecx >>> 31, 1);
    assert.equal(e.eax, 0x00a50f00, "the signature is the host's");
  });

  it("announces the TSC-deadline timer only where KVM has it", () => {
    assert.equal(
      (leaf(normaliseCpuid(supported, 0, 1, { tscDeadline: true }), 1).ecx >>> 24) & 1,
      1,
    );
    assert.equal(
      (leaf(normaliseCpuid(supported, 0, 1, { tscDeadline: false }), 1).ecx >>> 24) & 1,
      0,
    );
  });

  it("sets HTT with several vCPUs and clears it with one", () => {
    const htt = (count: number) =>
      (leaf(normaliseCpuid(supported, 0, count, { tscDeadline: false }), 1).edx >>> 28) & 1;
    assert.equal(htt(1), 0);
    assert.equal(htt(2), 1);
  });

  it("describes one thread per core and `count` cores in the extended topology", () => {
    const entries = normaliseCpuid(supported, 2, 3, { tscDeadline: false });
    assert.equal(leaf(entries, 0xb, 0).ebx, 1);
    assert.equal(leaf(entries, 0xb, 1).ebx, 3);
    assert.equal(leaf(entries, 0xb, 0).edx, 2);
  });

  it("leaves KVM's answer itself untouched", () => {
    const before = JSON.stringify(supported);
    normaliseCpuid(supported, 1, 2, { tscDeadline: true });
    assert.equal(JSON.stringify(supported), before);
  });
});

import {
  EFER_LMA,
  EFER_LME,
  layouts,
  MSR_CSTAR,
  MSR_IA32_MISC_ENABLE,
  MSR_IA32_MISC_ENABLE_FAST_STRING,
  MSR_IA32_SYSENTER_CS,
  MSR_IA32_SYSENTER_EIP,
  MSR_IA32_SYSENTER_ESP,
  MSR_IA32_TSC,
  MSR_KERNEL_GS_BASE,
  MSR_LSTAR,
  MSR_MTRR_DEF_TYPE,
  MSR_STAR,
  MSR_SYSCALL_MASK,
  MTRR_ENABLE,
  MTRR_TYPE_WB,
  type Struct,
  type VcpuFd,
  X86_CR0_ET,
  X86_CR0_PE,
  X86_CR0_PG,
  X86_CR4_PAE,
} from "../../kvm/index.js";
import type { GuestMemory } from "../guest-memory.js";

/**
 * Puts a vCPU straight into 64-bit mode, as the Linux 64-bit boot protocol expects: flat
 * segments (code 0x10, data 0x18), identity-mapped page tables for the first GiB, and the
 * boot MSRs; or into flat 32-bit protected mode without paging, as PVH expects (code 0x08).
 * The fixed addresses below are in the first 64 KiB, which nothing else uses.
 */
export const GDT_ADDRESS = 0x500;
export const IDT_ADDRESS = 0x520;
export const PML4_ADDRESS = 0x9000;
const PDPTE_ADDRESS = 0xa000;
const PDE_ADDRESS = 0xb000;
export const ZERO_PAGE_ADDRESS = 0x7000;
export const PVH_CS = 0x08;
export const BOOT_CS = 0x10;
export const BOOT_DS = 0x18;
const BOOT_TSS = 0x20;

/** GDT entries: null, 32-bit code (PVH), 64-bit code, data, TSS. */
const GDT: bigint[] = [
  0n,
  gdtEntry(0xc09b, 0, 0xfffff),
  gdtEntry(0xa09b, 0, 0xfffff),
  gdtEntry(0xc093, 0, 0xfffff),
  gdtEntry(0x808b, 0, 0xfffff),
];

function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base);
  const l = BigInt(limit);
  const f = BigInt(flags);
  return (
    ((b & 0xff000000n) << 32n) |
    ((f & 0x0000f0ffn) << 40n) |
    ((l & 0x000f0000n) << 32n) |
    ((b & 0x00ffffffn) << 16n) |
    (l & 0x0000ffffn)
  );
}

/** Writes the GDT, an empty IDT and the page tables into guest memory (once per VM). */
export function writeBootTables(memory: GuestMemory): void {
  GDT.forEach((entry, i) => {
    memory.writeU64(GDT_ADDRESS + 8 * i, entry);
  });
  memory.writeU64(IDT_ADDRESS, 0n);
  memory.slice(PML4_ADDRESS, 0x3000).fill(0);
  memory.writeU64(PML4_ADDRESS, BigInt(PDPTE_ADDRESS | 0x03));
  memory.writeU64(PDPTE_ADDRESS, BigInt(PDE_ADDRESS | 0x03));
  for (let i = 0; i < 512; i++) {
    // 2 MiB pages: present, writable, page size.
    memory.writeU64(PDE_ADDRESS + 8 * i, (BigInt(i) << 21n) | 0x83n);
  }
}

function segment(
  sregs: Struct<keyof typeof layouts.kvm_sregs.fields>,
  which: "cs" | "ds" | "es" | "fs" | "gs" | "ss" | "tr",
  selector: number,
  entry: bigint,
): void {
  const s = sregs.sub(which, layouts.kvm_segment);
  const flags = Number((entry >> 40n) & 0xf0ffn);
  s.set("base", 0)
    .set("limit", 0xffffffff)
    .set("selector", selector)
    .set("type", flags & 0xf)
    .set("s", (flags >> 4) & 1)
    .set("dpl", (flags >> 5) & 3)
    .set("present", (flags >> 7) & 1)
    .set("avl", (flags >> 12) & 1)
    .set("l", (flags >> 13) & 1)
    .set("db", (flags >> 14) & 1)
    .set("g", (flags >> 15) & 1)
    .set("unusable", 0);
}

/** Every general-purpose register zero, then the ones an entry convention names. */
function setRegs(vcpu: VcpuFd, values: { rip: number; rsi?: number; rsp?: number; rbx?: number }) {
  const regs = vcpu.getRegs();
  for (const r of Object.keys(
    layouts.kvm_regs.fields,
  ) as (keyof typeof layouts.kvm_regs.fields)[]) {
    regs.set(r, 0);
  }
  regs.set("rflags", 0x2);
  for (const [r, v] of Object.entries(values)) regs.set(r as "rip", v);
  vcpu.setRegs(regs);
}

/** The flat segments and the descriptor tables, for either entry; codeSelector picks CS. */
function flatSegments(
  sregs: Struct<keyof typeof layouts.kvm_sregs.fields>,
  codeSelector: number,
): void {
  const [, , , data = 0n, tss = 0n] = GDT;
  segment(sregs, "cs", codeSelector, GDT[codeSelector >> 3] ?? 0n);
  for (const seg of ["ds", "es", "fs", "gs", "ss"] as const) segment(sregs, seg, BOOT_DS, data);
  segment(sregs, "tr", BOOT_TSS, tss);
  sregs
    .sub("gdt", layouts.kvm_dtable)
    .set("base", GDT_ADDRESS)
    .set("limit", GDT.length * 8 - 1);
  sregs.sub("idt", layouts.kvm_dtable).set("base", IDT_ADDRESS).set("limit", 7);
}

/**
 * PVH: CS a flat 32-bit code segment, DS/ES/SS flat data, TR a 32-bit TSS, CR0.PE set and
 * paging off, EFER clear, interrupts off, EBX the start info's physical address.
 */
export function enterPvh(vcpu: VcpuFd, entry: { rip: number; startInfo: number }): void {
  const sregs = vcpu.getSregs();
  flatSegments(sregs, PVH_CS);
  sregs.set("cr0", X86_CR0_PE | X86_CR0_ET);
  sregs.set("cr3", 0);
  sregs.set("cr4", 0);
  sregs.set("efer", 0);
  vcpu.setSregs(sregs);
  setRegs(vcpu, { rip: entry.rip, rbx: entry.startInfo });
}

export interface LongModeEntry {
  rip: number;
  rsi?: number;
  rsp?: number;
}

export function enterLongMode(vcpu: VcpuFd, entry: LongModeEntry): void {
  const sregs = vcpu.getSregs();
  flatSegments(sregs, BOOT_CS);
  // >>> 0: JavaScript bit operations are signed 32-bit, and PG is bit 31.
  sregs.set("cr0", (X86_CR0_PE | X86_CR0_ET | X86_CR0_PG) >>> 0);
  sregs.set("cr3", PML4_ADDRESS);
  sregs.set("cr4", X86_CR4_PAE);
  sregs.set("efer", EFER_LME | EFER_LMA);
  vcpu.setSregs(sregs);
  setRegs(vcpu, { rip: entry.rip, rsi: entry.rsi ?? 0, rsp: entry.rsp ?? 0 });
}

/** FPU defaults and boot MSRs, for every vCPU (secondary ones get them before their SIPI). */
export function setupBootState(vcpu: VcpuFd): void {
  const fpu = vcpu.getFpu();
  fpu.set("fcw", 0x37f).set("mxcsr", 0x1f80);
  vcpu.setFpu(fpu);

  vcpu.setMsrs([
    [MSR_IA32_SYSENTER_CS, 0],
    [MSR_IA32_SYSENTER_ESP, 0],
    [MSR_IA32_SYSENTER_EIP, 0],
    [MSR_STAR, 0],
    [MSR_CSTAR, 0],
    [MSR_KERNEL_GS_BASE, 0],
    [MSR_SYSCALL_MASK, 0],
    [MSR_LSTAR, 0],
    [MSR_IA32_TSC, 0],
    [MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING],
    // Without MTRRs all of RAM would be uncached: every guest access goes to memory.
    [MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WB],
  ]);
}

/** LAPIC local vector table: LINT0 takes the PIC's interrupts (ExtINT), LINT1 is NMI. */
const APIC_LVT0 = 0x350;
const APIC_LVT1 = 0x360;
const APIC_MODE_EXTINT = 0x7;
const APIC_MODE_NMI = 0x4;

export function setupLapic(vcpu: VcpuFd): void {
  const lapic = vcpu.getLapic();
  const mode = (reg: number, m: number) => {
    const v = lapic.readUInt32LE(reg);
    lapic.writeUInt32LE(((v & ~0x700) | (m << 8)) >>> 0, reg);
  };
  mode(APIC_LVT0, APIC_MODE_EXTINT);
  mode(APIC_LVT1, APIC_MODE_NMI);
  vcpu.setLapic(lapic);
}

/**
 * KVM ioctl numbers and constants: the one home of each. Values are from the kernel's UAPI
 * headers named beside them (linux-libc-dev); test/kvm/abi.test.ts compiles a C program
 * against those headers and checks every entry of ABI_CONSTANTS.
 */

// <asm-generic/ioctl.h>: dir(2) | size(14) | type(8) | nr(8), from the top bit down.
const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;

function ioc(dir: number, type: number, nr: number, size: number): number {
  // >>> 0 keeps the result an unsigned 32-bit number even with the read bit set.
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}
const io = (type: number, nr: number) => ioc(IOC_NONE, type, nr, 0);
const ior = (type: number, nr: number, size: number) => ioc(IOC_READ, type, nr, size);
const iow = (type: number, nr: number, size: number) => ioc(IOC_WRITE, type, nr, size);
const iowr = (type: number, nr: number, size: number) => ioc(IOC_READ | IOC_WRITE, type, nr, size);

/** <linux/kvm.h> */
const KVMIO = 0xae;

// Struct sizes that are part of ioctl numbers; layouts.ts has the full layouts and the
// test checks these sizes too.
const SIZEOF_KVM_CPUID2 = 8;
const SIZEOF_KVM_USERSPACE_MEMORY_REGION = 32;
const SIZEOF_KVM_REGS = 144;
const SIZEOF_KVM_SREGS = 312;
const SIZEOF_KVM_MSRS = 8;
const SIZEOF_KVM_FPU = 416;
const SIZEOF_KVM_LAPIC_STATE = 1024;
const SIZEOF_KVM_PIT_CONFIG = 64;
const SIZEOF_KVM_IRQ_LEVEL = 8;
const SIZEOF_KVM_IRQFD = 32;
const SIZEOF_KVM_IOEVENTFD = 64;

/** ioctls on /dev/kvm, VM and vCPU file descriptors. <linux/kvm.h> */
export const KVM_GET_API_VERSION = io(KVMIO, 0x00);
export const KVM_CREATE_VM = io(KVMIO, 0x01);
export const KVM_CHECK_EXTENSION = io(KVMIO, 0x03);
export const KVM_GET_VCPU_MMAP_SIZE = io(KVMIO, 0x04);
export const KVM_GET_SUPPORTED_CPUID = iowr(KVMIO, 0x05, SIZEOF_KVM_CPUID2);
export const KVM_CREATE_VCPU = io(KVMIO, 0x41);
export const KVM_SET_USER_MEMORY_REGION = iow(KVMIO, 0x46, SIZEOF_KVM_USERSPACE_MEMORY_REGION);
export const KVM_SET_TSS_ADDR = io(KVMIO, 0x47);
export const KVM_SET_IDENTITY_MAP_ADDR = iow(KVMIO, 0x48, 8);
export const KVM_CREATE_IRQCHIP = io(KVMIO, 0x60);
export const KVM_IRQ_LINE = iow(KVMIO, 0x61, SIZEOF_KVM_IRQ_LEVEL);
export const KVM_IRQFD = iow(KVMIO, 0x76, SIZEOF_KVM_IRQFD);
export const KVM_CREATE_PIT2 = iow(KVMIO, 0x77, SIZEOF_KVM_PIT_CONFIG);
export const KVM_IOEVENTFD = iow(KVMIO, 0x79, SIZEOF_KVM_IOEVENTFD);
export const KVM_RUN = io(KVMIO, 0x80);
export const KVM_GET_REGS = ior(KVMIO, 0x81, SIZEOF_KVM_REGS);
export const KVM_SET_REGS = iow(KVMIO, 0x82, SIZEOF_KVM_REGS);
export const KVM_GET_SREGS = ior(KVMIO, 0x83, SIZEOF_KVM_SREGS);
export const KVM_SET_SREGS = iow(KVMIO, 0x84, SIZEOF_KVM_SREGS);
export const KVM_SET_MSRS = iow(KVMIO, 0x89, SIZEOF_KVM_MSRS);
export const KVM_GET_FPU = ior(KVMIO, 0x8c, SIZEOF_KVM_FPU);
export const KVM_SET_FPU = iow(KVMIO, 0x8d, SIZEOF_KVM_FPU);
export const KVM_GET_LAPIC = ior(KVMIO, 0x8e, SIZEOF_KVM_LAPIC_STATE);
export const KVM_SET_LAPIC = iow(KVMIO, 0x8f, SIZEOF_KVM_LAPIC_STATE);
export const KVM_SET_CPUID2 = iow(KVMIO, 0x90, SIZEOF_KVM_CPUID2);

/** The only KVM API version there has ever been. <linux/kvm.h> */
export const KVM_API_VERSION = 12;

/** kvm_run.exit_reason values. <linux/kvm.h> */
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_EXCEPTION = 1;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HYPERCALL = 3;
export const KVM_EXIT_DEBUG = 4;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_FAIL_ENTRY = 9;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_SYSTEM_EVENT = 24;

/** kvm_run.io.direction. <linux/kvm.h> */
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

/** Capabilities for KVM_CHECK_EXTENSION. <linux/kvm.h> */
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_SET_TSS_ADDR = 4;
export const KVM_CAP_EXT_CPUID = 7;
export const KVM_CAP_IRQFD = 32;
export const KVM_CAP_PIT2 = 33;
export const KVM_CAP_IOEVENTFD = 36;
export const KVM_CAP_TSC_DEADLINE_TIMER = 72;
export const KVM_CAP_IMMEDIATE_EXIT = 136;

/** kvm_ioeventfd.flags. <linux/kvm.h> */
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;

/** kvm_pit_config.flags. <linux/kvm.h> */
export const KVM_PIT_SPEAKER_DUMMY = 1;

/** Upper bound on CPUID entries we ask KVM_GET_SUPPORTED_CPUID for. */
export const KVM_MAX_CPUID_ENTRIES = 256;

/** Model-specific registers set at boot. <asm/msr-index.h> is not in UAPI: values are architectural (Intel SDM vol. 4). */
export const MSR_IA32_SYSENTER_CS = 0x174;
export const MSR_IA32_SYSENTER_ESP = 0x175;
export const MSR_IA32_SYSENTER_EIP = 0x176;
export const MSR_IA32_MISC_ENABLE = 0x1a0;
export const MSR_IA32_MISC_ENABLE_FAST_STRING = 1;
export const MSR_STAR = 0xc0000081;
export const MSR_LSTAR = 0xc0000082;
export const MSR_CSTAR = 0xc0000083;
export const MSR_SYSCALL_MASK = 0xc0000084;
export const MSR_KERNEL_GS_BASE = 0xc0000102;
export const MSR_IA32_TSC = 0x10;
/** MTRR default type: bit 11 enables MTRRs, type 6 is write-back. Without it RAM is uncached. */
export const MSR_MTRR_DEF_TYPE = 0x2ff;
export const MTRR_ENABLE = 0x800;
export const MTRR_TYPE_WB = 0x6;

/** Control register and EFER bits (architectural, Intel SDM vol. 3). */
export const X86_CR0_PE = 0x1;
export const X86_CR0_ET = 0x10;
export const X86_CR0_PG = 0x80000000;
export const X86_CR4_PAE = 0x20;
export const EFER_LME = 0x100;
export const EFER_LMA = 0x400;

/**
 * Every constant above that a UAPI header defines, by the header's name for it, for the
 * check against the headers. Architectural values (MSRs, CR bits) are not in UAPI.
 */
export const ABI_CONSTANTS: Record<string, number> = {
  KVM_GET_API_VERSION,
  KVM_CREATE_VM,
  KVM_CHECK_EXTENSION,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_GET_SUPPORTED_CPUID,
  KVM_CREATE_VCPU,
  KVM_SET_USER_MEMORY_REGION,
  KVM_SET_TSS_ADDR,
  KVM_SET_IDENTITY_MAP_ADDR,
  KVM_CREATE_IRQCHIP,
  KVM_IRQ_LINE,
  KVM_IRQFD,
  KVM_CREATE_PIT2,
  KVM_IOEVENTFD,
  KVM_RUN,
  KVM_GET_REGS,
  KVM_SET_REGS,
  KVM_GET_SREGS,
  KVM_SET_SREGS,
  KVM_SET_MSRS,
  KVM_GET_FPU,
  KVM_SET_FPU,
  KVM_GET_LAPIC,
  KVM_SET_LAPIC,
  KVM_SET_CPUID2,
  KVM_API_VERSION,
  KVM_EXIT_UNKNOWN,
  KVM_EXIT_EXCEPTION,
  KVM_EXIT_IO,
  KVM_EXIT_HYPERCALL,
  KVM_EXIT_DEBUG,
  KVM_EXIT_HLT,
  KVM_EXIT_MMIO,
  KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_INTR,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_EXIT_IO_IN,
  KVM_EXIT_IO_OUT,
  KVM_CAP_IRQCHIP,
  KVM_CAP_USER_MEMORY,
  KVM_CAP_SET_TSS_ADDR,
  KVM_CAP_EXT_CPUID,
  KVM_CAP_IRQFD,
  KVM_CAP_PIT2,
  KVM_CAP_IOEVENTFD,
  KVM_CAP_TSC_DEADLINE_TIMER,
  KVM_CAP_IMMEDIATE_EXIT,
  KVM_PIT_SPEAKER_DUMMY,
  KVM_IOEVENTFD_FLAG_DATAMATCH,
  KVM_IOEVENTFD_FLAG_PIO,
  KVM_IOEVENTFD_FLAG_DEASSIGN,
};

/** The headers ABI_CONSTANTS and the layouts come from. */
export const ABI_HEADERS = ["linux/kvm.h"];

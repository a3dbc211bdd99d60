import {
  KVM_API_VERSION,
  KVM_CAP_IMMEDIATE_EXIT,
  KVM_CAP_IOEVENTFD,
  KVM_CAP_IRQCHIP,
  KVM_CAP_IRQFD,
  KVM_CAP_PIT2,
  KVM_CAP_SET_TSS_ADDR,
  KVM_CAP_USER_MEMORY,
  KVM_CHECK_EXTENSION,
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_PIT2,
  KVM_CREATE_VCPU,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  KVM_GET_FPU,
  KVM_GET_LAPIC,
  KVM_GET_REGS,
  KVM_GET_SREGS,
  KVM_GET_SUPPORTED_CPUID,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_IOEVENTFD,
  KVM_IRQ_LINE,
  KVM_IRQFD,
  KVM_MAX_CPUID_ENTRIES,
  KVM_PIT_SPEAKER_DUMMY,
  KVM_RUN,
  KVM_SET_CPUID2,
  KVM_SET_FPU,
  KVM_SET_IDENTITY_MAP_ADDR,
  KVM_SET_LAPIC,
  KVM_SET_MSRS,
  KVM_SET_REGS,
  KVM_SET_SREGS,
  KVM_SET_TSS_ADDR,
  KVM_SET_USER_MEMORY_REGION,
} from "./abi.js";
import {
  kvm_cpuid_entry2,
  kvm_cpuid2,
  kvm_fpu,
  kvm_ioeventfd,
  kvm_irq_level,
  kvm_irqfd,
  kvm_lapic_state,
  kvm_msr_entry,
  kvm_msrs,
  kvm_pit_config,
  kvm_regs,
  kvm_sregs,
  kvm_userspace_memory_region,
  Struct,
} from "./layouts.js";
import {
  close,
  ioctl,
  ioctlRaw,
  ioctlValue,
  MAP_SHARED,
  type Mapping,
  mmap,
  munmap,
  O_RDWR,
  open,
  PROT_READ,
  PROT_WRITE,
  SyscallError,
  view,
} from "./libc.js";

/** Why KVM cannot be used here, in words an operator can act on. */
export class KvmUnavailableError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = "KvmUnavailableError";
  }
}

export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

const REQUIRED_CAPS: [number, string][] = [
  [KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"],
  [KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"],
  [KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"],
  [KVM_CAP_PIT2, "KVM_CAP_PIT2"],
  [KVM_CAP_IRQFD, "KVM_CAP_IRQFD"],
  [KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"],
  [KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"],
];

/** /dev/kvm: the system-wide handle. */
export class Kvm {
  private constructor(readonly fd: number) {}

  static open(path = "/dev/kvm"): Kvm {
    let fd: number;
    try {
      fd = open(path, O_RDWR, `opening ${path}`);
    } catch (err) {
      const code = err instanceof SyscallError ? err.code : "";
      const hint =
        code === "ENOENT"
          ? "no such device: load kvm_intel or kvm_amd, and enable virtualisation in the firmware"
          : code === "EACCES"
            ? "permission denied: run as root"
            : (err as Error).message;
      throw new KvmUnavailableError(`cannot use ${path}: ${hint}`, err);
    }
    const kvm = new Kvm(fd);
    const version = ioctlValue(fd, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION");
    if (version !== KVM_API_VERSION) {
      kvm.close();
      throw new KvmUnavailableError(`${path} speaks KVM API ${version}, not ${KVM_API_VERSION}`);
    }
    const missing = REQUIRED_CAPS.filter(([cap]) => kvm.checkExtension(cap) <= 0).map(([, n]) => n);
    if (missing.length) {
      kvm.close();
      throw new KvmUnavailableError(`${path} lacks ${missing.join(", ")}`);
    }
    return kvm;
  }

  checkExtension(cap: number): number {
    return ioctlValue(this.fd, KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION");
  }

  vcpuMmapSize(): number {
    return ioctlValue(this.fd, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE");
  }

  supportedCpuid(): CpuidEntry[] {
    const buf = Buffer.alloc(kvm_cpuid2.size + KVM_MAX_CPUID_ENTRIES * kvm_cpuid_entry2.size);
    new Struct(kvm_cpuid2, buf).set("nent", KVM_MAX_CPUID_ENTRIES);
    ioctl(this.fd, KVM_GET_SUPPORTED_CPUID, buf, "KVM_GET_SUPPORTED_CPUID");
    return readCpuid(buf);
  }

  createVm(): VmFd {
    return new VmFd(ioctlValue(this.fd, KVM_CREATE_VM, 0, "KVM_CREATE_VM"), this.vcpuMmapSize());
  }

  close(): void {
    close(this.fd);
  }
}

function readCpuid(buf: Buffer): CpuidEntry[] {
  const n = new Struct(kvm_cpuid2, buf).get("nent");
  const entries: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const e = new Struct(kvm_cpuid_entry2, buf, kvm_cpuid2.size + i * kvm_cpuid_entry2.size);
    entries.push({
      function: e.get("function"),
      index: e.get("index"),
      flags: e.get("flags"),
      eax: e.get("eax"),
      ebx: e.get("ebx"),
      ecx: e.get("ecx"),
      edx: e.get("edx"),
    });
  }
  return entries;
}

/** A VM file descriptor. */
export class VmFd {
  constructor(
    readonly fd: number,
    readonly vcpuMmapSize: number,
  ) {}

  setTssAddr(address: number): void {
    ioctlValue(this.fd, KVM_SET_TSS_ADDR, address, "KVM_SET_TSS_ADDR");
  }

  setIdentityMapAddr(address: number): void {
    const buf = Buffer.alloc(8);
    buf.writeBigUInt64LE(BigInt(address));
    ioctl(this.fd, KVM_SET_IDENTITY_MAP_ADDR, buf, "KVM_SET_IDENTITY_MAP_ADDR");
  }

  createIrqchip(): void {
    ioctlValue(this.fd, KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP");
  }

  createPit2(): void {
    const pit = new Struct(kvm_pit_config).set("flags", KVM_PIT_SPEAKER_DUMMY);
    ioctl(this.fd, KVM_CREATE_PIT2, pit.buf, "KVM_CREATE_PIT2");
  }

  setUserMemoryRegion(
    slot: number,
    guestPhysAddr: number,
    size: number,
    hostAddress: bigint,
  ): void {
    const region = new Struct(kvm_userspace_memory_region)
      .set("slot", slot)
      .set("flags", 0)
      .set("guest_phys_addr", guestPhysAddr)
      .set("memory_size", size)
      .set("userspace_addr", hostAddress);
    ioctl(
      this.fd,
      KVM_SET_USER_MEMORY_REGION,
      region.buf,
      `KVM_SET_USER_MEMORY_REGION slot ${slot}`,
    );
  }

  /** Routes an eventfd to a guest interrupt line: the kernel injects on every write. */
  irqfd(eventFd: number, gsi: number): void {
    const s = new Struct(kvm_irqfd).set("fd", eventFd).set("gsi", gsi);
    ioctl(this.fd, KVM_IRQFD, s.buf, `KVM_IRQFD gsi ${gsi}`);
  }

  /** Makes a guest write to addr signal an eventfd in the kernel, without an exit. */
  ioeventfd(address: number, length: number, eventFd: number, flags = 0, datamatch = 0): void {
    const s = new Struct(kvm_ioeventfd)
      .set("addr", address)
      .set("len", length)
      .set("fd", eventFd)
      .set("flags", flags)
      .set("datamatch", datamatch);
    ioctl(this.fd, KVM_IOEVENTFD, s.buf, `KVM_IOEVENTFD at 0x${address.toString(16)}`);
  }

  createVcpu(id: number): number {
    return ioctlValue(this.fd, KVM_CREATE_VCPU, id, `KVM_CREATE_VCPU ${id}`);
  }

  close(): void {
    close(this.fd);
  }
}

/**
 * An edge on a guest interrupt line, raised by the calling thread itself (KVM_IRQ_LINE, the
 * line up then down): any thread may hold one, given the VM's fd. An irqfd looks cheaper and
 * is not, for these lines: KVM injects an irqfd at once only when it routes to an MSI
 * (kvm_arch_set_irq_inatomic); one routed to the IOAPIC, as virtio-mmio's are, is handed to
 * the kernel's system workqueue, so every interrupt woke a kworker. On the simulator's one
 * emulated CPU that kworker took a fifth of it while a disk was busy, where QEMU, which
 * raises these lines with KVM_IRQ_LINE, had none. Allocates nothing per edge.
 */
export class IrqEdge {
  private readonly request = Buffer.alloc(kvm_irq_level.size);
  private readonly what: string;
  private readonly levelAt = kvm_irq_level.fields.level[0];

  constructor(
    private readonly vmFd: number,
    readonly irq: number,
  ) {
    this.request.writeUInt32LE(irq, kvm_irq_level.fields.irq[0]);
    this.what = `KVM_IRQ_LINE ${irq}`;
  }

  raise(): void {
    this.request.writeUInt32LE(1, this.levelAt);
    ioctl(this.vmFd, KVM_IRQ_LINE, this.request, this.what);
    this.request.writeUInt32LE(0, this.levelAt);
    ioctl(this.vmFd, KVM_IRQ_LINE, this.request, this.what);
  }
}

/**
 * A vCPU file descriptor and its shared kvm_run page. Usable from any thread of the
 * process: a vCPU worker opens its own VcpuFd from the fd number.
 */
export class VcpuFd {
  readonly run: Buffer;
  private readonly mapping: Mapping;

  constructor(
    readonly fd: number,
    mmapSize: number,
  ) {
    this.mapping = mmap(mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, "mapping kvm_run");
    this.run = Buffer.from(view(this.mapping));
  }

  close(): void {
    munmap(this.mapping);
    close(this.fd);
  }

  /** Where kvm_run is mapped, for the vCPU's own thread to view it (see viewAt). */
  get runAddress(): bigint {
    return this.mapping.address;
  }

  /** One KVM_RUN: 0, or -errno (EINTR when kicked, EAGAIN). */
  runOnce(): number {
    return ioctlRaw(this.fd, KVM_RUN, 0);
  }

  getRegs(): Struct<keyof typeof kvm_regs.fields> {
    const s = new Struct(kvm_regs);
    ioctl(this.fd, KVM_GET_REGS, s.buf, "KVM_GET_REGS");
    return s;
  }

  setRegs(regs: Struct<keyof typeof kvm_regs.fields>): void {
    ioctl(this.fd, KVM_SET_REGS, regs.buf, "KVM_SET_REGS");
  }

  getSregs(): Struct<keyof typeof kvm_sregs.fields> {
    const s = new Struct(kvm_sregs);
    ioctl(this.fd, KVM_GET_SREGS, s.buf, "KVM_GET_SREGS");
    return s;
  }

  setSregs(sregs: Struct<keyof typeof kvm_sregs.fields>): void {
    ioctl(this.fd, KVM_SET_SREGS, sregs.buf, "KVM_SET_SREGS");
  }

  setMsrs(entries: [number, number | bigint][]): void {
    const buf = Buffer.alloc(kvm_msrs.size + entries.length * kvm_msr_entry.size);
    new Struct(kvm_msrs, buf).set("nmsrs", entries.length);
    entries.forEach(([index, data], i) => {
      new Struct(kvm_msr_entry, buf, kvm_msrs.size + i * kvm_msr_entry.size)
        .set("index", index)
        .set("data", data);
    });
    const set = ioctl(this.fd, KVM_SET_MSRS, buf, "KVM_SET_MSRS");
    if (set !== entries.length) {
      const bad = entries[set]?.[0] ?? 0;
      throw new Error(
        `KVM_SET_MSRS set ${set} of ${entries.length} MSRs; MSR 0x${bad.toString(16)} was refused`,
      );
    }
  }

  setCpuid(entries: CpuidEntry[]): void {
    const buf = Buffer.alloc(kvm_cpuid2.size + entries.length * kvm_cpuid_entry2.size);
    new Struct(kvm_cpuid2, buf).set("nent", entries.length);
    entries.forEach((entry, i) => {
      const e = new Struct(kvm_cpuid_entry2, buf, kvm_cpuid2.size + i * kvm_cpuid_entry2.size);
      for (const key of ["function", "index", "flags", "eax", "ebx", "ecx", "edx"] as const) {
        e.set(key, entry[key]);
      }
    });
    ioctl(this.fd, KVM_SET_CPUID2, buf, "KVM_SET_CPUID2");
  }

  getFpu(): Struct<keyof typeof kvm_fpu.fields> {
    const s = new Struct(kvm_fpu);
    ioctl(this.fd, KVM_GET_FPU, s.buf, "KVM_GET_FPU");
    return s;
  }

  setFpu(fpu: Struct<keyof typeof kvm_fpu.fields>): void {
    ioctl(this.fd, KVM_SET_FPU, fpu.buf, "KVM_SET_FPU");
  }

  getLapic(): Buffer {
    const s = new Struct(kvm_lapic_state);
    ioctl(this.fd, KVM_GET_LAPIC, s.buf, "KVM_GET_LAPIC");
    return s.buf;
  }

  setLapic(state: Buffer): void {
    ioctl(this.fd, KVM_SET_LAPIC, state, "KVM_SET_LAPIC");
  }
}

/**
 * Layouts of the kernel structs that KVM ioctls take, as byte offsets and sizes: the one
 * home of each. From <linux/kvm.h> and <asm/kvm.h> (x86-64); test/kvm/abi.test.ts checks
 * every size and offset here against those headers with offsetof/sizeof in C.
 */

export type FieldSize = 1 | 2 | 4 | 8 | number;

export interface Layout<F extends string = string> {
  /** The C type, e.g. "struct kvm_regs". */
  readonly c: string;
  readonly size: number;
  /** name -> [offset, size]; the name is the C member designator (a.b or a[2] allowed). */
  readonly fields: Readonly<Record<F, readonly [number, FieldSize]>>;
}

function layout<const F extends string>(
  c: string,
  size: number,
  fields: Record<F, readonly [number, FieldSize]>,
): Layout<F> {
  return { c, size, fields };
}

const u64s = <const N extends string>(names: readonly N[], start = 0) =>
  Object.fromEntries(names.map((n, i) => [n, [start + 8 * i, 8] as const])) as Record<
    N,
    readonly [number, 8]
  >;

export const kvm_regs = layout(
  "struct kvm_regs",
  144,
  u64s([
    "rax",
    "rbx",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "rsp",
    "rbp",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rip",
    "rflags",
  ] as const),
);

export const kvm_segment = layout("struct kvm_segment", 24, {
  base: [0, 8],
  limit: [8, 4],
  selector: [12, 2],
  type: [14, 1],
  present: [15, 1],
  dpl: [16, 1],
  db: [17, 1],
  s: [18, 1],
  l: [19, 1],
  g: [20, 1],
  avl: [21, 1],
  unusable: [22, 1],
});

export const kvm_dtable = layout("struct kvm_dtable", 16, { base: [0, 8], limit: [8, 2] });

export const kvm_sregs = layout("struct kvm_sregs", 312, {
  cs: [0, 24],
  ds: [24, 24],
  es: [48, 24],
  fs: [72, 24],
  gs: [96, 24],
  ss: [120, 24],
  tr: [144, 24],
  ldt: [168, 24],
  gdt: [192, 16],
  idt: [208, 16],
  cr0: [224, 8],
  cr2: [232, 8],
  cr3: [240, 8],
  cr4: [248, 8],
  cr8: [256, 8],
  efer: [264, 8],
  apic_base: [272, 8],
  interrupt_bitmap: [280, 32],
});

export const kvm_userspace_memory_region = layout("struct kvm_userspace_memory_region", 32, {
  slot: [0, 4],
  flags: [4, 4],
  guest_phys_addr: [8, 8],
  memory_size: [16, 8],
  userspace_addr: [24, 8],
});

/** The shared page of a vCPU, mapped from its fd: only the parts we read or write. */
export const kvm_run = layout("struct kvm_run", 2352, {
  request_interrupt_window: [0, 1],
  immediate_exit: [1, 1],
  exit_reason: [8, 4],
  ready_for_interrupt_injection: [12, 1],
  if_flag: [13, 1],
  "io.direction": [32, 1],
  "io.size": [33, 1],
  "io.port": [34, 2],
  "io.count": [36, 4],
  "io.data_offset": [40, 8],
  "mmio.phys_addr": [32, 8],
  "mmio.data": [40, 8],
  "mmio.len": [48, 4],
  "mmio.is_write": [52, 1],
  "fail_entry.hardware_entry_failure_reason": [32, 8],
  "fail_entry.cpu": [40, 4],
  "internal.suberror": [32, 4],
  "internal.ndata": [36, 4],
  "internal.data": [40, 128],
  "system_event.type": [32, 4],
});

export const kvm_cpuid2 = layout("struct kvm_cpuid2", 8, { nent: [0, 4], entries: [8, 0] });

export const kvm_cpuid_entry2 = layout("struct kvm_cpuid_entry2", 40, {
  function: [0, 4],
  index: [4, 4],
  flags: [8, 4],
  eax: [12, 4],
  ebx: [16, 4],
  ecx: [20, 4],
  edx: [24, 4],
});

export const kvm_msrs = layout("struct kvm_msrs", 8, { nmsrs: [0, 4], entries: [8, 0] });

export const kvm_msr_entry = layout("struct kvm_msr_entry", 16, {
  index: [0, 4],
  data: [8, 8],
});

export const kvm_fpu = layout("struct kvm_fpu", 416, {
  fpr: [0, 128],
  fcw: [128, 2],
  fsw: [130, 2],
  ftwx: [132, 1],
  last_opcode: [134, 2],
  last_ip: [136, 8],
  last_dp: [144, 8],
  xmm: [152, 256],
  mxcsr: [408, 4],
});

export const kvm_lapic_state = layout("struct kvm_lapic_state", 1024, { regs: [0, 1024] });

export const kvm_pit_config = layout("struct kvm_pit_config", 64, { flags: [0, 4] });

export const kvm_irq_level = layout("struct kvm_irq_level", 8, { irq: [0, 4], level: [4, 4] });

export const kvm_irqfd = layout("struct kvm_irqfd", 32, {
  fd: [0, 4],
  gsi: [4, 4],
  flags: [8, 4],
  resamplefd: [12, 4],
});

export const kvm_ioeventfd = layout("struct kvm_ioeventfd", 64, {
  datamatch: [0, 8],
  addr: [8, 8],
  len: [16, 4],
  fd: [20, 4],
  flags: [24, 4],
});

/** Every layout, for the check against the headers. */
export const LAYOUTS: readonly Layout[] = [
  kvm_regs,
  kvm_segment,
  kvm_dtable,
  kvm_sregs,
  kvm_userspace_memory_region,
  kvm_run,
  kvm_cpuid2,
  kvm_cpuid_entry2,
  kvm_msrs,
  kvm_msr_entry,
  kvm_fpu,
  kvm_lapic_state,
  kvm_pit_config,
  kvm_irq_level,
  kvm_irqfd,
  kvm_ioeventfd,
];

/** A struct instance in a Buffer, read and written by field name. */
export class Struct<F extends string> {
  readonly buf: Buffer;

  constructor(
    readonly layout: Layout<F>,
    buf?: Buffer,
    readonly base = 0,
  ) {
    this.buf = buf ?? Buffer.alloc(layout.size);
    if (this.base + layout.size > this.buf.length) {
      throw new RangeError(
        `${layout.c} does not fit at offset ${base} of a ${this.buf.length}-byte buffer`,
      );
    }
  }

  offset(field: F): number {
    return this.base + this.layout.fields[field][0];
  }

  get(field: F): number {
    const [off, size] = this.layout.fields[field];
    const at = this.base + off;
    switch (size) {
      case 1:
        return this.buf.readUInt8(at);
      case 2:
        return this.buf.readUInt16LE(at);
      case 4:
        return this.buf.readUInt32LE(at);
      case 8:
        return Number(this.buf.readBigUInt64LE(at));
      default:
        throw new TypeError(`${this.layout.c}.${field} is ${size} bytes: use sub()`);
    }
  }

  get64(field: F): bigint {
    return this.buf.readBigUInt64LE(this.offset(field));
  }

  set(field: F, value: number | bigint): this {
    const [off, size] = this.layout.fields[field];
    const at = this.base + off;
    switch (size) {
      case 1:
        this.buf.writeUInt8(Number(value), at);
        break;
      case 2:
        this.buf.writeUInt16LE(Number(value), at);
        break;
      case 4:
        this.buf.writeUInt32LE(Number(value) >>> 0, at);
        break;
      case 8:
        this.buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(value)), at);
        break;
      default:
        throw new TypeError(`${this.layout.c}.${field} is ${size} bytes: use sub()`);
    }
    return this;
  }

  /** A nested struct stored in one of this struct's fields. */
  sub<G extends string>(field: F, inner: Layout<G>): Struct<G> {
    return new Struct(inner, this.buf, this.offset(field));
  }
}

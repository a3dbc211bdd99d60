import type { Layout } from "../../kvm/index.js";

/**
 * ACPI table layouts and constants: the one home of them. From the ACPI Specification 6.5
 * (UEFI Forum, August 2022); each says which section it comes from. Field names follow
 * ACPICA's structs (include/acpi/actbl*.h in Linux), which is what the guest parses them
 * with. These are firmware structures, not kernel UAPI, so no C check: test/unit/acpi.test.ts
 * parses back what the builders produce.
 *
 * All multi-byte fields are little-endian and tables are packed (no padding).
 */

/** 5.2.5.3 Root System Description Pointer (RSDP) Structure, revision 2 (ACPI 2.0+). */
export const acpi_table_rsdp: Layout = {
  c: "struct acpi_table_rsdp",
  size: 36,
  fields: {
    signature: [0, 8],
    checksum: [8, 1],
    oem_id: [9, 6],
    revision: [15, 1],
    rsdt_physical_address: [16, 4],
    length: [20, 4],
    xsdt_physical_address: [24, 8],
    extended_checksum: [32, 1],
    reserved: [33, 3],
  },
};
/** 5.2.5.3: the ACPI 1.0 part of the RSDP, which `checksum` covers. */
export const RSDP_V1_LENGTH = 20;
export const RSDP_SIGNATURE = "RSD PTR ";
export const RSDP_REVISION = 2;

/** 5.2.6 System Description Table Header: the first 36 bytes of every table but the RSDP. */
export const acpi_table_header: Layout = {
  c: "struct acpi_table_header",
  size: 36,
  fields: {
    signature: [0, 4],
    length: [4, 4],
    revision: [8, 1],
    checksum: [9, 1],
    oem_id: [10, 6],
    oem_table_id: [16, 8],
    oem_revision: [24, 4],
    asl_compiler_id: [28, 4],
    asl_compiler_revision: [32, 4],
  },
};

/** 5.2.8 Extended System Description Table: the header, then 64-bit table addresses. */
export const XSDT_SIGNATURE = "XSDT";
export const XSDT_REVISION = 1;
export const XSDT_ENTRY_SIZE = 8;

/** 5.2.3.2 Generic Address Structure (GAS). */
export const acpi_generic_address: Layout = {
  c: "struct acpi_generic_address",
  size: 12,
  fields: {
    space_id: [0, 1],
    bit_width: [1, 1],
    bit_offset: [2, 1],
    access_width: [3, 1],
    address: [4, 8],
  },
};

/**
 * 5.2.9 Fixed ACPI Description Table (FADT), revision 6: 276 bytes since ACPI 6.0 added the
 * hypervisor vendor id. In hardware-reduced mode the PM blocks (sci_interrupt to century,
 * and the X_ register blocks) are ignored and stay zero.
 */
export const acpi_table_fadt: Layout = {
  c: "struct acpi_table_fadt",
  size: 276,
  fields: {
    header: [0, 36],
    facs: [36, 4],
    dsdt: [40, 4],
    model: [44, 1],
    preferred_profile: [45, 1],
    sci_interrupt: [46, 2],
    smi_command: [48, 4],
    acpi_enable: [52, 1],
    acpi_disable: [53, 1],
    s4_bios_request: [54, 1],
    pstate_control: [55, 1],
    pm1a_event_block: [56, 4],
    pm1b_event_block: [60, 4],
    pm1a_control_block: [64, 4],
    pm1b_control_block: [68, 4],
    pm2_control_block: [72, 4],
    pm_timer_block: [76, 4],
    gpe0_block: [80, 4],
    gpe1_block: [84, 4],
    pm1_event_length: [88, 1],
    pm1_control_length: [89, 1],
    pm2_control_length: [90, 1],
    pm_timer_length: [91, 1],
    gpe0_block_length: [92, 1],
    gpe1_block_length: [93, 1],
    gpe1_base: [94, 1],
    cst_control: [95, 1],
    c2_latency: [96, 2],
    c3_latency: [98, 2],
    flush_size: [100, 2],
    flush_stride: [102, 2],
    duty_offset: [104, 1],
    duty_width: [105, 1],
    day_alarm: [106, 1],
    month_alarm: [107, 1],
    century: [108, 1],
    boot_flags: [109, 2],
    reserved: [111, 1],
    flags: [112, 4],
    reset_register: [116, 12],
    reset_value: [128, 1],
    arm_boot_flags: [129, 2],
    minor_revision: [131, 1],
    Xfacs: [132, 8],
    Xdsdt: [140, 8],
    xpm1a_event_block: [148, 12],
    xpm1b_event_block: [160, 12],
    xpm1a_control_block: [172, 12],
    xpm1b_control_block: [184, 12],
    xpm2_control_block: [196, 12],
    xpm_timer_block: [208, 12],
    xgpe0_block: [220, 12],
    xgpe1_block: [232, 12],
    sleep_control: [244, 12],
    sleep_status: [256, 12],
    hypervisor_id: [268, 8],
  },
};
/** The FADT's signature is FACP, for historical reasons (5.2.9). */
export const FADT_SIGNATURE = "FACP";
export const FADT_REVISION = 6;
/** ACPI 6.5: major 6 in the header's revision, minor 5 here. */
export const FADT_MINOR_REVISION = 5;
/** 5.2.9 Table "FADT Preferred PM Profile": 0 is unspecified. */
export const PM_PROFILE_UNSPECIFIED = 0;
/** 5.2.9 Table "Fixed ACPI Description Table Fixed Feature Flags" (FADT `flags`). */
export const ACPI_FADT_POWER_BUTTON = 1 << 4;
export const ACPI_FADT_SLEEP_BUTTON = 1 << 5;
export const ACPI_FADT_HW_REDUCED = 1 << 20;
/** 5.2.9.3 IA-PC Boot Architecture Flags (FADT `boot_flags`). */
export const ACPI_FADT_8042 = 1 << 1;
export const ACPI_FADT_NO_VGA = 1 << 2;
export const ACPI_FADT_NO_CMOS_RTC = 1 << 5;

/** 5.2.11.1 Differentiated System Description Table: the header, then AML. */
export const DSDT_SIGNATURE = "DSDT";
/** 5.2.11.1: revision 2 or more makes AML integers 64-bit (1 would make them 32-bit). */
export const DSDT_REVISION = 2;

/** 5.2.12 Multiple APIC Description Table (MADT): the header, then controller structures. */
export const acpi_table_madt: Layout = {
  c: "struct acpi_table_madt",
  size: 44,
  fields: {
    header: [0, 36],
    address: [36, 4],
    flags: [40, 4],
  },
};
/** The MADT's signature is APIC (5.2.12). */
export const MADT_SIGNATURE = "APIC";
/** ACPI 6.5 defines MADT revision 6. */
export const MADT_REVISION = 6;
/** 5.2.12 Table "Multiple APIC Flags": the machine also has a PC-AT dual 8259. */
export const ACPI_MADT_PCAT_COMPAT = 1 << 0;
/** 5.2.12 Table "Interrupt Controller Structure Types". */
export const ACPI_MADT_TYPE_LOCAL_APIC = 0;
export const ACPI_MADT_TYPE_IO_APIC = 1;

/** 5.2.12.2 Processor Local APIC Structure. */
export const acpi_madt_local_apic: Layout = {
  c: "struct acpi_madt_local_apic",
  size: 8,
  fields: {
    type: [0, 1],
    length: [1, 1],
    processor_id: [2, 1],
    id: [3, 1],
    lapic_flags: [4, 4],
  },
};
/** 5.2.12.2 Table "Local APIC Flags". */
export const ACPI_MADT_ENABLED = 1 << 0;

/** 5.2.12.3 I/O APIC Structure. */
export const acpi_madt_io_apic: Layout = {
  c: "struct acpi_madt_io_apic",
  size: 12,
  fields: {
    type: [0, 1],
    length: [1, 1],
    id: [2, 1],
    reserved: [3, 1],
    address: [4, 4],
    global_irq_base: [8, 4],
  },
};

/** Where the xAPIC and the I/O APIC are on every PC (and in KVM's in-kernel irqchip). */
export const LOCAL_APIC_ADDRESS = 0xfee0_0000;
export const IO_APIC_ADDRESS = 0xfec0_0000;

/** 20.2 AML Grammar Definition: the opcodes and prefixes the AML writer in aml.ts uses. */
export const AML = {
  /** 20.2.3 Data Objects Encoding. */
  ZERO_OP: 0x00,
  ONE_OP: 0x01,
  BYTE_PREFIX: 0x0a,
  WORD_PREFIX: 0x0b,
  DWORD_PREFIX: 0x0c,
  STRING_PREFIX: 0x0d,
  QWORD_PREFIX: 0x0e,
  /** 20.2.2 Name Objects Encoding. */
  ROOT_CHAR: 0x5c,
  DUAL_NAME_PREFIX: 0x2e,
  MULTI_NAME_PREFIX: 0x2f,
  /** 20.2.5 Term Objects Encoding. */
  NAME_OP: 0x08,
  SCOPE_OP: 0x10,
  BUFFER_OP: 0x11,
  EXT_OP_PREFIX: 0x5b,
  /** DeviceOp is ExtOpPrefix 0x82 (20.2.5.2 Named Objects Encoding). */
  DEVICE_OP: 0x82,
} as const;

/**
 * 6.4 Resource Data Types for ACPI: the descriptors a _CRS buffer holds. Small items have a
 * one-byte tag (type << 3 | length), large items a tag byte then a 16-bit length.
 */
export const RESOURCE = {
  /** 6.4.2.5 I/O Port Descriptor: small item type 0x08, 7 bytes after the tag. */
  IO_TAG: (0x08 << 3) | 7,
  IO_DECODE_16: 1 << 0,
  /** 6.4.2.9 End Tag: small item type 0x0F, one checksum byte (0 means "not checked"). */
  END_TAG: (0x0f << 3) | 1,
  /** 6.4.3.4 32-Bit Fixed Memory Range Descriptor: large item 0x86, 9 bytes after the length. */
  MEMORY32_FIXED_TAG: 0x86,
  MEMORY32_FIXED_LENGTH: 9,
  MEMORY_READ_WRITE: 1 << 0,
  /** 6.4.3.6 Extended Interrupt Descriptor: large item 0x89, 2 + 4n bytes after the length. */
  EXTENDED_IRQ_TAG: 0x89,
  IRQ_CONSUMER: 1 << 0,
  IRQ_EDGE: 1 << 1,
  IRQ_ACTIVE_LOW: 1 << 2,
  IRQ_SHARED: 1 << 3,
} as const;

/** 6.1.5 _HID of a virtio-mmio transport, as Linux's virtio_mmio driver matches it. */
export const VIRTIO_MMIO_HID = "LNRO0005";
/** 6.1.5: the PNP id of a 16550-compatible serial port. */
export const SERIAL_HID = "PNP0501";

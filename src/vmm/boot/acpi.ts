import { Struct } from "../../kvm/index.js";
import type { GuestMemory } from "../guest-memory.js";
import {
  ACPI_FADT_8042,
  ACPI_FADT_HW_REDUCED,
  ACPI_FADT_NO_CMOS_RTC,
  ACPI_FADT_NO_VGA,
  ACPI_FADT_POWER_BUTTON,
  ACPI_FADT_SLEEP_BUTTON,
  ACPI_MADT_ENABLED,
  ACPI_MADT_PCAT_COMPAT,
  ACPI_MADT_TYPE_IO_APIC,
  ACPI_MADT_TYPE_LOCAL_APIC,
  acpi_madt_io_apic,
  acpi_madt_local_apic,
  acpi_table_fadt,
  acpi_table_header,
  acpi_table_madt,
  acpi_table_rsdp,
  DSDT_REVISION,
  DSDT_SIGNATURE,
  FADT_MINOR_REVISION,
  FADT_REVISION,
  FADT_SIGNATURE,
  IO_APIC_ADDRESS,
  LOCAL_APIC_ADDRESS,
  MADT_REVISION,
  MADT_SIGNATURE,
  PM_PROFILE_UNSPECIFIED,
  RSDP_REVISION,
  RSDP_SIGNATURE,
  RSDP_V1_LENGTH,
  SERIAL_HID,
  VIRTIO_MMIO_HID,
  XSDT_ENTRY_SIZE,
  XSDT_REVISION,
  XSDT_SIGNATURE,
} from "./acpi-spec.js";
import * as aml from "./aml.js";

/**
 * ACPI tables for a Linux guest, as Firecracker gives them: Debian's kernels find virtio-mmio
 * devices only in the DSDT (no VIRTIO_MMIO_CMDLINE_DEVICES) and secondary CPUs only in the
 * MADT (no X86_MPPARSE). The platform is hardware-reduced ACPI, so there is no PM timer, SCI
 * or sleep hardware to emulate; Linux then skips the legacy PIC and maps every interrupt
 * through the I/O APIC from what the DSDT and MADT say.
 */

/**
 * Where the tables go: the BIOS area from 0xE0000, which Linux also scans for the RSDP when
 * the boot protocol is older than 2.14 (no acpi_rsdp_addr). boot/linux.ts marks all of
 * 0x9FC00-0x100000 reserved in the e820 map, so the guest never takes it as RAM.
 */
export const ACPI_TABLES_START = 0xe_0000;
export const ACPI_TABLES_END = 0x10_0000;

const OEM_ID = "FLGRID";
const OEM_REVISION = 1;
const CREATOR_ID = "FLGD";
const CREATOR_REVISION = 1;
const HYPERVISOR_ID = "FLATGRID";
/** The RSDP must be on a 16-byte boundary for a scan to find it; the rest follow alike. */
const ALIGN = 16;

export class AcpiError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AcpiError";
  }
}

export interface AcpiMmioDevice {
  address: number;
  size: number;
  gsi: number;
}

export interface AcpiSerialPort {
  port: number;
  irq: number;
}

/** What the guest is told about the machine. */
export interface AcpiPlatform {
  /** vCPUs, with APIC ids 0..vcpus-1 (as cpuid.ts gives them). */
  vcpus: number;
  /** virtio-mmio transports, in order: Linux probes them in DSDT order, so the first disk is vda. */
  virtio: readonly AcpiMmioDevice[];
  /** 16550 UARTs: in hardware-reduced mode their IRQs reach Linux only through the DSDT. */
  serial: readonly AcpiSerialPort[];
}

export interface AcpiTable {
  signature: string;
  address: number;
  length: number;
}

export interface AcpiTables {
  /** Guest-physical address of the RSDP (= start). */
  rsdp: number;
  start: number;
  /** Every table, laid out from `start`, with the gaps between them zero. */
  image: Buffer;
  tables: AcpiTable[];
}

/** Makes each byte of the buffer sum to zero (mod 256) by setting the byte at `at`. */
export function fixChecksum(buf: Buffer, at: number): void {
  buf[at] = 0;
  let sum = 0;
  for (const b of buf) sum = (sum + b) & 0xff;
  buf[at] = (0x100 - sum) & 0xff;
}

function ascii(buf: Buffer, offset: number, text: string, width: number): void {
  buf.fill(0x20, offset, offset + width);
  buf.write(text.slice(0, width), offset, "latin1");
}

/** A table with its 5.2.6 header filled in; the checksum is set once the body is written. */
function newTable(signature: string, revision: number, tableId: string, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const h = new Struct(acpi_table_header, buf);
  ascii(buf, h.offset("signature"), signature, 4);
  h.set("length", length).set("revision", revision);
  ascii(buf, h.offset("oem_id"), OEM_ID, 6);
  ascii(buf, h.offset("oem_table_id"), `FGVM${tableId}`, 8);
  h.set("oem_revision", OEM_REVISION);
  ascii(buf, h.offset("asl_compiler_id"), CREATOR_ID, 4);
  h.set("asl_compiler_revision", CREATOR_REVISION);
  return buf;
}

function sealTable(buf: Buffer): Buffer {
  fixChecksum(buf, new Struct(acpi_table_header, buf).offset("checksum"));
  return buf;
}

export function buildRsdp(xsdt: number): Buffer {
  const buf = Buffer.alloc(acpi_table_rsdp.size);
  const r = new Struct(acpi_table_rsdp, buf);
  ascii(buf, r.offset("signature"), RSDP_SIGNATURE, 8);
  ascii(buf, r.offset("oem_id"), OEM_ID, 6);
  r.set("revision", RSDP_REVISION).set("length", buf.length).set("xsdt_physical_address", xsdt);
  // The ACPI 1.0 checksum covers the first 20 bytes, the extended one all 36 (5.2.5.3).
  fixChecksum(buf.subarray(0, RSDP_V1_LENGTH), r.offset("checksum"));
  fixChecksum(buf, r.offset("extended_checksum"));
  return buf;
}

export function buildXsdt(entries: readonly number[]): Buffer {
  const buf = newTable(
    XSDT_SIGNATURE,
    XSDT_REVISION,
    "XSDT",
    acpi_table_header.size + XSDT_ENTRY_SIZE * entries.length,
  );
  entries.forEach((address, i) => {
    buf.writeBigUInt64LE(BigInt(address), acpi_table_header.size + XSDT_ENTRY_SIZE * i);
  });
  return sealTable(buf);
}

export function buildFadt(dsdt: number): Buffer {
  const buf = newTable(FADT_SIGNATURE, FADT_REVISION, "FACP", acpi_table_fadt.size);
  const f = new Struct(acpi_table_fadt, buf);
  f.set("preferred_profile", PM_PROFILE_UNSPECIFIED)
    // The i8042 is there (the guest resets through it); no VGA, no CMOS RTC to probe.
    .set("boot_flags", ACPI_FADT_8042 | ACPI_FADT_NO_VGA | ACPI_FADT_NO_CMOS_RTC)
    // Hardware-reduced: no fixed-feature hardware, so the buttons are not fixed features either.
    .set("flags", ACPI_FADT_HW_REDUCED | ACPI_FADT_POWER_BUTTON | ACPI_FADT_SLEEP_BUTTON)
    .set("minor_revision", FADT_MINOR_REVISION)
    // Only the 64-bit pointer: with both set, ACPICA must decide which one to believe.
    .set("Xdsdt", dsdt);
  ascii(buf, f.offset("hypervisor_id"), HYPERVISOR_ID, 8);
  return sealTable(buf);
}

export function buildMadt(vcpus: number): Buffer {
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 255) {
    throw new AcpiError(`an xAPIC MADT describes 1 to 255 vCPUs, not ${vcpus}`);
  }
  const buf = newTable(
    MADT_SIGNATURE,
    MADT_REVISION,
    "APIC",
    acpi_table_madt.size + vcpus * acpi_madt_local_apic.size + acpi_madt_io_apic.size,
  );
  new Struct(acpi_table_madt, buf)
    .set("address", LOCAL_APIC_ADDRESS)
    // KVM's in-kernel irqchip has the pair of 8259s too; the flag tells the OS to mask them.
    .set("flags", ACPI_MADT_PCAT_COMPAT);
  let at = acpi_table_madt.size;
  // The boot CPU's entry comes first (5.2.12.1); APIC ids match CPUID leaf 1 from cpuid.ts.
  for (let cpu = 0; cpu < vcpus; cpu++) {
    new Struct(acpi_madt_local_apic, buf, at)
      .set("type", ACPI_MADT_TYPE_LOCAL_APIC)
      .set("length", acpi_madt_local_apic.size)
      .set("processor_id", cpu)
      .set("id", cpu)
      .set("lapic_flags", ACPI_MADT_ENABLED);
    at += acpi_madt_local_apic.size;
  }
  // No interrupt source overrides: KVM's default GSI routing wires ISA IRQ n to I/O APIC pin
  // n (the PIT included, on pin 0), so the PC's usual IRQ0 -> GSI2 override would be wrong.
  new Struct(acpi_madt_io_apic, buf, at)
    .set("type", ACPI_MADT_TYPE_IO_APIC)
    .set("length", acpi_madt_io_apic.size)
    // The in-kernel I/O APIC's ID register reads 0 after reset.
    .set("id", 0)
    .set("address", IO_APIC_ADDRESS)
    .set("global_irq_base", 0);
  return sealTable(buf);
}

/**
 * irqfd and KVM_IRQ_LINE pulses are edges, so every interrupt is edge-triggered, active high:
 * a level-triggered I/O APIC pin would drop a pulse that arrives before the guest's EOI.
 */
const EDGE_HIGH: aml.InterruptOptions = { edge: true, activeLow: false, shared: false };

/** The AML of one virtio-mmio transport: what Linux's virtio_mmio driver binds to. */
export function virtioDeviceAml(index: number, device: AcpiMmioDevice): Buffer {
  return aml.device(`V${index.toString().padStart(3, "0")}`, [
    aml.name("_HID", aml.string(VIRTIO_MMIO_HID)),
    aml.name("_UID", aml.integer(index)),
    // Cache-coherent DMA: the rings are plain guest RAM that the VMM reads and writes.
    aml.name("_CCA", aml.integer(1)),
    aml.name(
      "_CRS",
      aml.resourceTemplate([
        aml.memory32Fixed(device.address, device.size),
        aml.extendedInterrupt(device.gsi, EDGE_HIGH),
      ]),
    ),
  ]);
}

function serialAml(index: number, port: AcpiSerialPort): Buffer {
  return aml.device(`COM${index + 1}`, [
    aml.name("_HID", aml.eisaId(SERIAL_HID)),
    aml.name("_UID", aml.integer(index)),
    aml.name(
      "_CRS",
      aml.resourceTemplate([aml.ioPorts(port.port, 8), aml.extendedInterrupt(port.irq, EDGE_HIGH)]),
    ),
  ]);
}

export function buildDsdt(platform: AcpiPlatform): Buffer {
  const body = aml.scope("\\_SB_", [
    ...platform.serial.map((p, i) => serialAml(i, p)),
    ...platform.virtio.map((d, i) => virtioDeviceAml(i, d)),
  ]);
  const buf = newTable(DSDT_SIGNATURE, DSDT_REVISION, "DSDT", acpi_table_header.size + body.length);
  body.copy(buf, acpi_table_header.size);
  return sealTable(buf);
}

const alignUp = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/** Every table, laid out from `start` (RSDP, XSDT, FADT, MADT, DSDT), as one image. */
export function buildAcpiTables(platform: AcpiPlatform, start = ACPI_TABLES_START): AcpiTables {
  if (start % ALIGN !== 0)
    throw new AcpiError(`tables must start 16-byte aligned, not 0x${start.toString(16)}`);
  const dsdt = buildDsdt(platform);
  const madt = buildMadt(platform.vcpus);
  const rsdpAt = start;
  const xsdtAt = alignUp(rsdpAt + acpi_table_rsdp.size);
  const fadtAt = alignUp(xsdtAt + acpi_table_header.size + 2 * XSDT_ENTRY_SIZE);
  const madtAt = alignUp(fadtAt + acpi_table_fadt.size);
  const dsdtAt = alignUp(madtAt + madt.length);
  const placed: [number, Buffer][] = [
    [rsdpAt, buildRsdp(xsdtAt)],
    [xsdtAt, buildXsdt([fadtAt, madtAt])],
    [fadtAt, buildFadt(dsdtAt)],
    [madtAt, madt],
    [dsdtAt, dsdt],
  ];
  const end = dsdtAt + dsdt.length;
  const image = Buffer.alloc(end - start);
  const tables: AcpiTable[] = [];
  for (const [address, table] of placed) {
    table.copy(image, address - start);
    tables.push({
      signature: table.toString("latin1", 0, address === rsdpAt ? 8 : 4),
      address,
      length: table.length,
    });
  }
  return { rsdp: rsdpAt, start, image, tables };
}

/** Writes the tables into guest RAM; returns the RSDP's address for boot_params. */
export function writeAcpiTables(memory: GuestMemory, platform: AcpiPlatform): number {
  const tables = buildAcpiTables(platform);
  const end = tables.start + tables.image.length;
  if (end > ACPI_TABLES_END) {
    throw new AcpiError(
      `ACPI tables need ${tables.image.length} bytes, more than the 0x${(ACPI_TABLES_END - ACPI_TABLES_START).toString(16)} reserved for them`,
    );
  }
  // Through slice(): refuses (GuestMemoryError) any part outside guest RAM.
  memory.write(tables.start, tables.image);
  return tables.rsdp;
}

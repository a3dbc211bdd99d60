// The ACPI tables a Linux guest gets (src/vmm/boot/acpi.ts), parsed back the way a guest
// would: from the RSDP through the XSDT to the FADT, MADT and DSDT, with every checksum and
// length checked, and the DSDT's AML decoded into its devices and their resources.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  ACPI_TABLES_END,
  ACPI_TABLES_START,
  AcpiError,
  type AcpiPlatform,
  type AcpiTables,
  buildAcpiTables,
  buildMadt,
  virtioDeviceAml,
} from "../../src/vmm/boot/acpi.js";
import {
  ACPI_FADT_HW_REDUCED,
  ACPI_MADT_ENABLED,
  IO_APIC_ADDRESS,
  LOCAL_APIC_ADDRESS,
} from "../../src/vmm/boot/acpi-spec.js";
import * as aml from "../../src/vmm/boot/aml.js";

const platform = (vcpus: number, virtio: number): AcpiPlatform => ({
  vcpus,
  virtio: Array.from({ length: virtio }, (_, i) => ({
    address: 0xd000_0000 + i * 0x1000,
    size: 0x1000,
    gsi: 5 + i,
  })),
  serial: [{ port: 0x3f8, irq: 4 }],
});

const sum = (b: Buffer) => b.reduce((s, x) => (s + x) & 0xff, 0);

/** A guest's view: bytes at a guest-physical address, from the image the builder made. */
function at(t: AcpiTables, address: number, length: number): Buffer {
  assert.ok(address >= t.start && address + length <= t.start + t.image.length, "inside the image");
  return t.image.subarray(address - t.start, address - t.start + length);
}

/** A table by its header: signature, the length it claims, and a checksum that sums to 0. */
function table(t: AcpiTables, address: number, signature: string): Buffer {
  const head = at(t, address, 36);
  assert.equal(head.toString("latin1", 0, 4), signature);
  const whole = at(t, address, head.readUInt32LE(4));
  assert.equal(sum(whole), 0, `${signature} checksum`);
  assert.equal(whole.toString("latin1", 10, 16), "FLGRID", `${signature} OEM id`);
  return whole;
}

interface Parsed {
  xsdt: Buffer;
  fadt: Buffer;
  madt: Buffer;
  dsdt: Buffer;
}

function walk(t: AcpiTables): Parsed {
  const rsdp = at(t, t.rsdp, 36);
  assert.equal(t.rsdp % 16, 0, "RSDP on a 16-byte boundary");
  assert.equal(rsdp.toString("latin1", 0, 8), "RSD PTR ");
  assert.equal(rsdp[15], 2, "RSDP revision");
  assert.equal(rsdp.readUInt32LE(20), 36, "RSDP length");
  assert.equal(sum(rsdp.subarray(0, 20)), 0, "RSDP ACPI 1.0 checksum");
  assert.equal(sum(rsdp), 0, "RSDP extended checksum");
  assert.equal(rsdp.readUInt32LE(16), 0, "no RSDT");
  const xsdt = table(t, Number(rsdp.readBigUInt64LE(24)), "XSDT");
  assert.equal(xsdt[8], 1, "XSDT revision");
  const entries = (xsdt.length - 36) / 8;
  assert.equal(entries, 2);
  const pointed = Array.from({ length: entries }, (_, i) =>
    Number(xsdt.readBigUInt64LE(36 + 8 * i)),
  );
  const [fadtAt = 0, madtAt = 0] = pointed;
  const fadt = table(t, fadtAt, "FACP");
  const madt = table(t, madtAt, "APIC");
  assert.equal(fadt.readUInt32LE(40), 0, "no 32-bit DSDT pointer");
  const dsdt = table(t, Number(fadt.readBigUInt64LE(140)), "DSDT");
  return { xsdt, fadt, madt, dsdt };
}

// A small AML decoder: just the terms the builder emits.
type Data = number | bigint | string | Buffer;
type Term =
  | { op: "scope" | "device"; name: string; terms: Term[] }
  | { op: "name"; name: string; value: Data };

function pkgLength(b: Buffer, i: number): { length: number; bytes: number } {
  const b0 = b[i] ?? 0;
  const extra = b0 >> 6;
  if (extra === 0) return { length: b0 & 0x3f, bytes: 1 };
  let length = b0 & 0x0f;
  for (let k = 1; k <= extra; k++) length |= (b[i + k] ?? 0) << (4 + 8 * (k - 1));
  return { length, bytes: 1 + extra };
}

function nameString(b: Buffer, i: number): { name: string; bytes: number } {
  let p = i;
  let prefix = "";
  if (b[p] === 0x5c) {
    prefix = "\\";
    p++;
  }
  let segs = 1;
  if (b[p] === 0x2e) {
    segs = 2;
    p++;
  } else if (b[p] === 0x2f) {
    segs = b[p + 1] ?? 0;
    p += 2;
  } else if (b[p] === 0x00) {
    segs = 0;
    p++;
  }
  const names: string[] = [];
  for (let s = 0; s < segs; s++, p += 4) names.push(b.toString("latin1", p, p + 4));
  return { name: prefix + names.join("."), bytes: p - i };
}

function data(b: Buffer, i: number): { value: Data; bytes: number } {
  switch (b[i]) {
    case 0x00:
      return { value: 0, bytes: 1 };
    case 0x01:
      return { value: 1, bytes: 1 };
    case 0x0a:
      return { value: b.readUInt8(i + 1), bytes: 2 };
    case 0x0b:
      return { value: b.readUInt16LE(i + 1), bytes: 3 };
    case 0x0c:
      return { value: b.readUInt32LE(i + 1), bytes: 5 };
    case 0x0e:
      return { value: b.readBigUInt64LE(i + 1), bytes: 9 };
    case 0x0d: {
      const end = b.indexOf(0, i + 1);
      return { value: b.toString("latin1", i + 1, end), bytes: end + 1 - i };
    }
    case 0x11: {
      const pl = pkgLength(b, i + 1);
      const size = data(b, i + 1 + pl.bytes);
      const start = i + 1 + pl.bytes + size.bytes;
      const end = i + 1 + pl.length;
      assert.equal(end - start, size.value, "buffer size matches its contents");
      return { value: b.subarray(start, end), bytes: end - i };
    }
    default:
      throw new Error(`unexpected data opcode 0x${b[i]?.toString(16)} at ${i}`);
  }
}

function terms(b: Buffer, from: number, to: number): Term[] {
  const out: Term[] = [];
  let i = from;
  while (i < to) {
    if (b[i] === 0x08) {
      const n = nameString(b, i + 1);
      const v = data(b, i + 1 + n.bytes);
      out.push({ op: "name", name: n.name, value: v.value });
      i += 1 + n.bytes + v.bytes;
      continue;
    }
    const opBytes = b[i] === 0x10 ? 1 : b[i] === 0x5b && b[i + 1] === 0x82 ? 2 : 0;
    if (opBytes === 0) throw new Error(`unexpected opcode 0x${b[i]?.toString(16)} at ${i}`);
    const pl = pkgLength(b, i + opBytes);
    const end = i + opBytes + pl.length;
    const n = nameString(b, i + opBytes + pl.bytes);
    out.push({
      op: opBytes === 1 ? "scope" : "device",
      name: n.name,
      terms: terms(b, i + opBytes + pl.bytes + n.bytes, end),
    });
    i = end;
  }
  assert.equal(i, to, "terms end exactly where their package does");
  return out;
}

type Resource =
  | { kind: "io"; decode16: boolean; min: number; max: number; align: number; length: number }
  | { kind: "mem32fixed"; writable: boolean; base: number; length: number }
  | { kind: "irq"; flags: number; gsis: number[] };

function resources(b: Buffer): Resource[] {
  const out: Resource[] = [];
  let i = 0;
  for (;;) {
    const tag = b[i] ?? 0;
    if (tag === 0x79) {
      assert.equal(i + 2, b.length, "end tag is last");
      return out;
    }
    if (tag === 0x47) {
      out.push({
        kind: "io",
        decode16: ((b[i + 1] ?? 0) & 1) === 1,
        min: b.readUInt16LE(i + 2),
        max: b.readUInt16LE(i + 4),
        align: b[i + 6] ?? 0,
        length: b[i + 7] ?? 0,
      });
      i += 8;
    } else if (tag === 0x86) {
      assert.equal(b.readUInt16LE(i + 1), 9);
      out.push({
        kind: "mem32fixed",
        writable: ((b[i + 3] ?? 0) & 1) === 1,
        base: b.readUInt32LE(i + 4),
        length: b.readUInt32LE(i + 8),
      });
      i += 12;
    } else if (tag === 0x89) {
      const len = b.readUInt16LE(i + 1);
      const count = b[i + 4] ?? 0;
      assert.equal(len, 2 + 4 * count);
      out.push({
        kind: "irq",
        flags: b[i + 3] ?? 0,
        gsis: Array.from({ length: count }, (_, k) => b.readUInt32LE(i + 5 + 4 * k)),
      });
      i += 3 + len;
    } else {
      throw new Error(`unexpected resource tag 0x${tag.toString(16)}`);
    }
  }
}

const named = (t: Term[], n: string) => {
  const found = t.find((x) => x.op === "name" && x.name === n);
  return found?.op === "name" ? found.value : undefined;
};

describe("ACPI tables", () => {
  it("chain RSDP -> XSDT -> FADT/MADT -> DSDT with right signatures, lengths and checksums", () => {
    const t = buildAcpiTables(platform(2, 3));
    assert.equal(t.rsdp, 0xe0000);
    const { fadt } = walk(t);
    assert.equal(fadt.length, 276);
    assert.equal(fadt[8], 6, "FADT revision 6");
    assert.equal(fadt[131], 5, "FADT minor revision");
    assert.ok(fadt.readUInt32LE(112) & ACPI_FADT_HW_REDUCED, "hardware-reduced");
    assert.equal(fadt.readUInt16LE(46), 0, "no SCI");
    assert.equal(fadt.readUInt32LE(76), 0, "no PM timer");
    assert.equal(fadt.toString("latin1", 268, 276), "FLATGRID");
    // Tables do not overlap and stay inside the reserved BIOS area.
    const spans = t.tables.map((x) => [x.address, x.address + x.length] as const);
    spans.forEach(([, end], k) => {
      const next = spans[k + 1];
      if (next) assert.ok(end <= next[0], "no overlap");
    });
    assert.ok((spans.at(-1)?.[1] ?? Infinity) <= ACPI_TABLES_END);
    assert.ok((spans[0]?.[0] ?? 0) >= ACPI_TABLES_START);
  });

  it("lists one enabled local APIC per vCPU, APIC id = index, and the I/O APIC at GSI 0", () => {
    for (const vcpus of [1, 2, 7, 64]) {
      const { madt } = walk(buildAcpiTables(platform(vcpus, 1)));
      assert.equal(madt.readUInt32LE(36), LOCAL_APIC_ADDRESS);
      const lapics: { uid: number; id: number; flags: number }[] = [];
      const ioapics: { id: number; address: number; gsiBase: number }[] = [];
      let i = 44;
      while (i < madt.length) {
        const type = madt[i];
        const length = madt[i + 1] ?? 0;
        assert.ok(length > 0);
        if (type === 0) {
          assert.equal(length, 8);
          lapics.push({
            uid: madt[i + 2] ?? -1,
            id: madt[i + 3] ?? -1,
            flags: madt.readUInt32LE(i + 4),
          });
        } else if (type === 1) {
          assert.equal(length, 12);
          ioapics.push({
            id: madt[i + 2] ?? -1,
            address: madt.readUInt32LE(i + 4),
            gsiBase: madt.readUInt32LE(i + 8),
          });
        } else {
          assert.fail(`unexpected MADT entry type ${type}`);
        }
        i += length;
      }
      assert.equal(i, madt.length, "entries fill the table exactly");
      assert.deepEqual(
        lapics,
        Array.from({ length: vcpus }, (_, id) => ({ uid: id, id, flags: ACPI_MADT_ENABLED })),
      );
      assert.deepEqual(ioapics, [{ id: 0, address: IO_APIC_ADDRESS, gsiBase: 0 }]);
    }
    assert.throws(() => buildMadt(0), AcpiError);
  });

  it("declares each virtio-mmio window and the serial port in the DSDT", () => {
    const p = platform(1, 8);
    const { dsdt } = walk(buildAcpiTables(p));
    assert.equal(dsdt[8], 2, "DSDT revision 2: 64-bit integers");
    const top = terms(dsdt, 36, dsdt.length);
    assert.equal(top.length, 1);
    const sb = top[0];
    assert.ok(sb?.op === "scope" && sb.name === "\\_SB_");
    const devices = sb.terms.filter((x) => x.op === "device");
    assert.deepEqual(
      devices.map((d) => d.name),
      ["COM1", "V000", "V001", "V002", "V003", "V004", "V005", "V006", "V007"],
    );
    const [com1, ...virtio] = devices;
    assert.ok(com1?.op === "device");
    // EISAID("PNP0501") as ASL compiles it.
    assert.equal(named(com1.terms, "_HID"), 0x0105d041);
    const comCrs = named(com1.terms, "_CRS");
    assert.ok(Buffer.isBuffer(comCrs));
    assert.deepEqual(resources(comCrs), [
      { kind: "io", decode16: true, min: 0x3f8, max: 0x3f8, align: 1, length: 8 },
      { kind: "irq", flags: 0b011, gsis: [4] },
    ]);
    virtio.forEach((d, n) => {
      assert.ok(d.op === "device");
      assert.equal(named(d.terms, "_HID"), "LNRO0005");
      assert.equal(named(d.terms, "_UID"), n);
      const crs = named(d.terms, "_CRS");
      assert.ok(Buffer.isBuffer(crs));
      // Consumer, edge-triggered, active high, exclusive: what an irqfd pulse is.
      assert.deepEqual(resources(crs), [
        { kind: "mem32fixed", writable: true, base: 0xd000_0000 + n * 0x1000, length: 0x1000 },
        { kind: "irq", flags: 0b011, gsis: [5 + n] },
      ]);
    });
  });

  it("encodes a virtio device as the exact AML bytes ASL would", () => {
    const bytes = virtioDeviceAml(0, { address: 0xd000_0000, size: 0x1000, gsi: 5 });
    const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");
    const ascii = (s: string) => Buffer.from(s, "latin1");
    const expected = Buffer.concat([
      hex("5b82 4104"), // DeviceOp, PkgLength 65 in two bytes
      ascii("V000"),
      hex("08"),
      ascii("_HID"),
      hex("0d"),
      ascii("LNRO0005"),
      hex("00"),
      hex("08"),
      ascii("_UID"),
      hex("00"), // Zero
      hex("08"),
      ascii("_CCA"),
      hex("01"), // One
      hex("08"),
      ascii("_CRS"),
      hex("11 1a 0a 17"), // BufferOp, PkgLength 26, size 23
      hex("86 0900 01 000000d0 00100000"), // Memory32Fixed(ReadWrite, 0xD0000000, 0x1000)
      hex("89 0600 03 01 05000000"), // Interrupt(Consumer, Edge, ActiveHigh, Exclusive) {5}
      hex("79 00"), // EndTag
    ]);
    assert.equal(bytes.toString("hex"), expected.toString("hex"));
  });

  it("fits 64 vCPUs and 8 devices in the reserved area", () => {
    const t = buildAcpiTables(platform(64, 8));
    walk(t);
    assert.ok(t.start + t.image.length <= ACPI_TABLES_END);
  });
});

describe("AML writer", () => {
  it("encodes PkgLength in 1 to 4 bytes, counting its own bytes", () => {
    assert.deepEqual([...aml.pkgLength(0)], [1]);
    assert.deepEqual([...aml.pkgLength(62)], [63]);
    // 63 content bytes + 2 length bytes = 65 = 0x41.
    assert.deepEqual([...aml.pkgLength(63)], [0x41, 0x04]);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 28 - 5 }), (n) => {
        const enc = aml.pkgLength(n);
        const back = pkgLength(enc, 0);
        assert.equal(back.bytes, enc.length);
        assert.equal(back.length, n + enc.length);
      }),
    );
    assert.throws(() => aml.pkgLength(2 ** 28), aml.AmlError);
  });

  it("encodes names, integers, strings and EISA ids", () => {
    assert.equal(aml.nameString("\\_SB_").toString("hex"), "5c5f53425f");
    assert.equal(aml.nameString("_SB.PCI0").toString("hex"), "2e5f53425f50434930");
    assert.equal(aml.nameString("\\").toString("hex"), "5c00");
    assert.equal(aml.nameString("A.B.C").toString("hex"), `2f03${"415f5f5f425f5f5f435f5f5f"}`);
    for (const bad of ["", "v000", "0ABC", "ABCDE", "A-B"]) {
      assert.throws(() => aml.nameString(bad), aml.AmlError, bad);
    }
    assert.equal(aml.integer(0).toString("hex"), "00");
    assert.equal(aml.integer(1).toString("hex"), "01");
    assert.equal(aml.integer(2).toString("hex"), "0a02");
    assert.equal(aml.integer(0x1234).toString("hex"), "0b3412");
    assert.equal(aml.integer(0xd000_0000).toString("hex"), "0c000000d0");
    assert.equal(aml.integer(2n ** 40n).toString("hex"), "0e0000000000010000");
    assert.throws(() => aml.integer(-1), aml.AmlError);
    assert.throws(() => aml.integer(2n ** 64n), aml.AmlError);
    assert.equal(aml.string("ab").toString("hex"), "0d616200");
    assert.throws(() => aml.string("a\0b"), aml.AmlError);
    assert.equal(aml.eisaId("PNP0501").toString("hex"), "0c41d00501");
    assert.equal(aml.eisaId("PNP0A03").toString("hex"), "0c41d00a03");
    assert.throws(() => aml.eisaId("pnp0501"), aml.AmlError);
    assert.throws(() => aml.memory32Fixed(2 ** 32, 0x1000), aml.AmlError);
    assert.throws(() => aml.ioPorts(0x10000, 8), aml.AmlError);
  });
});

// Checks every KVM ioctl number, constant and struct layout in src/kvm against the kernel's
// UAPI headers (linux-libc-dev) and the PVH ABI against Xen's public headers (libxen-dev), by compiling a C program that prints what C sees.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ABI_CONSTANTS, ABI_HEADERS } from "../../src/kvm/abi.js";
import {
  BOOTPARAM_CONSTANTS,
  BOOTPARAM_HEADERS,
  boot_e820_entry,
  boot_params,
} from "../../src/kvm/bootparam.js";
import { LAYOUTS } from "../../src/kvm/layouts.js";
import { iovec, LIBC_CONSTANTS, pollfd } from "../../src/kvm/libc.js";
import { PVH_CONSTANTS, PVH_HEADERS, PVH_LAYOUTS } from "../../src/kvm/pvh-abi.js";
import { TUN_CONSTANTS, TUN_HEADERS, TUN_LAYOUTS } from "../../src/kvm/tun-abi.js";
import { VHOST_CONSTANTS, VHOST_HEADERS, VHOST_LAYOUTS } from "../../src/kvm/vhost-abi.js";
import { VIRTIO_CONSTANTS, VIRTIO_HEADERS, VIRTIO_LAYOUTS } from "../../src/kvm/virtio-abi.js";

let fromC = new Map<string, number>();
const ALL_LAYOUTS = [
  ...LAYOUTS,
  boot_params,
  boot_e820_entry,
  pollfd,
  iovec,
  ...TUN_LAYOUTS,
  ...VHOST_LAYOUTS,
  ...PVH_LAYOUTS,
  ...VIRTIO_LAYOUTS,
];
const dir = mkdtempSync(join(tmpdir(), "flatgrid-abi-"));

before(() => {
  const lines: string[] = [];
  const print = (key: string, expr: string) =>
    lines.push(`  printf("%s %llu\\n", "${key}", (unsigned long long)(${expr}));`);
  for (const name of Object.keys(ABI_CONSTANTS)) print(name, name);
  for (const name of Object.keys(LIBC_CONSTANTS)) print(name, name);
  // VIRTIO_MMIO_MAGIC is the spec's value, not a header macro.
  for (const name of Object.keys(VIRTIO_CONSTANTS)) print(name, name);
  for (const name of Object.keys(BOOTPARAM_CONSTANTS)) print(name, name);
  for (const name of Object.keys(TUN_CONSTANTS)) print(name, name);
  for (const name of Object.keys(VHOST_CONSTANTS)) print(name, name);
  for (const name of Object.keys(PVH_CONSTANTS)) print(name, name);
  for (const layout of ALL_LAYOUTS) {
    print(`sizeof ${layout.c}`, `sizeof(${layout.c})`);
    for (const [field, [, size]] of Object.entries(layout.fields)) {
      print(`offsetof ${layout.c} ${field}`, `offsetof(${layout.c}, ${field})`);
      // A flexible array member has no size of its own.
      if (size > 0) print(`sizeof ${layout.c} ${field}`, `sizeof(((${layout.c} *)0)->${field})`);
    }
  }
  const headers = [
    ...ABI_HEADERS,
    ...VIRTIO_HEADERS,
    ...BOOTPARAM_HEADERS,
    ...TUN_HEADERS,
    ...VHOST_HEADERS,
    ...PVH_HEADERS,
    ...new Set(Object.values(LIBC_CONSTANTS).map((c) => c.header)),
    "stddef.h",
    "stdio.h",
  ];
  const source = `${headers.map((h) => `#include <${h}>`).join("\n")}\nint main(void) {\n${lines.join("\n")}\n  return 0;\n}\n`;
  writeFileSync(join(dir, "abi.c"), `#define _GNU_SOURCE\n${source}`);
  execFileSync("gcc", ["-Wall", "-Werror", "-o", join(dir, "abi"), join(dir, "abi.c")]);
  const out = execFileSync(join(dir, "abi"), { encoding: "utf8" });
  fromC = new Map(
    out
      .trim()
      .split("\n")
      .map((line) => {
        const space = line.lastIndexOf(" ");
        return [line.slice(0, space), Number(line.slice(space + 1))] as const;
      }),
  );
});

after(() => rmSync(dir, { recursive: true, force: true }));

describe("KVM ABI against the kernel headers", () => {
  it("has every ioctl number and constant right", () => {
    for (const [name, value] of Object.entries(ABI_CONSTANTS)) {
      assert.equal(
        value,
        fromC.get(name),
        `${name}: ours 0x${value.toString(16)}, header 0x${fromC.get(name)?.toString(16)}`,
      );
    }
    for (const [name, value] of Object.entries({
      ...VIRTIO_CONSTANTS,
      ...BOOTPARAM_CONSTANTS,
      ...TUN_CONSTANTS,
      ...VHOST_CONSTANTS,
      ...PVH_CONSTANTS,
    })) {
      assert.equal(value, fromC.get(name), name);
    }
    for (const [name, { value }] of Object.entries(LIBC_CONSTANTS)) {
      assert.equal(value, fromC.get(name), name);
    }
  });

  it("has every struct size, field offset and field size right", () => {
    let checked = 0;
    for (const layout of ALL_LAYOUTS) {
      assert.equal(layout.size, fromC.get(`sizeof ${layout.c}`), `sizeof(${layout.c})`);
      for (const [field, [offset, size]] of Object.entries(layout.fields)) {
        assert.equal(
          offset,
          fromC.get(`offsetof ${layout.c} ${field}`),
          `offsetof(${layout.c}, ${field})`,
        );
        if (size > 0) {
          assert.equal(
            size,
            fromC.get(`sizeof ${layout.c} ${field}`),
            `sizeof(${layout.c}.${field})`,
          );
        }
        checked++;
      }
    }
    assert.ok(checked > 100, `only ${checked} fields checked`);
  });
});

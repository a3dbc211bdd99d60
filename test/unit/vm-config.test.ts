// vm.json: what `flatgrid vmm --config` accepts, the defaults it fills in, and errors that
// name the field. The real path (a file, a monitor process that refuses it) is in
// test/kvm/vmm-process.test.ts.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { loadVmConfig, parseVmConfig, VmJsonError } from "../../src/vmm/index.js";

function problem(json: unknown): string {
  try {
    parseVmConfig(json);
  } catch (err) {
    assert.ok(err instanceof VmJsonError, String(err));
    return err.message;
  }
  assert.fail(`accepted ${JSON.stringify(json)}`);
}

describe("vm.json", () => {
  it("fills in the defaults of a minimal VM", () => {
    assert.deepEqual(parseVmConfig({ memoryMiB: 64, kernel: "/k" }), {
      memoryMiB: 64,
      vcpus: 1,
      kernel: "/k",
      disks: [],
      nics: [],
      debugExit: false,
      rng: true,
      hugepages: false,
    });
  });

  it("takes every field", () => {
    const full = {
      memoryMiB: 256,
      vcpus: 2,
      kernel: "/boot/vmlinuz",
      cmdline: "quiet",
      initrd: "/boot/initrd",
      disks: [{ path: "/d0" }, { path: "/d1", readOnly: true, id: "data-1" }],
      nics: [{ tap: "fgt0", mac: "02:00:00:00:00:01", vhost: false }, { tap: "" }],
      debugExit: true,
      rng: false,
      vsock: { cid: 42 },
      hugepages: true,
    };
    assert.deepEqual(parseVmConfig(full), {
      ...full,
      disks: [{ path: "/d0", readOnly: false }, full.disks[1]],
      nics: [full.nics[0], { tap: "", vhost: true }],
    });
  });

  it("names the field and says what is wrong with it", () => {
    const base = { memoryMiB: 64, kernel: "/k" };
    assert.equal(problem([]), "field (top): must be an object, not a list");
    assert.equal(problem({ kernel: "/k" }), "field memoryMiB: is required");
    assert.equal(problem({ memoryMiB: 64 }), "field kernel: is required");
    assert.equal(problem({ ...base, kernel: "" }), "field kernel: must not be empty");
    assert.equal(
      problem({ ...base, vcpus: 0 }),
      "field vcpus: must be a whole number from 1 to 64, not 0",
    );
    assert.equal(
      problem({ ...base, memoryMiB: 1.5 }),
      "field memoryMiB: must be a whole number from 8 to 1048576, not 1.5",
    );
    assert.equal(
      problem({ ...base, memoryMiB: "64" }),
      'field memoryMiB: must be a whole number from 8 to 1048576, not "64"',
    );
    assert.match(problem({ ...base, memory: 64 }), /^field memory: is not a field here \(known: /);
    assert.equal(
      problem({ ...base, disks: [{ path: "/d" }, { path: "/e", ro: true }] }),
      "field disks[1].ro: is not a field here (known: path, readOnly, id)",
    );
    assert.equal(problem({ ...base, disks: [{}] }), "field disks[0].path: is required");
    assert.equal(
      problem({ ...base, disks: [{ path: "/d", readOnly: "yes" }] }),
      'field disks[0].readOnly: must be true or false, not "yes"',
    );
    assert.equal(
      problem({ ...base, disks: Array.from({ length: 9 }, () => ({ path: "/d" })) }),
      "field disks: may have at most 8 entries, not 9",
    );
    assert.equal(problem({ ...base, disks: {} }), "field disks: must be a list, not an object");
    assert.equal(
      problem({ ...base, nics: [{ tap: "t", mac: "02:00:00:00:00" }] }),
      'field nics[0].mac: must be a MAC address like 02:00:00:00:00:01, not "02:00:00:00:00"',
    );
    assert.equal(
      problem({ ...base, nics: [{ tap: "a-tap-name-too-long" }] }),
      "field nics[0].tap: must be at most 15 characters, not 19",
    );
    assert.equal(
      problem({ ...base, vsock: { cid: 2 } }),
      "field vsock.cid: must be a whole number from 3 to 4294967294, not 2",
    );
    assert.equal(problem({ ...base, vsock: null }), "field vsock: must be an object, not null");
    assert.equal(
      problem({ ...base, cmdline: "x".repeat(4097) }),
      "field cmdline: must be at most 4096 characters, not 4097",
    );
  });

  it("loadVmConfig names the file: missing, not JSON, or a bad field", () => {
    const dir = mkdtempSync(join(tmpdir(), "flatgrid-vmconfig-"));
    try {
      const file = join(dir, "vm.json");
      assert.throws(() => loadVmConfig(file), { message: `${file}: no such file` });
      writeFileSync(file, "{ memoryMiB: 64 }");
      assert.throws(
        () => loadVmConfig(file),
        new RegExp(`^VmConfigFileError: ${file}: not valid JSON: `),
      );
      writeFileSync(file, JSON.stringify({ memoryMiB: 64, kernel: "/k", vcpus: 65 }));
      assert.throws(() => loadVmConfig(file), {
        name: "VmConfigFileError",
        message: `${file}: field vcpus: must be a whole number from 1 to 64, not 65`,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { settingsFromCmdline } from "../../src/os/node-config.js";
import {
  checkPassword,
  checkSettings,
  hashPassword,
  mergeNodeConf,
  NodeSettingsStore,
  NoStorageError,
  SettingsError,
} from "../../src/os/node-settings.js";

const problemsOf = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    if (err instanceof SettingsError) return err.problems;
    throw err;
  }
  assert.fail("no SettingsError");
};

describe("node settings (what the console stores)", () => {
  it("checks each value with the node configuration's own rules, and names the key", () => {
    const config = checkSettings([], {
      "flatgrid.grid": "rack-a",
      "flatgrid.token": "a-long-shared-secret",
      "flatgrid.net": "static",
      "flatgrid.ip": "192.0.2.10/24",
      "flatgrid.gateway": "192.0.2.1",
    });
    assert.equal(config.grid, "rack-a");
    assert.equal(config.ip, "192.0.2.10/24");
    assert.deepEqual(
      problemsOf(() =>
        checkSettings([], {
          "flatgrid.net": "static",
          "flatgrid.ip": "192.0.2.300/24",
          "flatgrid.grid": "Rack A",
        }),
      ).map((p) => p.key),
      ["flatgrid.ip", "flatgrid.grid", "flatgrid.net"],
    );
    assert.match(
      problemsOf(() => checkSettings([], { "flatgrid.format": "blank" }))[0]?.message ?? "",
      /cannot be set here/,
    );
  });

  it("reports only the problems a request brings, not those already on the command line", () => {
    const before = settingsFromCmdline("flatgrid.modules=bad/name");
    assert.doesNotThrow(() =>
      checkSettings(before, { "flatgrid.grid": "lab", "flatgrid.token": "0123456789abcdef" }),
    );
    // A grid on the command line with its token: removing the token here is a problem.
    const gridded = settingsFromCmdline("flatgrid.grid=lab flatgrid.token=0123456789abcdef");
    assert.deepEqual(
      problemsOf(() => checkSettings(gridded, { "flatgrid.token": "" })).map((p) => p.key),
      ["flatgrid.token"],
    );
  });

  it("removing a key from the node's own file lets the command line's value apply again", () => {
    const cmdline = settingsFromCmdline("flatgrid.net=static flatgrid.ip=10.0.0.5/24");
    const own = (s: { source: string }) => s.source !== "kernel command line";
    assert.equal(checkSettings(cmdline, { "flatgrid.ip": "" }, own).ip, "10.0.0.5/24");
    assert.equal(checkSettings(cmdline, { "flatgrid.ip": "10.0.0.6/24" }, own).ip, "10.0.0.6/24");
  });

  it("merges into node.conf: same keys replaced in place, removed with an empty value, the rest kept", () => {
    const text = "# rack a\nflatgrid.grid=old\nnet = static\nip=10.0.0.5/24\nflatgrid.grid=older\n";
    assert.equal(
      mergeNodeConf(text, {
        "flatgrid.grid": "new",
        "flatgrid.net": "dhcp",
        "flatgrid.ip": "",
        "flatgrid.dns": "10.0.0.53",
      }),
      "# rack a\nflatgrid.grid=new\nflatgrid.net=dhcp\nflatgrid.dns=10.0.0.53\n",
    );
    assert.equal(mergeNodeConf("", { "flatgrid.ip": "" }), "");
  });

  it("hashes passwords with scrypt and a salt: never stored as given", () => {
    const stored = hashPassword("correct horse");
    assert.match(stored, /^scrypt\$[0-9a-f]{32}\$[0-9a-f]{64}$/);
    assert.notEqual(hashPassword("correct horse"), stored);
    assert.equal(checkPassword("correct horse", stored), true);
    assert.equal(checkPassword("wrong horse", stored), false);
    assert.equal(checkPassword("x", "garbage"), false);
  });

  it("stores in the node's own directory: a password first, then the current one to change anything", () => {
    const dir = mkdtempSync(join(tmpdir(), "flatgrid-settings-"));
    try {
      const cmdline = join(dir, "cmdline");
      writeFileSync(cmdline, "quiet\n");
      const store = new NodeSettingsStore({ cmdline, configDirs: [], dir });
      const grid = { "flatgrid.grid": "lab", "flatgrid.token": "0123456789abcdef" };
      assert.deepEqual(
        problemsOf(() => store.store({ settings: grid })).map((p) => p.key),
        ["consolePassword"],
      );
      assert.deepEqual(
        problemsOf(() => store.store({ settings: grid, consolePassword: "short" })).map(
          (p) => p.message,
        ),
        ["is too short: at least 8 characters"],
      );
      const first = store.store({ settings: grid, consolePassword: "a good password" });
      assert.deepEqual(first.changed, ["flatgrid.grid", "flatgrid.token"]);
      assert.equal(
        readFileSync(join(dir, "node.conf"), "utf8"),
        "flatgrid.grid=lab\nflatgrid.token=0123456789abcdef\n",
      );
      assert.doesNotMatch(readFileSync(join(dir, "console-password"), "utf8"), /good/);
      assert.deepEqual(store.checkPassword("a good password"), { set: true, ok: true });
      // Now changing anything needs the password; a bad request changes nothing.
      const before = readFileSync(join(dir, "node.conf"), "utf8");
      assert.deepEqual(
        problemsOf(() =>
          store.store({ settings: { "flatgrid.net": "static", "flatgrid.ip": "10.0.0.300/24" } }),
        ).map((p) => p.key),
        ["currentPassword", "flatgrid.ip", "flatgrid.net"],
      );
      assert.equal(readFileSync(join(dir, "node.conf"), "utf8"), before);
      const second = store.store({
        settings: { "flatgrid.net": "static", "flatgrid.ip": "10.0.0.5/24" },
        currentPassword: "a good password",
      });
      assert.deepEqual(second.changed, ["flatgrid.net", "flatgrid.ip"]);
      assert.equal(second.config.grid, "lab");
      assert.throws(
        () => new NodeSettingsStore({ cmdline, configDirs: [], dir: null }).store({ settings: {} }),
        NoStorageError,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

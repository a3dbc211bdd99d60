import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  formatConfigError,
  redactConfig,
  resolveConfig,
  settingsFromCmdline,
  settingsFromFile,
  splitCmdline,
} from "../../src/os/node-config.js";

describe("node configuration", () => {
  it("splits a kernel command line with quotes and stops at --", () => {
    assert.deepEqual(splitCmdline('ro quiet flatgrid.grid=lab a="b c" -- init-arg'), [
      "ro",
      "quiet",
      "flatgrid.grid=lab",
      "a=b c",
    ]);
  });

  it("reads flatgrid.* keys and ignores the kernel's own", () => {
    const { config, errors } = resolveConfig(
      settingsFromCmdline(
        "BOOT_IMAGE=/vmlinuz console=ttyS0 flatgrid.grid=lab flatgrid.token=0123456789abcdef0123 flatgrid.net=static flatgrid.ip=192.0.2.10/24 flatgrid.gateway=192.0.2.1 flatgrid.dns=192.0.2.53,192.0.2.54 flatgrid.debug\n",
      ),
    );
    assert.deepEqual(errors, []);
    assert.equal(config.grid, "lab");
    assert.equal(config.net, "static");
    assert.equal(config.ip, "192.0.2.10/24");
    assert.deepEqual(config.dns, ["192.0.2.53", "192.0.2.54"]);
    assert.equal(config.debug, true);
    assert.equal(redactConfig(config).token, "(hidden)");
  });

  it("reports a bad key with source, key and value, and keeps the default", () => {
    const { config, errors } = resolveConfig(
      settingsFromCmdline("flatgrid.ip=10.0.0.300/24 flatgrid.net=static flatgrid.colour=blue"),
    );
    assert.equal(errors.length, 3);
    assert.equal(
      formatConfigError(errors[0]!),
      "kernel command line: flatgrid.ip=10.0.0.300/24 is not an IPv4 address with a prefix length, like 192.0.2.10/24",
    );
    assert.match(formatConfigError(errors[1]!), /flatgrid\.colour=blue is not a flatgrid key/);
    assert.match(
      formatConfigError(errors[2]!),
      /flatgrid\.net=static needs flatgrid\.ip.*falling back to dhcp/,
    );
    assert.equal(config.net, "dhcp");
    assert.equal(config.ip, null);
  });

  it("flatgrid.console: tty1 by default, a list of terminals, none, or an error that names the bad one", () => {
    assert.deepEqual(resolveConfig(settingsFromCmdline("")).config.consoles, ["tty1"]);
    assert.deepEqual(
      resolveConfig(settingsFromCmdline("flatgrid.console=tty1,ttyS1")).config.consoles,
      ["tty1", "ttyS1"],
    );
    assert.deepEqual(
      resolveConfig(settingsFromCmdline("flatgrid.console=none")).config.consoles,
      [],
    );
    const { config, errors } = resolveConfig(settingsFromCmdline("flatgrid.console=tty1,/dev/sda"));
    assert.match(
      formatConfigError(errors[0]!),
      /flatgrid\.console=tty1,\/dev\/sda has "\/dev\/sda", which is not a terminal like tty1 or ttyS1/,
    );
    assert.deepEqual(config.consoles, ["tty1"]);
  });

  it("never shows a token, even a bad one", () => {
    const { errors } = resolveConfig(settingsFromCmdline("flatgrid.grid=lab flatgrid.token=tok3n"));
    assert.equal(errors[0]?.value, "(hidden)");
    assert.doesNotMatch(JSON.stringify(errors), /tok3n/);
  });

  it("reads node.conf with line numbers, and the file wins over the command line", () => {
    const file = settingsFromFile(
      '# written by the console\n\nhostname = rack1-a\nflatgrid.net = "dhcp"\nbogus line\nip=1.2.3\n',
      "/etc/flatgrid/node.conf",
    );
    assert.equal(file.errors.length, 1);
    assert.equal(
      formatConfigError(file.errors[0]!),
      '/etc/flatgrid/node.conf:5: bogus line is not a "key = value" line',
    );
    const { config, errors } = resolveConfig(
      [...settingsFromCmdline("flatgrid.hostname=fromcmdline"), ...file.settings],
      file.errors,
    );
    assert.equal(config.hostname, "rack1-a");
    assert.equal(errors.length, 2);
    assert.equal(errors[1]?.source, "/etc/flatgrid/node.conf:6");
  });

  it("asks for both grid and token", () => {
    const { errors } = resolveConfig(settingsFromCmdline("flatgrid.grid=lab"));
    assert.match(formatConfigError(errors[0]!), /flatgrid\.token is missing/);
  });
});

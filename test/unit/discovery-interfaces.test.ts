import assert from "node:assert/strict";
import type { NetworkInterfaceInfo } from "node:os";
import { describe, it } from "node:test";
import {
  inSubnet,
  interfaceForSource,
  type SystemInterfaces,
  selectInterfaces,
} from "../../src/discovery/interfaces.js";

const v4 = (address: string, prefix = 24, internal = false): NetworkInterfaceInfo => ({
  address,
  netmask: "255.255.255.0",
  family: "IPv4",
  mac: "00:00:00:00:00:00",
  internal,
  cidr: `${address}/${prefix}`,
});
const v6 = (address: string): NetworkInterfaceInfo => ({
  address,
  netmask: "ffff:ffff:ffff:ffff::",
  family: "IPv6",
  mac: "00:00:00:00:00:00",
  internal: false,
  cidr: `${address}/64`,
  scopeid: 0,
});

const UP_MULTICAST = 0x1003;
const system = (
  interfaces: Record<string, NetworkInterfaceInfo[]>,
  flags: Record<string, number> = {},
  operstate: Record<string, string> = {},
): SystemInterfaces => ({
  interfaces,
  flags: (name) => flags[name] ?? UP_MULTICAST,
  operstate: (name) => operstate[name] ?? "up",
});

describe("discovery interfaces", () => {
  const sys = system(
    {
      lo: [v4("127.0.0.1", 8, true)],
      eth0: [v4("10.213.0.2"), v6("fd00:213::2"), v6("fe80::1")],
      eth1: [v4("10.213.1.2"), v4("192.168.5.2")],
      down0: [v4("10.9.0.1")],
      nomc0: [v4("10.8.0.1")],
      nocarrier0: [v4("10.7.0.1")],
      v6only: [v6("fd00:1::1")],
    },
    { lo: 0x49, down0: 0x1002, nomc0: 0x3 },
    { nocarrier0: "down" },
  );

  it("takes every up, multicast, non-loopback interface with IPv4 by default", () => {
    const list = selectInterfaces(sys);
    assert.deepEqual(
      list.map((i) => i.name),
      ["eth0", "eth1"],
    );
    assert.deepEqual(list[0]?.addresses, {
      ipv4: ["10.213.0.2"],
      ipv6: ["fd00:213::2", "fe80::1"],
    });
    assert.deepEqual(list[1]?.addresses.ipv4, ["10.213.1.2", "192.168.5.2"]);
    assert.equal(list[1]?.ipv4, "10.213.1.2");
  });

  it("takes only the interfaces named, and IPv6 only when asked", () => {
    const list = selectInterfaces(sys, { names: ["eth1", "lo", "missing"], ipv6: false });
    assert.deepEqual(
      list.map((i) => i.name),
      ["eth1"],
    );
    const withLo = selectInterfaces(system({ lo: [v4("127.0.0.1", 8, true)] }, { lo: 0x1009 }), {
      names: ["lo"],
    });
    assert.deepEqual(
      withLo.map((i) => i.name),
      ["lo"],
    );
    assert.deepEqual(selectInterfaces(sys, { ipv6: false })[0]?.addresses.ipv6, []);
  });

  it("attributes a datagram to the interface whose subnet holds its source", () => {
    const list = selectInterfaces(sys);
    assert.equal(interfaceForSource("10.213.0.77", list)?.name, "eth0");
    assert.equal(interfaceForSource("192.168.5.200", list)?.name, "eth1");
    assert.equal(interfaceForSource("10.213.2.1", list), undefined);
    assert.equal(inSubnet("10.1.2.3", { address: "10.0.0.0", prefixLength: 8 }), true);
    assert.equal(inSubnet("11.1.2.3", { address: "10.0.0.0", prefixLength: 8 }), false);
    assert.equal(inSubnet("10.0.0.5", { address: "10.0.0.5", prefixLength: 32 }), true);
  });
});

// The supervisor's network bring-up (normally run only as the node OS) inside a private
// network namespace with a veth "NIC": real ip(8) commands on a real interface.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { repo } from "./namespace.js";

const id = randomBytes(3).toString("hex");
const NS = `fg-sys-${id}`;
const ip = (...args: string[]) => execFileSync("ip", args, { encoding: "utf8" });

after(() => {
  try {
    ip("netns", "del", NS);
  } catch {
    // Already gone.
  }
  rmSync(`/etc/netns/${NS}`, { recursive: true, force: true });
});

/** Runs bringUpNetwork in the namespace and returns its notes and the services it asks for. */
function bringUp(config: object): {
  notes: string[];
  services: { name: string; command: string[] }[];
} {
  const script = `
    import { bringUpNetwork } from ${JSON.stringify(join(repo, "dist/src/os/network.js"))};
    import { DEFAULT_CONFIG } from ${JSON.stringify(join(repo, "dist/src/os/node-config.js"))};
    const notes = [], services = [];
    await bringUpNetwork({ ...DEFAULT_CONFIG, ...${JSON.stringify(config)} }, (m) => notes.push(m), services);
    console.log(JSON.stringify({ notes, services }));`;
  const out = execFileSync(
    "ip",
    ["netns", "exec", NS, process.execPath, "--input-type=module", "-e", script],
    {
      encoding: "utf8",
    },
  );
  return JSON.parse(out);
}

/** Runs reapplyNetwork in the namespace: what it noted, and what it did to the services. */
function reapply(
  before: object,
  after: object,
  running: string[],
  current: string | null = null,
): {
  notes: string[];
  calls: string[];
} {
  const script = `
    import { reapplyNetwork } from ${JSON.stringify(join(repo, "dist/src/os/network.js"))};
    import { DEFAULT_CONFIG } from ${JSON.stringify(join(repo, "dist/src/os/node-config.js"))};
    const notes = [], calls = [], running = new Set(${JSON.stringify(running)});
    await reapplyNetwork(
      { ...DEFAULT_CONFIG, ...${JSON.stringify(before)} },
      { ...DEFAULT_CONFIG, ...${JSON.stringify(after)} },
      ${JSON.stringify(current)},
      (m) => notes.push(m),
      {
        has: (name) => running.has(name),
        remove: async (name) => { calls.push("remove " + name); running.delete(name); },
        add: async (spec) => { calls.push("add " + spec.name + ": " + spec.command.join(" ")); },
      },
    );
    console.log(JSON.stringify({ notes, calls }));`;
  const out = execFileSync(
    "ip",
    ["netns", "exec", NS, process.execPath, "--input-type=module", "-e", script],
    { encoding: "utf8" },
  );
  return JSON.parse(out);
}

describe("network bring-up on a real interface", { timeout: 60_000 }, () => {
  it("configures a static address, route and name servers, or asks for a DHCP client", () => {
    ip("netns", "add", NS);
    // ip netns exec bind-mounts this over /etc/resolv.conf, so the host's stays untouched.
    mkdirSync(`/etc/netns/${NS}`, { recursive: true });
    writeFileSync(`/etc/netns/${NS}/resolv.conf`, "");
    ip("link", "add", `fgv${id}`, "type", "veth", "peer", "name", "eth0", "netns", NS);
    const r = bringUp({
      net: "static",
      ip: "10.215.0.5/24",
      gateway: "10.215.0.1",
      dns: ["10.215.0.53"],
    });
    assert.deepEqual(r.services, []);
    assert.match(r.notes.join("\n"), /network: eth0 10\.215\.0\.5\/24 via 10\.215\.0\.1/);
    assert.match(ip("-n", NS, "-4", "addr", "show", "eth0"), /inet 10\.215\.0\.5\/24/);
    assert.match(ip("-n", NS, "route", "show", "default"), /default via 10\.215\.0\.1 dev eth0/);
    assert.match(ip("-n", NS, "link", "show", "lo"), /UP/);
    assert.equal(readFileSync(`/etc/netns/${NS}/resolv.conf`, "utf8"), "nameserver 10.215.0.53\n");

    const dhcp = bringUp({ net: "dhcp" });
    assert.equal(dhcp.services[0]?.name, "dhcp");
    assert.deepEqual(dhcp.services[0]?.command.slice(0, 4), ["udhcpc", "-f", "-i", "eth0"]);

    const none = bringUp({ net: "static", ip: "10.215.0.6/24", iface: "eth9" });
    assert.match(none.notes.join("\n"), /cannot bring eth9 up/);
  });

  it("applies changed settings while the node runs: a new address and gateway; then DHCP in place of the static address, and back", () => {
    const first = { net: "static", ip: "10.215.0.5/24", gateway: "10.215.0.1" };
    bringUp(first);
    // A second address of the operator's own on another link stays: only eth0 is the node's.
    ip("-n", NS, "link", "add", "keep0", "type", "veth", "peer", "name", "keep1");
    ip("-n", NS, "addr", "add", "192.0.2.9/24", "dev", "keep0");
    // A VM's tap sorts before eth0, and is Ethernet too: never taken for the node's own.
    ip("-n", NS, "tuntap", "add", "aaa0", "mode", "tap");
    const second = {
      net: "static",
      ip: "10.215.0.7/24",
      gateway: "10.215.0.2",
      dns: ["10.215.0.54"],
    };
    const moved = reapply(first, second, []);
    assert.deepEqual(moved.calls, []);
    const addrs = ip("-n", NS, "-4", "addr", "show", "eth0");
    assert.match(addrs, /inet 10\.215\.0\.7\/24/);
    assert.doesNotMatch(addrs, /10\.215\.0\.5/);
    // linkdown: the veth's other end is not up, which changes nothing here.
    assert.match(ip("-n", NS, "route", "show", "default"), /^default via 10\.215\.0\.2 dev eth0\b/);
    assert.equal(readFileSync(`/etc/netns/${NS}/resolv.conf`, "utf8"), "nameserver 10.215.0.54\n");
    assert.match(ip("-n", NS, "-4", "addr", "show", "keep0"), /192\.0\.2\.9/);

    // A new gateway and name servers alone: the address stays, with whatever else is on the
    // interface (a flush would take this one too), and no service is touched.
    ip("-n", NS, "addr", "add", "10.215.0.77/24", "dev", "eth0");
    const third = { ...second, gateway: "10.215.0.3", dns: ["10.215.0.55"] };
    const rerouted = reapply(second, third, [], "eth0");
    assert.deepEqual(rerouted.calls, []);
    const kept = ip("-n", NS, "-4", "addr", "show", "eth0");
    assert.match(kept, /inet 10\.215\.0\.7\/24/);
    assert.match(kept, /inet 10\.215\.0\.77\/24/);
    assert.match(ip("-n", NS, "route", "show", "default"), /^default via 10\.215\.0\.3 dev eth0\b/);
    assert.equal(readFileSync(`/etc/netns/${NS}/resolv.conf`, "utf8"), "nameserver 10.215.0.55\n");

    const dhcp = reapply(third, { net: "dhcp" }, []);
    assert.equal(dhcp.calls.length, 1);
    assert.match(dhcp.calls[0] ?? "", /^add dhcp: udhcpc -f -i eth0 /);
    assert.doesNotMatch(ip("-n", NS, "-4", "addr", "show", "eth0"), /inet /);
    assert.equal(ip("-n", NS, "route", "show", "default").trim(), "");

    // Back to static: the DHCP client goes first, its lease with it.
    ip("-n", NS, "addr", "add", "10.215.0.99/24", "dev", "eth0");
    // Told which interface is the node's, as the supervisor does.
    const back = reapply({ net: "dhcp" }, first, ["dhcp"], "eth0");
    assert.deepEqual(back.calls, ["remove dhcp"]);
    const now = ip("-n", NS, "-4", "addr", "show", "eth0");
    assert.match(now, /inet 10\.215\.0\.5\/24/);
    assert.doesNotMatch(now, /10\.215\.0\.99/);
  });
});

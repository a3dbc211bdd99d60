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
    import { bringUpNetwork } from ${JSON.stringify(join(repo, "dist/src/os/system.js"))};
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
});

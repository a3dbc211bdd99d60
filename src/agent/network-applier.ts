import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import type { AppNetPlan, Replies } from "./app-network.js";
import { natRuleset, nftRuleset, VXLAN_PORT } from "./app-network.js";
import { APP_MTU } from "./net-names.js";

/**
 * Makes this node's links, VXLAN forwarding entries and nftables rules what the network
 * plans say, with `ip`, `bridge` and `nft`. Idempotent: it reads what is there and changes
 * only the difference, and removes the fg* links of applications no longer here. One apply
 * at a time; a plan that comes during one is applied right after it.
 */

export class NetworkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NetworkError";
  }
}

type Run = (cmd: string, args: string[], input?: string) => Promise<string>;

const run: Run = (cmd, args, input) =>
  new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: "utf8" }, (err, out, errOut) => {
      if (err)
        reject(new NetworkError(`${cmd} ${args.join(" ")}: ${(errOut || err.message).trim()}`));
      else resolve(out);
    });
    if (input !== undefined) child.stdin?.end(input);
  });

interface Link {
  ifname: string;
  master?: string;
  operstate?: string;
  mtu?: number;
  linkinfo?: { info_kind?: string; info_data?: { id?: number } };
}

interface FdbEntry {
  mac: string;
  dst?: string;
  flags?: string[];
}

const ZERO_MAC = "00:00:00:00:00:00";
/** Exactly the names the agent gives (net-names.ts): any other link is not ours to touch. */
const OURS = /^(fgb\d+|fgx\d+|fgt\d+i\d+)$/;
/** The same plans are applied again this often, to repair what someone changed by hand. */
const REAPPLY_MS = 30_000;

export class NetworkApplier {
  private running: Promise<void> | null = null;
  private pending: { plans: AppNetPlan[]; key: string } | null = null;
  private lastRules = "";
  /** The links of the last successful apply: a tap is ready once it is here. */
  private applied = new Set<string>();
  lastError: string | null = null;
  private routing = false;
  /** How the rules let replies through: found out at the first apply with rules (rules()). */
  replies: Replies | null = null;

  constructor(
    private readonly self: string,
    private readonly log: (level: "info" | "warn" | "error", msg: string) => void,
    private readonly exec: Run = run,
  ) {}

  /** Whether the tap exists, in its bridge, as of the last apply. */
  ready(tap: string): boolean {
    return this.applied.has(tap);
  }

  private appliedKey = "";
  private appliedAt = 0;

  /**
   * Applies `plans` (now, or right after the apply under way); resolves when applied. The
   * same plans as the last successful apply are skipped for a while: every apply runs
   * `ip` and `bridge`, which an emulated node feels at every tick.
   */
  apply(plans: AppNetPlan[]): Promise<void> {
    const key = JSON.stringify(plans);
    if (!this.running && key === this.appliedKey && Date.now() - this.appliedAt < REAPPLY_MS)
      return Promise.resolve();
    this.pending = { plans, key };
    if (this.running) return this.running;
    this.running = (async () => {
      while (this.pending) {
        const next = this.pending;
        this.pending = null;
        try {
          await this.applyNow(next.plans);
          this.lastError = null;
          this.appliedKey = next.key;
          this.appliedAt = Date.now();
        } catch (err) {
          const msg = (err as Error).message;
          if (msg !== this.lastError) this.log("error", `network: ${msg}`);
          this.lastError = msg;
        }
      }
    })().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async links(): Promise<Map<string, Link>> {
    const list = JSON.parse(await this.exec("ip", ["-j", "-d", "link", "show"])) as Link[];
    return new Map(list.map((l) => [l.ifname, l]));
  }

  private async applyNow(plans: AppNetPlan[]): Promise<void> {
    let links = await this.links();
    const ip = (...args: string[]) => this.exec("ip", args);
    for (const p of plans) {
      if (!links.has(p.bridge)) {
        await ip("link", "add", p.bridge, "type", "bridge");
        this.log("info", `network: ${p.app}: bridge ${p.bridge}`);
      }
      const vx = links.get(p.vxlan);
      if (vx && vx.linkinfo?.info_data?.id !== p.vni) {
        await ip("link", "del", p.vxlan);
        links.delete(p.vxlan);
      }
      if (!links.has(p.vxlan)) {
        // nolearning: where a MAC is comes from etcd, not from traffic (a moved instance
        // would otherwise be looked for on its old node until the entry aged out).
        await ip(
          "link",
          "add",
          p.vxlan,
          "type",
          "vxlan",
          "id",
          String(p.vni),
          "local",
          this.self,
          "dstport",
          String(VXLAN_PORT),
          "nolearning",
        );
        this.log("info", `network: ${p.app}: VXLAN ${p.vxlan} (VNI ${p.vni}) from ${this.self}`);
      }
      for (const tap of p.taps)
        if (!links.has(tap)) await ip("tuntap", "add", "name", tap, "mode", "tap");
    }
    links = await this.links();
    for (const p of plans) {
      for (const name of [p.vxlan, ...p.taps]) {
        const l = links.get(name);
        if (l?.master !== p.bridge || l.mtu !== APP_MTU || l.operstate === "DOWN")
          await ip("link", "set", name, "mtu", String(APP_MTU), "master", p.bridge, "up");
      }
      const br = links.get(p.bridge);
      if (br?.operstate === "DOWN" || br?.mtu !== APP_MTU)
        await ip("link", "set", p.bridge, "mtu", String(APP_MTU), "up");
      await this.fdb(p);
    }
    // What is no longer here: the links of applications gone and of instances moved away.
    const wanted = new Set(plans.flatMap((p) => [p.bridge, p.vxlan, ...p.taps]));
    const stale = [...links.keys()].filter((n) => OURS.test(n) && !wanted.has(n));
    // Ports before their bridges, so that a bridge goes empty.
    stale.sort((a, b) => Number(a.startsWith("fgb")) - Number(b.startsWith("fgb")));
    for (const name of stale) {
      await ip("link", "del", name).catch(() => {});
      this.log("info", `network: removed ${name}`);
    }
    await this.gateways(plans);
    if (plans.length === 0 && this.lastRules === "") {
      // Nothing here, maybe ever: drop a table a previous run left, without needing nft.
      await this.exec("nft", ["delete", "table", "bridge", "flatgrid"]).catch(() => {});
      await this.exec("nft", ["delete", "table", "ip", "flatgrid"]).catch(() => {});
    } else await this.rules(plans);
    this.applied = wanted;
  }

  /**
   * Replaces both tables in one transaction. The first time, it finds out whether the kernel
   * tracks bridged connections: a ruleset with `ct` in the bridge table that nft refuses
   * while the same one with replies by port goes through means it does not (no
   * nf_conntrack_bridge, as on kernels before 5.3 or built without it).
   */
  private async rules(plans: readonly AppNetPlan[]): Promise<void> {
    const text = (replies: Replies) => nftRuleset(plans, replies) + natRuleset(this.self, plans);
    if (this.replies) {
      const rules = text(this.replies);
      if (rules !== this.lastRules) await this.exec("nft", ["-f", "-"], rules);
      this.lastRules = rules;
      return;
    }
    // Loaded by hand: not every kernel loads it when a bridge rule first asks for `ct`.
    await this.exec("modprobe", ["-q", "nf_conntrack_bridge"]).catch(() => {});
    try {
      await this.exec("nft", ["-f", "-"], text("conntrack"));
      this.replies = "conntrack";
      this.log("info", "network: replies pass by connection tracking (nf_conntrack_bridge)");
      this.lastRules = text("conntrack");
    } catch (err) {
      await this.exec("nft", ["-f", "-"], text("port"));
      this.replies = "port";
      this.lastRules = text("port");
      this.log(
        "warn",
        `network: this kernel tracks no bridged connections (${(err as Error).message.split("\n")[0]}): replies pass by port, so a server could open connections from its terminal's port`,
      );
    }
  }

  /**
   * The node's address on the networks where it publishes a terminal, and routing, which
   * DNAT needs (the forward chain of table ip flatgrid lets through only that).
   */
  private async gateways(plans: readonly AppNetPlan[]): Promise<void> {
    for (const p of plans) {
      const addrs = JSON.parse(await this.exec("ip", ["-j", "addr", "show", "dev", p.bridge])) as {
        addr_info?: { family: string; local: string; prefixlen: number }[];
      }[];
      const have = (addrs[0]?.addr_info ?? [])
        .filter((a) => a.family === "inet")
        .map((a) => `${a.local}/${a.prefixlen}`);
      for (const a of have)
        if (a !== p.gateway) await this.exec("ip", ["addr", "del", a, "dev", p.bridge]);
      if (p.gateway && !have.includes(p.gateway))
        await this.exec("ip", ["addr", "add", p.gateway, "dev", p.bridge]);
    }
    if (plans.some((p) => p.gateway) && !this.routing) {
      writeFileSync("/proc/sys/net/ipv4/ip_forward", "1\n");
      this.routing = true;
    }
  }

  /** The VXLAN port's forwarding entries: a flood entry per remote node, one per remote MAC. */
  private async fdb(p: AppNetPlan): Promise<void> {
    const bridge = (...args: string[]) => this.exec("bridge", args);
    const now = (
      JSON.parse(await bridge("-j", "fdb", "show", "dev", p.vxlan)) as FdbEntry[]
    ).filter((e) => e.dst && (e.flags ?? []).includes("self"));
    const want = [
      ...p.remoteNodes.map((node) => ({ mac: ZERO_MAC, dst: node })),
      ...p.remoteMacs.map((m) => ({ mac: m.mac, dst: m.node })),
    ];
    const key = (e: { mac: string; dst?: string }) => `${e.mac}@${e.dst}`;
    const have = new Set(now.map(key));
    const wantKeys = new Set(want.map(key));
    for (const e of now)
      if (!wantKeys.has(key(e)))
        await bridge("fdb", "del", e.mac, "dev", p.vxlan, "dst", e.dst as string);
    for (const e of want) {
      if (have.has(key(e))) continue;
      // The flood entries are a list (append); a MAC has one place (replace).
      await bridge(
        "fdb",
        e.mac === ZERO_MAC ? "append" : "replace",
        e.mac,
        "dev",
        p.vxlan,
        "dst",
        e.dst,
      );
    }
  }
}

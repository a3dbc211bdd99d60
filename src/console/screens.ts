import { duration, logLine, table } from "../cli/format.js";
import type { AppSummary, NodeRecord } from "../grid/index.js";
import { formatMiB } from "../model/index.js";
import type { LogEntry, ServiceStatus } from "../os/index.js";
import type { Snapshot } from "./snapshot.js";

/**
 * The console's screens as lines of text with blessed colour tags. Pure: a snapshot in,
 * lines out, so that what an operator sees is tested without a terminal. Only the 8 basic
 * colours and bold: the Linux VT has 16 colours and VT fonts, a serial line may have less.
 */

/** Text from outside (names, log lines) must not be read as tags. */
export function esc(text: string): string {
  return text.replace(/[{}]/g, (c) => (c === "{" ? "{open}" : "{close}"));
}

const paint = (colour: string, text: string) => `{${colour}-fg}${text}{/${colour}-fg}`;
const bold = (text: string) => `{bold}${text}{/bold}`;
const ok = (text: string) => paint("green", text);
const warn = (text: string) => paint("yellow", text);
const bad = (text: string) => paint("red", text);
type Level = "ok" | "warn" | "bad";
const byLevel = (level: Level | undefined, text: string) =>
  level === "bad" ? bad(text) : level === "warn" ? warn(text) : text;

/** A usage bar of `width` cells, in ASCII (VT fonts have no block characters to rely on). */
export function bar(fraction: number, width: number): string {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const full = Math.round(f * width);
  const cells = "|".repeat(full) + " ".repeat(width - full);
  const colour = f >= 0.9 ? "red" : f >= 0.7 ? "yellow" : "green";
  return `[${paint(colour, cells)}]`;
}

const label = (name: string) => bold(name.padEnd(11));

/** This node's role in words: controller, etcd voter, learner or client. */
export function roleText(s: Snapshot): string {
  const g = s.grid;
  if (g?.phase !== "member") return "-";
  const etcd =
    g.etcdRole === "voter" ? "etcd voter" : g.etcdRole === "learner" ? "etcd learner" : "client";
  return g.term !== null ? `controller, ${etcd}` : etcd;
}

/** One line on where the node stands in its grid, coloured by how well. */
export function gridLine(s: Snapshot): string {
  const g = s.grid;
  if (!g) return bad(`unknown: ${esc(s.errors.grid ?? "the grid service does not answer")}`);
  if (!g.grid) return warn(esc(`none yet: ${g.phase}${g.reason ? `: ${g.reason}` : ""}`));
  const name = `${esc(g.grid.name)} (${g.grid.id.slice(0, 8)})`;
  if (g.phase !== "member") return `${name} ${warn(esc(`${g.phase}: ${g.reason}`))}`;
  if (!g.quorum) return `${name} ${bad("no etcd quorum from here: no controller")}`;
  return name;
}

function self(s: Snapshot): NodeRecord | undefined {
  return s.grid?.nodes.find((n) => n.nodeId === s.grid?.nodeId);
}

function healthText(s: Snapshot): string {
  const me = self(s);
  if (!me) return s.grid?.phase === "member" ? warn("not registered yet") : "-";
  if (me.health === "ok") return ok("ok");
  return warn(esc(`${me.health}: ${me.problems.join("; ")}`));
}

function controllerText(s: Snapshot): string {
  const g = s.grid;
  if (!g?.quorum || g.phase !== "member") return "-";
  if (!g.controller) return warn("none (election in progress)");
  const n = g.nodes.find((x) => x.nodeId === g.controller);
  return esc(`${n?.hostname ?? "?"} (${g.controller.slice(0, 8)})`);
}

const count = (n: number, noun: string) => `${n} ${noun}${n === 1 ? "" : "s"}`;

function gib(mib: number): string {
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${mib} MiB`;
}

function serviceLevel(x: ServiceStatus): Level {
  if (x.state === "running") return "ok";
  return x.state === "failed" ? "bad" : "warn";
}

function serviceText(s: Snapshot): string {
  if (!s.services) return bad(esc(s.errors.supervisor ?? "the supervisor does not answer"));
  if (s.services.length === 0) return "-";
  return s.services
    .map((x) => {
      const level = serviceLevel(x);
      return `${esc(x.name)} ${level === "ok" ? ok(x.state) : byLevel(level, x.state)}`;
    })
    .join("   ");
}

/** A log entry on one line, without the date (the console shows today's lines). */
export function logText(e: LogEntry): string {
  const line = esc(logLine(e).slice(11));
  return byLevel(
    e.level === undefined ? undefined : e.level >= 50 ? "bad" : e.level >= 40 ? "warn" : "ok",
    line,
  );
}

/** A plain table with a bold header and each row in its level's colour. */
function colouredTable(header: string[], rows: string[][], levels: (Level | undefined)[]) {
  return table(header, rows)
    .split("\n")
    .map((l, i) => (i === 0 ? bold(esc(l)) : byLevel(levels[i - 1], esc(l))));
}

export function nodeScreen(s: Snapshot, width: number): string[] {
  const g = s.grid;
  const barWidth = Math.max(10, Math.min(30, width - 50));
  const u = s.usage;
  const links = s.links.length ? s.links : [{ name: "-", state: "", addresses: [] }];
  const lines = [
    `${label("NODE")}${bold(esc(s.hostname))}${g ? `   id ${g.nodeId}` : ""}`,
    `${label("GRID")}${gridLine(s)}`,
    `${label("ROLE")}${roleText(s)}`,
    `${label("HEALTH")}${healthText(s)}`,
    `${label("CONTROLLER")}${controllerText(s)}`,
    ...links.map(
      (l, i) =>
        `${label(i === 0 ? "LINKS" : "")}${esc(l.name.padEnd(10))} ${
          l.state === "up" ? ok("up") : l.state === "down" ? bad("down") : warn(esc(l.state))
        }  ${esc(l.addresses.join(" ") || "no address")}`,
    ),
    `${label("CPU")}${bar((u.cpuPercent ?? 0) / 100, barWidth)} ${
      u.cpuPercent === null ? "  -" : `${Math.round(u.cpuPercent)}`.padStart(3)
    } %  of ${u.cpus} CPU${u.cpus === 1 ? "" : "s"}`,
    `${label("MEMORY")}${bar(u.memUsedMiB / Math.max(1, u.memTotalMiB), barWidth)} ${gib(u.memUsedMiB)} of ${gib(u.memTotalMiB)}`,
    u.disk
      ? `${label("DISK")}${bar(u.disk.usedMiB / Math.max(1, u.disk.totalMiB), barWidth)} ${gib(u.disk.usedMiB)} of ${gib(u.disk.totalMiB)}  ${esc(u.disk.path)}`
      : `${label("DISK")}-`,
    `${label("SERVICES")}${serviceText(s)}`,
    "",
    bold("INSTANCES ON THIS NODE"),
  ];
  const instances = self(s)?.instances ?? [];
  if (instances.length === 0) lines.push("  none");
  else
    lines.push(
      ...colouredTable(
        ["INSTANCE", "STATE", "CPU", "MEMORY", "SINCE"],
        instances.map((i) => [
          `${i.app}/${i.instance}`,
          i.state,
          i.metrics ? `${Math.round(i.metrics.cpuPercent)}%` : "-",
          i.metrics ? `${i.metrics.memoryMiB} of ${formatMiB(i.metrics.memoryLimitMiB)}` : "-",
          duration(s.at - Date.parse(i.since)),
        ]),
        instances.map((i) =>
          i.state === "running" ? undefined : i.state === "failed" ? "bad" : "warn",
        ),
      ).map((l) => `  ${l}`),
    );
  lines.push("", bold("LAST LOG LINES"), ...s.logs.map(logText));
  return lines;
}

/** An application's state from what the agents report, wherever its instances run. */
export function appState(a: AppSummary, nodes: readonly NodeRecord[]) {
  const mine = nodes.flatMap((n) => n.instances ?? []).filter((i) => i.app === a.name);
  const running = mine.filter((i) => i.state === "running").length;
  const failed = mine.filter((i) => i.state === "failed").length;
  const level: Level = running === a.instances ? "ok" : failed > 0 ? "bad" : "warn";
  const text =
    running === a.instances
      ? "running"
      : failed > 0
        ? `${failed} failed`
        : a.placed < a.instances
          ? `${a.instances - a.placed} not placed`
          : "starting";
  return { running, text, level };
}

export function gridScreen(s: Snapshot): string[] {
  const g = s.grid;
  const lines = [`${label("GRID")}${gridLine(s)}`];
  if (g?.phase !== "member" || !g.quorum) {
    lines.push("", "The grid's state cannot be read from this node now: the node screen says why.");
    return lines;
  }
  const ha = s.ha;
  lines.push(
    `${label("CONTROLLER")}${controllerText(s)}`,
    `${label("HA")}${
      ha === null
        ? s.errors.apps
          ? warn(esc(s.errors.apps))
          : "reading..."
        : ha.ok
          ? ok("ok: the grid can lose any one node and run every application")
          : bad("at risk")
    }`,
    ...(ha && !ha.ok ? ha.problems.map((p) => `${" ".repeat(11)}${bad(esc(p))}`) : []),
    `${label("ETCD")}${count(g.voters.length, "voter")}, ${count(g.learners.length, "learner")}`,
    "",
    bold(`NODES (${g.nodes.length})`),
    ...colouredTable(
      [
        "HOSTNAME",
        "ADDRESS",
        "ROLE",
        "HEALTH",
        "CPUS",
        "MEMORY",
        "INSTANCES",
        "VM CPU",
        "VM MEMORY",
      ],
      g.nodes.map((n) => {
        const inv = (n.inventory ?? {}) as { cpus?: number; memoryMiB?: number };
        const etcd = n.etcd === "none" ? "client" : n.etcd;
        // The node's load is what its instances use, as their agents last measured it.
        const metrics = (n.instances ?? []).flatMap((i) => (i.metrics ? [i.metrics] : []));
        const cpu = metrics.reduce((a, m) => a + m.cpuPercent, 0) / Math.max(1, inv.cpus ?? 1);
        const mem = metrics.reduce((a, m) => a + m.memoryMiB, 0);
        return [
          n.hostname,
          n.address,
          n.controller ? `controller, ${etcd}` : etcd,
          n.health,
          String(inv.cpus ?? "-"),
          inv.memoryMiB === undefined ? "-" : gib(inv.memoryMiB),
          String(n.instances?.length ?? 0),
          metrics.length ? `${Math.round(cpu)}%` : "-",
          metrics.length ? gib(mem) : "-",
        ];
      }),
      g.nodes.map((n) => (n.health === "ok" ? undefined : "warn")),
    ),
    "",
    bold(`APPLICATIONS (${s.apps?.length ?? "?"})`),
  );
  if (!s.apps) lines.push(`  ${s.errors.apps ? warn(esc(s.errors.apps)) : "reading..."}`);
  else if (s.apps.length === 0) lines.push("  none: `flatgrid app create -f FILE` adds one");
  else {
    const states = s.apps.map((a) => appState(a, g.nodes));
    lines.push(
      ...colouredTable(
        ["NAME", "STATE", "RUNNING", "NODES", "CPUS", "MEMORY"],
        s.apps.map((a, i) => [
          a.name,
          states[i]?.text ?? "",
          `${states[i]?.running ?? 0}/${a.instances}`,
          String(a.nodes),
          String(a.cpus),
          formatMiB(a.memoryMiB),
        ]),
        states.map((x) => (x.level === "ok" ? undefined : x.level)),
      ),
    );
  }
  return lines;
}

/** A line without its colour tags, as plain text (for `flatgrid console --print`). */
export function plain(line: string): string {
  return line.replace(/\{(\/?[a-z-]*)\}/g, (_m, tag: string) =>
    tag === "open" ? "{" : tag === "close" ? "}" : "",
  );
}

import type { AdminTokenInfo } from "../api/index.js";
import type { HaStatus } from "../controller/index.js";
import type { AppStatus, AppSummary, GridStatus, NodeRecord } from "../grid/index.js";
import { type Application, formatMiB } from "../model/index.js";
import { LEVELS, type LogEntry, type ServiceStatus } from "../os/index.js";

/** Aligned columns; the last column is not padded so that long reasons do not add blanks. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

export function duration(ms: number | null): string {
  if (ms === null) return "-";
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d${h % 24}h`;
}

export function servicesTable(services: ServiceStatus[]): string {
  return table(
    ["SERVICE", "STATE", "PID", "RESTARTS", "UPTIME", "DETAIL"],
    services.map((s) => [
      s.name,
      s.state,
      s.pid === null ? "-" : String(s.pid),
      String(s.restarts),
      duration(s.uptimeMs),
      s.reason ?? (s.enabled ? "" : "disabled"),
    ]),
  );
}

/** One log entry as a line: time, stream or level, message, then structured fields. */
export function logLine(entry: LogEntry): string {
  const time = new Date(entry.time).toISOString().replace("T", " ").slice(0, 23);
  const tag =
    entry.stream === "supervisor"
      ? "supervisor"
      : entry.level !== undefined
        ? (LEVELS[entry.level] ?? String(entry.level))
        : entry.stream;
  const fields = entry.fields
    ? ` ${Object.entries(entry.fields)
        .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
        .join(" ")}`
    : "";
  return `${time} ${tag.padEnd(10)} ${entry.msg}${fields}`;
}

function short(id: string): string {
  return id.slice(0, 8);
}

export function nodesTable(nodes: NodeRecord[]): string {
  return table(
    ["NODE", "HOSTNAME", "ADDRESS", "ETCD", "CONTROLLER", "HEALTH", "CPUS", "MEMORY"],
    nodes.map((n) => {
      const inv = (n.inventory ?? {}) as { cpus?: number; memoryMiB?: number; kvm?: boolean };
      return [
        short(n.nodeId),
        n.hostname,
        n.address,
        n.etcd,
        n.controller ? "yes" : "",
        n.health + (n.problems.length ? ` (${n.problems.join("; ")})` : ""),
        String(inv.cpus ?? "-"),
        inv.memoryMiB === undefined ? "-" : `${Math.round(inv.memoryMiB / 1024)} GiB`,
      ];
    }),
  );
}

/** One line on grid HA, and one more per node whose loss would strand instances. */
export function haText(ha: HaStatus): string[] {
  if (ha.ok) return ["HA          ok: the grid can lose any one node and run every application"];
  return ["HA          at risk:", ...ha.problems.map((p) => `            ${p}`)];
}

/** What `flatgrid grid status` prints. */
export function gridStatusText(s: GridStatus, ha?: HaStatus | null): string {
  const lines = [`node        ${s.nodeId} (${s.hostname}, ${s.address})`];
  if (!s.grid) {
    lines.push(`grid        none: ${s.phase}${s.reason ? `: ${s.reason}` : ""}`);
    return lines.join("\n");
  }
  lines.push(`grid        ${s.grid.name} (${s.grid.id})`);
  lines.push(`CA          sha256 ${s.grid.caFingerprint}`);
  if (!s.quorum) {
    lines.push("controller  none: no etcd quorum reachable from this node");
    lines.push(`            ${s.reason}`);
    return lines.join("\n");
  }
  const ctl = s.nodes.find((n) => n.nodeId === s.controller);
  lines.push(
    `controller  ${s.controller ? `${short(s.controller)}${ctl ? ` (${ctl.hostname})` : ""}` : "none (election in progress)"}`,
  );
  lines.push(
    `this node   etcd ${s.etcdRole}${s.term !== null ? `, controller (term ${s.term})` : ""}`,
  );
  lines.push(`voters      ${s.voters.map(short).join(", ") || "-"}`);
  lines.push(`learners    ${s.learners.map(short).join(", ") || "-"}`);
  lines.push(`nodes       ${s.nodes.length}`);
  if (ha) lines.push(...haText(ha));
  lines.push("");
  lines.push(nodesTable(s.nodes));
  return lines.join("\n");
}

/** What `flatgrid app validate` prints for a valid descriptor. */
export function applicationText(a: Application): string {
  const nodes = a.budget.nodes === null ? "" : `, at most ${a.budget.nodes} nodes`;
  const lines = [
    `${a.name}: valid`,
    `budget      ${a.budget.cpus} CPUs, ${formatMiB(a.budget.memoryMiB)}${nodes}`,
    `needs       ${a.demand.cpus} CPUs, ${formatMiB(a.demand.memoryMiB)}`,
    "",
    table(
      ["INSTANCE", "CLASS", "CPUS", "MEMORY", "PROPERTIES"],
      a.instances.map((i) => [
        i.id,
        i.class,
        String(i.cpus),
        formatMiB(i.memoryMiB),
        Object.entries(i.properties)
          .map(([k, v]) => `${k}=${v}`)
          .join(" "),
      ]),
    ),
    "",
    `links       ${a.links.length}: ${a.links.map((l) => `${l.from.instance}.${l.from.terminal} -> ${l.to.instance}.${l.to.terminal}`).join(", ")}`,
  ];
  for (const e of a.exposures)
    lines.push(`exposed     ${e.component}.${e.terminal} on port ${e.port}/${e.protocol}`);
  return lines.join("\n");
}

export function appsTable(apps: AppSummary[]): string {
  if (apps.length === 0) return "no applications: `flatgrid app create -f FILE` adds one";
  return table(
    ["APP", "INSTANCES", "ASSIGNED", "NODES", "CPUS", "MEMORY", "CREATED", "DESCRIPTION"],
    apps.map((a) => [
      a.name,
      String(a.instances),
      String(a.placed),
      String(a.nodes),
      String(a.cpus),
      formatMiB(a.memoryMiB),
      a.createdAt.slice(0, 19).replace("T", " "),
      a.description,
    ]),
  );
}

export function appStatusText(s: AppStatus): string {
  const a = s.app.spec;
  const rows = s.instances.map((i) => [
    i.id,
    i.class,
    i.state,
    i.hostname ?? (i.node ? i.node.slice(0, 8) : "-"),
    i.address ?? "-",
    String(i.cpus),
    formatMiB(i.memoryMiB),
    i.metrics ? `${i.metrics.cpuPercent}%` : "-",
    i.metrics ? formatMiB(i.metrics.memoryMiB) : "-",
  ]);
  const counts = new Map<string, number>();
  for (const i of s.instances) counts.set(i.state, (counts.get(i.state) ?? 0) + 1);
  const order = [
    "running",
    "booting",
    "starting",
    "preparing",
    "assigned",
    "restarting",
    "fenced",
    "stopping",
    "stopped",
    "failed",
    "pending",
  ];
  const summary = order
    .filter((st) => counts.has(st))
    .map((st) => `${counts.get(st)} ${st}`)
    .join(", ");
  // The instances that are not simply running, and why.
  const notes = s.instances
    .filter((i) => i.state !== "running" && (i.detail || i.state === "pending"))
    .map(
      (i) => `${i.id}: ${i.state}: ${i.detail || "no node fits (`flatgrid app explain` says why)"}`,
    );
  return [
    `${s.app.name}: ${a.description || "(no description)"}`,
    `created     ${s.app.createdAt} from ${s.app.file}`,
    `needs       ${a.demand.cpus} CPUs, ${formatMiB(a.demand.memoryMiB)} of a budget of ${a.budget.cpus} CPUs, ${formatMiB(a.budget.memoryMiB)}`,
    `instances   ${summary}`,
    ...(s.published ?? []).map(
      (x) =>
        `published   ${x.component}.${x.terminal} at ${x.endpoint ?? "(nowhere yet)"}${x.instance ? ` (${x.instance})` : ""}`,
    ),
    "",
    // CPU% and USED: what it uses of what it was given (its control group's count).
    table(
      ["INSTANCE", "CLASS", "STATE", "NODE", "ADDRESS", "CPUS", "MEMORY", "CPU%", "USED"],
      rows,
    ),
    ...(notes.length ? ["", ...notes] : []),
  ].join("\n");
}

export function appExplainText(s: AppStatus): string {
  const lines: string[] = [];
  for (const i of s.instances) {
    const where = i.node
      ? `on ${i.hostname ?? i.node.slice(0, 8)} (${i.node.slice(0, 8)})`
      : "on no node";
    lines.push(`${i.id} (${i.cpus} CPUs, ${formatMiB(i.memoryMiB)}): ${where}`);
    for (const r of i.reasons) lines.push(`  - ${r}`);
  }
  return lines.join("\n");
}

export function tokensTable(tokens: AdminTokenInfo[]): string {
  if (tokens.length === 0) return "no admin tokens: `flatgrid token create NAME` makes one";
  return table(
    ["ID", "NAME", "CREATED", "BY"],
    tokens.map((t) => [t.id, t.name, t.createdAt.slice(0, 19).replace("T", " "), t.createdBy]),
  );
}

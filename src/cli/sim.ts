import { type Command, InvalidArgumentError, Option } from "commander";
import {
  type AccelRequest,
  attachConsole,
  DEFAULT_DIR,
  down,
  findNode,
  kill,
  lanGet,
  lastLines,
  loadState,
  type NodeStatus,
  plural,
  readLog,
  SimError,
  type SimStatus,
  start,
  status,
  up,
} from "../sim/index.js";
import { duration, table } from "./format.js";

/** `flatgrid sim`: the grid simulator's commands. Progress goes to stderr, results to stdout. */

interface SimOptions {
  json?: boolean;
  dir: string;
}

function print(options: SimOptions, json: unknown, text: () => string): void {
  process.stdout.write(options.json ? `${JSON.stringify(json)}\n` : `${text()}\n`);
}

const progress = (line: string) => process.stderr.write(`sim: ${line}\n`);

function wholeNumber(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError("must be a whole number");
  return Number(value);
}

/** MiB, or with a suffix: 1536, 1536M, 2G. */
function mebibytes(value: string): number {
  const m = /^(\d+)([MG]i?B?)?$/i.exec(value);
  if (!m) throw new InvalidArgumentError("must be a size in MiB, or like 2G or 1536M");
  return Number(m[1]) * (m[2]?.[0]?.toUpperCase() === "G" ? 1024 : 1);
}

function simCommand(parent: Command, name: string, description: string): Command {
  return parent
    .command(name)
    .description(description)
    .option("--json", "print JSON for scripts")
    .addOption(
      new Option("--dir <path>", "the simulator's state directory")
        .env("FLATGRID_SIM_DIR")
        .default(DEFAULT_DIR),
    );
}

function gridSummary(n: NodeStatus): string {
  if (!n.running) return "";
  if (n.gridError) return n.gridError;
  const g = n.grid;
  if (!g) return n.ready ? "" : "-";
  if (!g.grid) return `${g.phase}${g.reason ? `: ${g.reason}` : ""}`;
  if (!g.quorum) return `grid ${g.grid.name}: no etcd quorum reachable`;
  const ctl = g.nodes.find((r) => r.nodeId === g.controller);
  return [
    `grid ${g.grid.name} (${g.grid.id.slice(0, 8)})`,
    plural(g.nodes.length, "node"),
    `controller ${ctl ? ctl.hostname : (g.controller?.slice(0, 8) ?? "none")}`,
    `etcd ${g.etcdRole}`,
  ].join(", ");
}

function nodeState(n: NodeStatus): string {
  if (n.running) return n.vm && n.vm !== "running" ? n.vm : "running";
  return n.killedAt ? "killed" : "dead";
}

export function simStatusText(s: SimStatus, withGrid: boolean): string {
  const age = duration(Date.now() - Date.parse(s.createdAt));
  const lines = [
    `simulator  ${s.dir}, up ${age}: namespace ${s.namespace}${s.namespaceExists ? "" : " (GONE)"}, bridge ${s.bridgeAddress}`,
    `accel      ${s.accel.accel} -cpu ${s.accel.cpu}`,
    `grid       ${s.grid}, token in ${s.tokenFile}`,
    `boot       ${s.firmware === "uefi" ? "UEFI (OVMF)" : "BIOS (SeaBIOS)"}, ${
      s.netboot
        ? `over the network: dnsmasq pid ${s.netboot.pid} ${s.netboot.running ? "serves DHCP and TFTP" : "IS NOT RUNNING"} (log ${s.netboot.log})`
        : s.boot === "iso"
          ? "from flatgrid.iso as a CD"
          : "kernel and initrd loaded by QEMU"
    }`,
    "",
  ];
  const header = ["NODE", "STATE", "PID", "ADDRESS", "BOOT", "UPTIME"];
  if (withGrid) header.push("GRID (flatgrid grid status on the node)");
  const rows = s.nodes.map((n) => {
    const row = [
      n.name,
      nodeState(n),
      n.pid === null ? "-" : String(n.pid),
      n.address,
      n.running ? (n.ready ? "ready" : (n.boot ?? "firmware")) : "-",
      n.running ? duration(Date.now() - Date.parse(n.startedAt)) : "-",
    ];
    if (withGrid) row.push(gridSummary(n));
    return row;
  });
  lines.push(table(header, rows));
  const killed = s.nodes.filter((n) => !n.running && n.killedAt);
  for (const n of killed)
    lines.push(
      `${n.name}: killed (kill -9) at ${n.killedAt}; \`flatgrid sim start ${n.index}\` boots it again`,
    );
  return lines.join("\n");
}

export function addSimCommands(program: Command): void {
  const sim = program
    .command("sim")
    .description(
      "the grid simulator: QEMU servers booted from the node image on a bridge in a private network namespace",
    );

  simCommand(sim, "up", "boot N simulated servers from build/image and wait for their ready lines")
    .option("--nodes <count>", "how many servers", wholeNumber, 3)
    .addOption(
      new Option(
        "--boot <how>",
        "kernel: QEMU loads vmlinuz and initrd.img (fastest); pxe: each server boots over the network from dnsmasq (DHCP, TFTP, iPXE) in the namespace; iso: from flatgrid.iso as a CD, its grid in node.conf on its disk",
      )
        .choices(["kernel", "pxe", "iso"])
        .default("kernel"),
    )
    .addOption(
      new Option("--firmware <firmware>", "bios: SeaBIOS; uefi: OVMF")
        .choices(["bios", "uefi"])
        .default("bios"),
    )
    .option("--memory <size>", "memory of each server, MiB or like 2G", mebibytes, 2048)
    .option("--cpus <count>", "vCPUs of each server", wholeNumber, 1)
    .option(
      "--grid <name>",
      "the grid name every node gets (kernel line, boot.ipxe or node.conf)",
      "sim",
    )
    .option("--token <token>", "join token (default: a random one, kept in the state directory)")
    .addOption(
      new Option("--accel <accel>", "auto: KVM where it boots stock kernels, else TCG")
        .choices(["auto", "kvm", "tcg"])
        .default("auto"),
    )
    .addOption(
      new Option(
        "--image <dir>",
        "directory with vmlinuz and initrd.img (default: build/image)",
      ).env("FLATGRID_SIM_IMAGE"),
    )
    .option(
      "--catalog <dir>",
      "an appliance catalog (build/catalog) on a read-only disk for every node's agent",
    )
    .option("--timeout <seconds>", "how long to wait for the ready lines", wholeNumber, 600)
    .action(
      async (
        o: SimOptions & {
          catalog?: string;
          nodes: number;
          boot: string;
          firmware: string;
          memory: number;
          cpus: number;
          grid: string;
          token?: string;
          accel: AccelRequest;
          image?: string;
          timeout: number;
        },
      ) => {
        const result = await up({
          nodes: o.nodes,
          dir: o.dir,
          boot: o.boot,
          firmware: o.firmware,
          memoryMiB: o.memory,
          cpus: o.cpus,
          grid: o.grid,
          token: o.token,
          accel: o.accel,
          image: o.image,
          catalog: o.catalog,
          timeoutMs: o.timeout * 1000,
          progress,
        });
        const { state } = result;
        print(
          o,
          {
            dir: state.dir,
            namespace: state.namespace,
            accel: state.accel,
            grid: state.grid,
            boot: state.boot,
            firmware: state.firmware,
            seconds: result.seconds,
            nodes: state.nodes.map((n, i) => ({
              name: n.name,
              address: n.address,
              pid: n.pid,
              ready: result.ready[i]?.line ?? null,
              seconds: result.ready[i]?.seconds ?? null,
            })),
          },
          () =>
            [
              ...result.ready.map((r) => `${r.node}  ${r.line}`),
              `${plural(state.nodes.length, "node")} ready in ${Math.round(result.seconds)} s (${state.accel.accel}), grid "${state.grid}", namespace ${state.namespace}`,
              "next: flatgrid sim status | sim console NODE | sim kill NODE | sim down",
            ].join("\n"),
        );
      },
    );

  simCommand(sim, "status", "the servers: state, pid, address, boot, and each node's grid status")
    .option("--no-grid", "do not ask the nodes (through their debug shells) for their grid status")
    .action(async (o: SimOptions & { grid: boolean }) => {
      const s = await status({ dir: o.dir, grid: o.grid });
      print(o, s, () => simStatusText(s, o.grid));
    });

  simCommand(sim, "console", "attach to a server's serial console (Ctrl-] leaves)")
    .argument("<node>", "node number or name: 2 or node-2")
    .option(
      "-n, --lines <count>",
      "print the console log's last lines instead of attaching",
      wholeNumber,
    )
    .option(
      "--screen",
      "attach to the server's screen instead: flatgrid's full-screen console, on its ttyS2",
    )
    .action(async (which: string, o: SimOptions & { lines?: number; screen?: boolean }) => {
      const node = findNode(loadState(o.dir), which);
      if (o.screen) {
        if (!node.qemu.screenSocket)
          throw new SimError(
            `${node.name} was started by an older flatgrid without a screen port: sim down, then sim up`,
            "bad-option",
          );
        process.stderr.write(`sim: attached to ${node.name}'s screen; Ctrl-] leaves\n`);
        await attachConsole(node.qemu.screenSocket, {
          // Ctrl-L: the console draws the whole screen, and asks this terminal for its size.
          greeting: "\x0c",
          // Out of the alternate screen, the cursor back, colours reset.
          farewell: "\x1b[?1049l\x1b[?25h\x1b[0m",
        });
        process.stderr.write("\nsim: detached\n");
        return;
      }
      if (o.lines !== undefined || o.json) {
        const lines = lastLines(readLog(node.qemu.consoleLog), o.lines ?? 100);
        print(o, { node: node.name, lines }, () => lines.join("\n"));
        return;
      }
      process.stderr.write(`sim: attached to ${node.name}'s console; Ctrl-] leaves\n`);
      await attachConsole(node.qemu.consoleSocket);
      process.stderr.write("\nsim: detached\n");
    });

  simCommand(sim, "kill", "kill -9 a server's QEMU: the server loses power")
    .argument("<node>", "node number or name: 2 or node-2")
    .action((which: string, o: SimOptions) => {
      const node = kill(which, o.dir);
      print(
        o,
        { node: node.name, pid: node.pid, killedAt: node.killedAt },
        () => `${node.name}: QEMU pid ${node.pid} killed (kill -9)`,
      );
    });

  simCommand(
    sim,
    "get",
    "an HTTP GET from the servers' LAN (the simulator's namespace), e.g. of a published terminal",
  )
    .argument("<url>", "like http://10.215.0.2/")
    .action(async (url: string, o: SimOptions) => {
      const r = await lanGet(loadState(o.dir).namespace, url);
      print(o, r, () => (r.error ? `error: ${r.error}` : r.body.trimEnd()));
      if (r.error || (r.status ?? 500) >= 400) process.exitCode = 1;
    });

  simCommand(
    sim,
    "start",
    "power a stopped server on again (same disk and address) and wait for it",
  )
    .argument("<node>", "node number or name: 2 or node-2")
    .option("--timeout <seconds>", "how long to wait for the ready line", wholeNumber, 600)
    .action(async (which: string, o: SimOptions & { timeout: number }) => {
      const ready = await start(which, { dir: o.dir, timeoutMs: o.timeout * 1000, progress });
      print(o, ready, () => `${ready.node}  ${ready.line}`);
    });

  simCommand(sim, "down", "stop every server, remove the namespace and the state directory").action(
    (o: SimOptions) => {
      const r = down({ dir: o.dir, progress });
      print(o, r, () =>
        r.namespace
          ? `simulator in ${r.dir} stopped: ${r.killed.length} QEMU${r.killed.length === 1 ? "" : "s"} killed, namespace ${r.namespace} removed`
          : `no simulator in ${r.dir}: nothing to stop`,
      );
    },
  );
}

import { readFileSync } from "node:fs";
import { Argument, Command, CommanderError, InvalidArgumentError, Option } from "commander";
import type { AdminTokenInfo } from "../api/index.js";
import type { AppRecord, HaStatus } from "../controller/index.js";
import type { AppStatus, AppSummary, GridStatus } from "../grid/index.js";
import {
  DEFAULT_CATALOG,
  DescriptorError,
  formatProblem,
  parseApplication,
  readCatalog,
} from "../model/index.js";
import {
  ControlClient,
  ControlError,
  type DataPartitionStatus,
  formatBytes,
  type NodeConfig,
  runDemo,
  type ServiceStatus,
  socketPath,
  VERSION,
} from "../os/index.js";
import { SimError } from "../sim/index.js";
import {
  appExplainText,
  applicationText,
  appStatusText,
  appsTable,
  gridStatusText,
  logLine,
  nodesTable,
  servicesTable,
  tokensTable,
} from "./format.js";
import { addKernelCommand } from "./kernel-command.js";
import { addSimCommands } from "./sim.js";
import { addVmmCommand } from "./vmm-command.js";

/**
 * The flatgrid command. Exit codes: 0 ok, 1 failure, 2 usage. With --json every command
 * prints one JSON document (or NDJSON for logs) on stdout, errors included.
 */

class Failure extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

interface CommonOptions {
  json?: boolean;
  socket?: string;
}

/** Commands of the grid API: this node's grid socket, or any node's HTTPS API. */
type GridOptions = CommonOptions & {
  gridSocket?: string;
  api?: string;
  token?: string;
  ca?: string;
};

function print(options: CommonOptions, json: unknown, text: () => string): void {
  process.stdout.write(options.json ? `${JSON.stringify(json)}\n` : `${text()}\n`);
}

function client(options: CommonOptions): ControlClient {
  return new ControlClient(options.socket ?? socketPath());
}

function wholeNumber(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) {
    throw new InvalidArgumentError("must be a whole number");
  }
  return n;
}

/** --json and --socket on every command that talks to the supervisor. */
function common(command: Command, socket = true): Command {
  command.option("--json", "print JSON for scripts");
  if (socket) {
    command.addOption(
      new Option("--socket <path>", "supervisor control socket")
        .env("FLATGRID_SOCKET")
        .default(socketPath({})),
    );
  }
  return command;
}

export function buildProgram(): Command {
  const program = new Command("flatgrid")
    .description("flatgrid: one flat grid of microVMs over a rack of commodity servers")
    .showHelpAfterError("(run with --help for usage)")
    .configureHelp({ sortSubcommands: false })
    .exitOverride();

  common(program.command("version").description("print the flatgrid version"), false).action(
    (options: CommonOptions) => {
      print(
        options,
        { version: VERSION, node: process.version },
        () => `flatgrid ${VERSION} (node ${process.version})`,
      );
    },
  );

  common(
    program
      .command("services")
      .description("list the node's services: state, pid, restarts, uptime"),
  ).action(async (options: CommonOptions) => {
    const { services } = await client(options).get<{ services: ServiceStatus[] }>("/v1/services");
    print(options, { services }, () => servicesTable(services));
  });

  const service = program.command("service").description("act on one service of this node");
  for (const action of ["start", "stop", "restart"] as const) {
    common(
      service
        .command(action)
        .argument("<name>", "service name (see `flatgrid services`)")
        .description(`${action} a service`),
    ).action(async (name: string, options: CommonOptions) => {
      const reply = await client(options).post<{ service: ServiceStatus }>(
        `/v1/services/${encodeURIComponent(name)}/${action}`,
      );
      print(options, reply, () => `${name}: ${reply.service.state}`);
    });
  }

  common(
    program
      .command("logs")
      .argument("<service>", 'service name, or "supervisor" for the supervisor\'s own log')
      .description("show a service's log (kept in memory, across restarts of the service)")
      .option("-f, --follow", "keep printing new lines until interrupted")
      .option("-n, --lines <count>", "how many of the last lines to show", wholeNumber, 100),
  ).action(async (name: string, options: CommonOptions & { follow?: boolean; lines: number }) => {
    const abort = new AbortController();
    const stop = () => abort.abort();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    await client(options).logs(
      name,
      { lines: options.lines, follow: options.follow === true, signal: abort.signal },
      (entry) => process.stdout.write(`${options.json ? JSON.stringify(entry) : logLine(entry)}\n`),
    );
  });

  common(
    program.command("config").description("show the node configuration and any errors in it"),
  ).action(async (options: CommonOptions) => {
    const node = await client(options).get<{
      bootMode: string;
      config: NodeConfig;
      configErrors: { text: string }[];
    }>("/v1/node");
    print(options, node, () => {
      const lines = Object.entries(node.config).map(
        ([k, v]) =>
          `flatgrid.${k} = ${Array.isArray(v) ? v.join(",") : v === null ? "(unset)" : String(v)}`,
      );
      const errors = node.configErrors.length
        ? ["", "errors:", ...node.configErrors.map((e) => `  ${e.text}`)]
        : [];
      return [`boot mode: ${node.bootMode}`, ...lines, ...errors].join("\n");
    });
    if (node.configErrors.length) process.exitCode = 1;
  });

  const config = program.commands.find((c) => c.name() === "config") as Command;
  // --json and --socket are config's own: commander gives them to it wherever they appear.
  config
    .command("set")
    .description(
      "change this node's settings (as the console's setup form does), stored in node.conf on the data partition; the network ones apply at once",
    )
    .argument("<key=value...>", `flatgrid.net=static flatgrid.ip=10.0.0.5/24 ...; KEY= removes one`)
    .addOption(
      new Option(
        "--password <text>",
        "the console password, or an admin token of the grid (needed once a password is set)",
      ).env("FLATGRID_CONSOLE_PASSWORD"),
    )
    .option("--new-password <text>", "set a new console password (a first one is required)")
    .action(async (pairs: string[], own: { password?: string; newPassword?: string }) => {
      const options = { ...(config.opts() as CommonOptions), ...own };
      const settings: Record<string, string> = {};
      for (const pair of pairs) {
        const at = pair.indexOf("=");
        if (at <= 0) throw new Failure(`"${pair}" is not KEY=VALUE`, "usage");
        const key = pair.slice(0, at).trim();
        settings[key.startsWith("flatgrid.") ? key : `flatgrid.${key}`] = pair.slice(at + 1);
      }
      let reply: { file: string; changed: string[]; restarted: string[]; notes: string[] };
      try {
        reply = await client(options).put("/v1/node/settings", {
          settings,
          ...(options.password !== undefined ? { currentPassword: options.password } : {}),
          ...(options.newPassword !== undefined ? { consolePassword: options.newPassword } : {}),
        });
      } catch (err) {
        if (!(err instanceof ControlError) || err.problems.length === 0) throw err;
        print(options, { stored: false, problems: err.problems }, () =>
          ["nothing stored:", ...err.problems.map((p) => `  ${p.key}: ${p.message}`)].join("\n"),
        );
        process.exitCode = 1;
        return;
      }
      print(options, { stored: true, ...reply }, () =>
        [
          `stored in ${reply.file}: ${reply.changed.length ? reply.changed.join(", ") : "nothing changed"}`,
          ...reply.notes,
          ...(reply.restarted.length ? [`restarted: ${reply.restarted.join(", ")}`] : []),
        ].join("\n"),
      );
    });

  common(
    program
      .command("disks")
      .description("the data partition, and what the node found on each local disk"),
  ).action(async (options: CommonOptions) => {
    const node = await client(options).get<{ bootMode: string; data: DataPartitionStatus | null }>(
      "/v1/node",
    );
    const data = node.data;
    print(options, { data }, () => {
      if (!data) return `boot mode ${node.bootMode}: disks are not the node's to manage`;
      const size = formatBytes;
      const head =
        data.state === "mounted"
          ? `data partition  ${data.device} at ${data.mountpoint}, ${size(data.sizeBytes ?? 0)}${data.formatted ? ", formatted at this boot" : ""}`
          : `data partition  none: ${data.reason}`;
      const rows = data.disks.map(
        (d) => `${d.device.padEnd(12)}  ${size(d.sizeBytes).padStart(9)}  ${d.verdict}`,
      );
      return [head, "", `${"DEVICE".padEnd(12)}  ${"SIZE".padStart(9)}  FOUND`, ...rows].join("\n");
    });
    if (data && data.state !== "mounted") process.exitCode = 1;
  });

  for (const action of ["poweroff", "reboot"] as const) {
    common(
      program
        .command(action)
        .description(
          action === "poweroff"
            ? "stop every service in order and power the node off"
            : "stop every service in order and reboot the node",
        ),
    ).action(async (options: CommonOptions) => {
      await client(options).post(`/v1/power/${action}`);
      print(options, { action }, () => `${action}: requested`);
    });
  }
  const gridSocketOption = () =>
    new Option("--grid-socket <path>", "the grid service's socket (default: beside --socket)").env(
      "FLATGRID_GRID_SOCKET",
    );
  /**
   * The grid API: with --api, any node's HTTPS API with an admin token; else this node's
   * grid service, on the socket beside the supervisor's.
   */
  const gridApi = async (options: GridOptions) => {
    if (options.api) {
      if (!options.token)
        throw new Failure(
          "--api needs an admin token: --token TOKEN or FLATGRID_TOKEN (`flatgrid token create NAME` on a node makes one)",
          "usage",
        );
      if (!options.ca)
        throw new Failure(
          "--api needs the grid CA certificate to trust: --ca FILE or FLATGRID_CA (`flatgrid grid ca` on a node prints it)",
          "usage",
        );
      let caPem: string;
      try {
        caPem = readFileSync(options.ca, "utf8");
      } catch (err) {
        throw new Failure(`cannot read --ca ${options.ca}: ${(err as Error).message}`, "no-file");
      }
      if (!caPem.includes("-----BEGIN CERTIFICATE-----"))
        throw new Failure(`--ca ${options.ca}: not a PEM certificate`, "usage");
      const { HttpsApiClient } = await import("../api/index.js");
      const api = new HttpsApiClient({ url: options.api, token: options.token, caPem });
      return {
        call: <T>(method: "GET" | "POST" | "DELETE", path: string, body?: unknown) =>
          api.call<T>(method, path, body),
        stream: (path: string) => api.stream(path),
      };
    }
    // Loaded only here: the grid module brings etcd and TLS code no other command needs.
    const { callGrid, gridSocketPath, streamGrid } = await import("../grid/index.js");
    const socket =
      options.gridSocket ?? gridSocketPath({ FLATGRID_SOCKET: options.socket ?? socketPath() });
    return {
      call: <T>(method: "GET" | "POST" | "DELETE", path: string, body?: unknown) =>
        callGrid<T>(method, path, socket, body),
      stream: (path: string) => streamGrid(path, socket),
    };
  };
  const gridCall = async <T>(
    options: GridOptions,
    method: "GET" | "POST" | "DELETE",
    path: string,
    body?: unknown,
  ): Promise<T> => (await gridApi(options)).call<T>(method, path, body);
  const gridStatus = (options: GridOptions) => gridCall<GridStatus>(options, "GET", "/v1/grid");
  const grid = program.command("grid").description("the grid this node belongs to");
  common(
    grid
      .command("status")
      .description("grid id, controller, etcd voters and learners, nodes with health")
      .addOption(gridSocketOption()),
  ).action(async (options: GridOptions) => {
    const status = await gridStatus(options);
    // HA needs the grid's state: a node without quorum says so above instead.
    const ha =
      status.phase === "member" && status.quorum
        ? await gridCall<HaStatus>(options, "GET", "/v1/grid/ha").catch(() => null)
        : null;
    print(options, { ...status, ha }, () => gridStatusText(status, ha));
    // No quorum means no controller: say so in the exit code too, for scripts.
    if (status.phase === "member" && !status.quorum) process.exitCode = 1;
  });
  common(
    grid
      .command("ca")
      .description(
        "the grid CA certificate (PEM), which signs every node's API certificate: give it to --ca",
      )
      .addOption(gridSocketOption()),
  ).action(async (options: GridOptions) => {
    const ca = await gridCall<{ ca: string; fingerprint: string }>(options, "GET", "/v1/grid/ca");
    print(options, ca, () => ca.ca.trimEnd());
  });
  const token = program
    .command("token")
    .description("admin tokens: what the HTTPS API and the console accept");
  common(
    token
      .command("create")
      .description("make an admin token; it is printed this once, the grid keeps only a digest")
      .argument("<name>", "who or what holds it, e.g. alice or ci")
      .addOption(gridSocketOption()),
  ).action(async (name: string, options: GridOptions) => {
    const made = await gridCall<{ token: string; info: { id: string; name: string } }>(
      options,
      "POST",
      "/v1/tokens",
      { name },
    );
    print(options, made, () =>
      [
        made.token,
        "",
        `admin token ${made.info.id} (${made.info.name}): shown this once. Use it from any machine with:`,
        "  flatgrid grid ca > grid-ca.pem   # on a node",
        `  export FLATGRID_API=https://NODE-ADDRESS:7443 FLATGRID_CA=grid-ca.pem FLATGRID_TOKEN=${made.token}`,
      ].join("\n"),
    );
  });
  common(
    token
      .command("ls")
      .description("the grid's admin tokens (never their secrets)")
      .addOption(gridSocketOption()),
  ).action(async (options: GridOptions) => {
    const { tokens } = await gridCall<{ tokens: AdminTokenInfo[] }>(options, "GET", "/v1/tokens");
    print(options, { tokens }, () => tokensTable(tokens));
  });
  common(
    token
      .command("revoke")
      .description("revoke an admin token: the next request with it is refused")
      .argument("<id>", "its id (`flatgrid token ls`)")
      .addOption(gridSocketOption()),
  ).action(async (id: string, options: GridOptions) => {
    const r = await gridCall<{ revoked: string }>(
      options,
      "DELETE",
      `/v1/tokens/${encodeURIComponent(id)}`,
    );
    print(options, r, () => `admin token ${id}: revoked`);
  });
  const node = program.command("node").description("the nodes of the grid");
  common(
    node
      .command("ls")
      .description("every registered node: address, etcd role, controller, health")
      .addOption(gridSocketOption()),
  ).action(async (options: GridOptions) => {
    const status = await gridStatus(options);
    if (status.phase === "member" && !status.quorum)
      throw new Failure(
        "the grid's state cannot be read from this node: no etcd quorum (see `flatgrid grid status`)",
        "no-quorum",
      );
    print(options, { nodes: status.nodes }, () => nodesTable(status.nodes));
  });

  common(
    program
      .command("console")
      .description(
        "the node's full-screen console: node, grid and log screens (the supervisor runs it on tty1)",
      )
      .option("--tty <device>", "run on this terminal device, e.g. /dev/tty1 (default: this one)")
      .option("--print <screen>", "print one screen (node or grid) as text, and exit")
      .option(
        "--data-dir <dir>",
        "the file system whose use the node screen shows",
        "/var/lib/flatgrid",
      )
      .addOption(gridSocketOption()),
  ).action(
    async (
      options: CommonOptions & {
        tty?: string;
        print?: string;
        dataDir: string;
        gridSocket?: string;
      },
    ) => {
      // Loaded only here: blessed is a large module that no other command needs.
      const { gridSocketPath } = await import("../grid/index.js");
      const { gridScreen, nodeScreen, plain, runConsole, SnapshotReader } = await import(
        "../console/index.js"
      );
      const supervisor = client(options);
      const grid = new ControlClient(
        options.gridSocket ?? gridSocketPath({ FLATGRID_SOCKET: options.socket ?? socketPath() }),
        { name: "the grid service", hint: "is it running? `flatgrid services`", timeoutMs: 10_000 },
      );
      if (options.print !== undefined) {
        if (options.print !== "node" && options.print !== "grid")
          throw new Failure(`--print ${options.print}: the screens are node and grid`, "usage");
        const reader = new SnapshotReader({ supervisor, grid, dataDir: options.dataDir });
        // Two readings, so that CPU use covers the time between them.
        await reader.read();
        await new Promise((r) => setTimeout(r, 500));
        const snap = await reader.read();
        const lines = options.print === "node" ? nodeScreen(snap, 100) : gridScreen(snap);
        print(options, snap, () => lines.map(plain).join("\n"));
        return;
      }
      await runConsole({ supervisor, grid, dataDir: options.dataDir, tty: options.tty });
    },
  );

  const app = program.command("app").description("applications: descriptors, placement, state");
  common(
    app
      .command("validate")
      .description("check an application descriptor against the catalog, without a grid")
      .requiredOption("-f, --file <file>", "the application descriptor (YAML)")
      .option("--catalog <dir>", "directory of class descriptors", DEFAULT_CATALOG),
    false,
  ).action((options: CommonOptions & { file: string; catalog: string }) => {
    let text: string;
    try {
      text = readFileSync(options.file, "utf8");
    } catch (err) {
      throw new Failure(`cannot read ${options.file}: ${(err as Error).message}`, "no-file");
    }
    try {
      const parsed = parseApplication(options.file, text, readCatalog(options.catalog));
      print(options, { valid: true, application: parsed }, () => applicationText(parsed));
    } catch (err) {
      if (!(err instanceof DescriptorError)) throw err;
      print(options, { valid: false, problems: err.problems }, () =>
        err.problems.map(formatProblem).join("\n"),
      );
      process.exitCode = 1;
    }
  });

  const appPath = (name: string) => `/v1/apps/${encodeURIComponent(name)}`;
  /** `app VERB <name>`, on the grid service's socket. */
  const appCommand = (verb: string, description: string) =>
    app
      .command(verb)
      .description(description)
      .argument("<name>", "the application")
      .addOption(gridSocketOption());
  common(
    app
      .command("create")
      .description("store an application in the grid: the controller places its instances")
      .requiredOption("-f, --file <file>", "the application descriptor (YAML)")
      .addOption(gridSocketOption()),
  ).action(async (options: GridOptions & { file: string }) => {
    let source: string;
    try {
      source = readFileSync(options.file, "utf8");
    } catch (err) {
      throw new Failure(`cannot read ${options.file}: ${(err as Error).message}`, "no-file");
    }
    const { app: created } = await gridCall<{ app: AppRecord }>(options, "POST", "/v1/apps", {
      file: options.file,
      source,
    });
    print(
      options,
      { app: created },
      () =>
        `${created.name}: created, ${created.spec.instances.length} instances (${created.spec.demand.cpus} CPUs, ${created.spec.demand.memoryMiB} MiB); the controller places them: \`flatgrid app status ${created.name}\``,
    );
  });
  common(
    app.command("ls").description("the grid's applications").addOption(gridSocketOption()),
  ).action(async (options: GridOptions) => {
    const { apps } = await gridCall<{ apps: AppSummary[] }>(options, "GET", "/v1/apps");
    print(options, { apps }, () => appsTable(apps));
  });
  for (const [verb, description] of [
    ["status", "an application's instances: node, address, state"],
    ["explain", "why each instance of an application is on its node, or on none"],
  ] as const) {
    common(appCommand(verb, description)).action(async (name: string, options: GridOptions) => {
      const status = await gridCall<AppStatus>(options, "GET", appPath(name));
      print(options, status, () =>
        verb === "status" ? appStatusText(status) : appExplainText(status),
      );
    });
  }
  for (const [verb, description, done] of [
    [
      "restart",
      "start instances again (all of them when none is named), their failures forgotten: also what brings back a failed one",
      "start again",
    ],
    ["stop", "stop instances: they keep their node, their VMs stop", "stop"],
    ["start", "start stopped instances again", "start"],
  ] as const) {
    common(
      appCommand(verb, description).argument(
        "[instances...]",
        "instances, e.g. web.1 (default: all)",
      ),
    ).action(async (name: string, instances: string[], options: GridOptions) => {
      const r = await gridCall<{ app: string; action: string; instances: string[] }>(
        options,
        "POST",
        `${appPath(name)}/${verb}`,
        { instances },
      );
      print(
        options,
        r,
        () =>
          `${name}: ${r.instances.join(", ")}: asked to ${done}; their agents do it (\`flatgrid app status ${name}\`)`,
      );
    });
  }
  common(
    appCommand(
      "console",
      "attach to an instance's serial console, live, on whichever node runs it (Ctrl-] detaches)",
    ).argument("<instance>", "the instance, e.g. db.0"),
  ).action(async (name: string, instance: string, options: GridOptions) => {
    const api = await gridApi(options);
    const path = `${appPath(name)}/instances/${encodeURIComponent(instance)}/console`;
    const { attachInstanceConsole } = await import("./instance-console.js");
    process.exitCode = await attachInstanceConsole({
      label: `${name}/${instance}`,
      open: () => api.stream(`${path}/stream`),
      type: (bytes) =>
        api.call("POST", `${path}/input`, { base64: bytes.toString("base64") }).then(() => {}),
    });
  });
  common(
    appCommand(
      "logs",
      "an instance's console: what its guest and its VMM printed, from the node that runs it",
    )
      .argument("<instance>", "the instance, e.g. web.1")
      .option("-f, --follow", "keep printing what comes until interrupted")
      .option(
        "-c, --bytes <count>",
        "how much of its end to show (at most 1 MiB)",
        wholeNumber,
        16 * 1024,
      ),
  ).action(
    async (
      name: string,
      instance: string,
      options: GridOptions & { follow?: boolean; bytes: number },
    ) => {
      type Chunk = { text: string; from: number; to: number; rotated: boolean; hostname: string };
      const path = (q: string) =>
        `${appPath(name)}/instances/${encodeURIComponent(instance)}/console?${q}`;
      const max = Math.min(Math.max(options.bytes, 1), 1 << 20);
      let chunk = await gridCall<Chunk>(options, "GET", path(`max=${max}`));
      const show = (c: Chunk) =>
        process.stdout.write(options.json ? `${JSON.stringify(c)}\n` : c.text);
      show(chunk);
      if (!options.follow) return;
      let stopped = false;
      const stop = () => {
        stopped = true;
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      let where = chunk.hostname;
      while (!stopped) {
        await new Promise((r) => setTimeout(r, 1000));
        try {
          const next = await gridCall<Chunk>(
            options,
            "GET",
            path(`from=${chunk.to}&max=${1 << 20}`),
          );
          if (next.hostname !== where) {
            // Placed elsewhere meanwhile: that node's log is another file.
            process.stderr.write(`\nflatgrid: ${name}/${instance} now runs on ${next.hostname}\n`);
            where = next.hostname;
            chunk = await gridCall<Chunk>(options, "GET", path(`max=${max}`));
            show(chunk);
            continue;
          }
          if (next.rotated)
            process.stderr.write("\nflatgrid: the console log was cut; from its start:\n");
          chunk = next;
          if (next.text) show(next);
        } catch (err) {
          // Between nodes, or the grid busy: say so and keep trying.
          process.stderr.write(`\nflatgrid: ${(err as Error).message}; trying again\n`);
          await new Promise((r) => setTimeout(r, 2000));
        }
      }
    },
  );
  common(appCommand("destroy", "remove an application from the grid")).action(
    async (name: string, options: GridOptions) => {
      await gridCall(options, "DELETE", appPath(name));
      print(
        options,
        { destroyed: name },
        () => `${name}: destroyed; the controller removes its placements`,
      );
    },
  );

  addVmmCommand(program);
  addKernelCommand(program);

  addSimCommands(program);

  program
    .command("vmm-console")
    .description("attach to a running microVM's serial console (Ctrl-] detaches)")
    .requiredOption("--socket <path>", "the VM's control socket (flatgrid vmm --socket)")
    .action(async (options: { socket: string }) => {
      const { attachConsole } = await import("../vmm/index.js");
      process.exitCode = await attachConsole(options.socket);
    });

  program
    .command("demo")
    .description(
      "grid: boot a simulated grid from build/image and leave it up (npm run demo); node: one node's init, supervisor and services in a private namespace",
    )
    .addArgument(new Argument("[what]", "what to show").choices(["grid", "node"]).default("grid"))
    .option("--nodes <count>", "servers in the grid", (v) => Number.parseInt(v, 10), 3)
    .option("--memory <MiB>", "memory of each server", (v) => Number.parseInt(v, 10), 2048)
    .option("--cpus <count>", "vCPUs of each server", (v) => Number.parseInt(v, 10), 2)
    .option("--no-app", "do not deploy the example application (examples/shop.yaml)")
    .action(
      async (what: string, o: { nodes: number; memory: number; cpus: number; app: boolean }) => {
        if (what === "node") {
          process.exitCode = await runDemo();
          return;
        }
        if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > 9)
          throw new Failure("--nodes must be a whole number from 1 to 9", "usage");
        const { runGridDemo } = await import("./demo-grid.js");
        process.exitCode = await runGridDemo({
          nodes: o.nodes,
          memoryMiB: o.memory,
          cpus: o.cpus,
          app: o.app,
          gridTimeoutMs: 480_000,
          appTimeoutMs: 900_000,
        });
      },
    );
  // Every command of the grid API also reaches it over HTTPS (the console is this node's own).
  const walk = (c: Command): Command[] => [c, ...c.commands.flatMap(walk)];
  for (const c of walk(program))
    if (
      !(c.parent === program && c.name() === "console") &&
      c.options.some((o) => o.long === "--grid-socket")
    )
      c.addOption(
        new Option(
          "--api <url>",
          "any node's HTTPS API, https://HOST[:7443], instead of this node's socket",
        ).env("FLATGRID_API"),
      )
        .addOption(new Option("--token <token>", "an admin token, for --api").env("FLATGRID_TOKEN"))
        .addOption(
          new Option(
            "--ca <file>",
            "the grid CA certificate to trust, for --api (`flatgrid grid ca`)",
          ).env("FLATGRID_CA"),
        );
  return program;
}

export async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  const json = argv.includes("--json");
  if (argv.length === 0) {
    process.stderr.write(program.helpInformation());
    return 2;
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (["commander.helpDisplayed", "commander.help", "commander.version"].includes(err.code))
        return 0;
      if (json)
        process.stdout.write(
          `${JSON.stringify({ error: { code: "usage", message: err.message } })}\n`,
        );
      return 2;
    }
    const failure =
      err instanceof ControlError || err instanceof Failure || err instanceof SimError
        ? err
        : new Failure(err instanceof Error ? err.message : String(err), "internal");
    if (json)
      process.stdout.write(
        `${JSON.stringify({ error: { code: failure.code, message: failure.message } })}\n`,
      );
    process.stderr.write(`flatgrid: ${failure.message}\n`);
    return 1;
  }
}

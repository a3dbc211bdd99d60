#!/usr/bin/env node
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { parseAdminToken } from "../api/admin-token.js";
import { ControlClient, gridSocketPath, socketPath } from "./control-client.js";
import { ApiError, listenControlSocket, SocketInUseError } from "./control-server.js";
import { PidFiles } from "./leftovers.js";
import { networkChanges, readdressing, reapplyNetwork } from "./network.js";
import { formatConfigError, redactConfig } from "./node-config.js";
import { NodeSettingsStore, NoStorageError, SettingsError } from "./node-settings.js";
import { readNodeConfig } from "./read-config.js";
import {
  checkServiceGraph,
  parseServiceTable,
  type ServiceSpec,
  serviceSpecSchema,
} from "./service-spec.js";
import { Supervisor } from "./supervisor.js";
import { bootMode, bringUpStorage, bringUpSystem } from "./system.js";
import { VERSION } from "./version.js";

/**
 * The node supervisor (PID 2 under native/init): reads the node configuration, brings the
 * machine up, runs the service table, and serves the control socket. It must never die
 * from a service's misbehaviour or a bad configuration: it reports and carries on.
 */

const USAGE = `usage: flatgrid-supervisor [--services FILE]... [--socket PATH] [--config-dir DIR] [--cmdline FILE]
  --services FILE   a JSON service table ({"services": [...]}) to run besides the built-in one
  --socket PATH     control socket (default ${socketPath({})}, or FLATGRID_SOCKET)
  --config-dir DIR  node configuration directory (default /etc/flatgrid)
  --settings-dir DIR  where the node's own settings go (default: the data partition)
  --cmdline FILE    kernel command line to read flatgrid.* keys from (default /proc/cmdline)`;

function say(msg: string): void {
  process.stdout.write(`flatgrid-supervisor: ${msg}\n`);
}

function parseCommandLine() {
  try {
    return parseArgs({
      options: {
        services: { type: "string", multiple: true, default: [] },
        socket: { type: "string" },
        "config-dir": { type: "string", default: "/etc/flatgrid" },
        // The node's own node.conf (the console's): the data partition on a node.
        "settings-dir": { type: "string" },
        cmdline: { type: "string", default: "/proc/cmdline" },
        help: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    process.stderr.write(`flatgrid-supervisor: ${(err as Error).message}\n${USAGE}\n`);
    process.exit(2);
  }
}

/**
 * Whether `text`, given where the console password goes, is an admin token of the grid:
 * the grid service knows (it needs quorum). Not a token at all: false, and the password
 * rules apply. A token the grid rejects, or cannot check now, is that field's problem.
 */
async function checkAdminToken(text: string | undefined, supervisorSocket: string) {
  if (!text || !parseAdminToken(text)) return false;
  const grid = new ControlClient(gridSocketPath({ FLATGRID_SOCKET: supervisorSocket }), {
    name: "the grid service",
    hint: "is the grid service running? `flatgrid services`",
    timeoutMs: 15_000,
  });
  let valid = false;
  try {
    ({ valid } = await grid.post<{ valid: boolean }>("/v1/tokens/verify", { token: text }));
  } catch (err) {
    throw new ApiError(
      503,
      "grid-unavailable",
      `cannot check the admin token: ${(err as Error).message}`,
      [
        {
          key: "currentPassword",
          message:
            "is an admin token, which the grid cannot check now (no grid service or no quorum)",
        },
      ],
    );
  }
  if (!valid)
    throw new ApiError(400, "bad-settings", "not an admin token of this grid", [
      { key: "currentPassword", message: "is not an admin token of this grid" },
    ]);
  return true;
}

/** Service tables from /etc/flatgrid/services.d and --services; a bad file is reported and skipped. */
function loadTables(files: string[], report: (msg: string) => void): ServiceSpec[] {
  const specs: ServiceSpec[] = [];
  for (const file of files) {
    try {
      const text = readFileSync(file, "utf8");
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch (err) {
        throw new Error(`${file}: not valid JSON: ${(err as Error).message}`);
      }
      const table = parseServiceTable(json, file);
      checkServiceGraph([...specs, ...table], file);
      specs.push(...table);
    } catch (err) {
      report(`service table skipped: ${(err as Error).message}`);
    }
  }
  return specs;
}

async function main(): Promise<void> {
  const args = parseCommandLine();
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const mode = bootMode();
  const started = Date.now();
  say(`flatgrid ${VERSION} supervisor starting (pid ${process.pid}, boot mode ${mode})`);

  // The command line says whether a disk may be formatted; the data partition may then hold
  // the node's own node.conf (written by the console), which wins over the command line.
  const early = readNodeConfig(args["config-dir"], args.cmdline, say);
  const storage = await bringUpStorage(early.config, mode);
  const settingsDir =
    args["settings-dir"] ??
    (storage.data?.state === "mounted" ? storage.data.mountpoint : undefined) ??
    null;
  const settings = new NodeSettingsStore({
    cmdline: args.cmdline,
    configDirs: [args["config-dir"]],
    dir: settingsDir,
  });
  let { config, errors: configErrors } = settingsDir
    ? readNodeConfig([args["config-dir"], settingsDir], args.cmdline, say)
    : early;
  const notes: { level: number; msg: string }[] = [...storage.notes];
  for (const error of configErrors)
    notes.push({ level: 50, msg: `configuration: ${formatConfigError(error)}` });
  if (!config.grid)
    notes.push({ level: 40, msg: "no grid configured yet: set flatgrid.grid and flatgrid.token" });

  const system = await bringUpSystem(config, mode);
  let nodeIface = system.iface;
  notes.push(...system.notes);

  const dropIns = join(args["config-dir"], "services.d");
  const tableFiles = existsSync(dropIns)
    ? readdirSync(dropIns)
        .filter((f) => f.endsWith(".json"))
        .sort()
        .map((f) => join(dropIns, f))
    : [];
  const builtIn = system.services.map((s) => serviceSpecSchema.parse(s));
  const specs = [
    ...builtIn,
    ...loadTables([...tableFiles, ...args.services], (msg) => notes.push({ level: 50, msg })),
  ];

  const path = args.socket ?? socketPath();
  const pidFiles = new PidFiles(join(dirname(path), "services"));

  // Services find the supervisor (e.g. to define etcd) through FLATGRID_SOCKET.
  const supervisor = new Supervisor(specs, { ...process.env, FLATGRID_SOCKET: path }, pidFiles);
  for (const { level, msg } of notes) {
    supervisor.note(msg, level);
    say(level >= 50 ? `ERROR: ${msg}` : msg);
  }
  supervisor.on(
    "state",
    (status: { name: string; state: string; pid: number | null; reason: string | null }) => {
      const detail = [status.pid ? `pid ${status.pid}` : "", status.reason ?? ""]
        .filter(Boolean)
        .join(", ");
      say(`${status.name}: ${status.state}${detail ? ` (${detail})` : ""}`);
    },
  );

  let stopping: Promise<void> | null = null;
  const shutdown = (why: string, exitCode = 0) => {
    if (stopping) return stopping;
    say(`${why}: stopping services`);
    stopping = (async () => {
      await supervisor.stopAll();
      server?.close();
      rmSync(path, { force: true });
      say("stopped");
      process.exit(exitCode);
    })();
    return stopping;
  };

  const underInit = process.env.FLATGRID_INIT === "1" && process.ppid === 1;
  const server = await listenControlSocket(path, supervisor, {
    node: () => ({
      version: VERSION,
      bootMode: mode,
      pid: process.pid,
      uptimeMs: Date.now() - started,
      config: redactConfig(config),
      configErrors: configErrors.map((e) => ({ ...e, text: formatConfigError(e) })),
      data: storage.data,
    }),
    configure: async (request) => {
      const adminToken = await checkAdminToken(request.currentPassword, path);
      // Only a supervisor that runs the machine brings its network up (see system.ts).
      const live = mode === "os";
      let stored: ReturnType<NodeSettingsStore["store"]>;
      const running = config;
      try {
        stored = settings.store(request, adminToken);
      } catch (err) {
        if (err instanceof SettingsError)
          throw new ApiError(400, "bad-settings", err.message, err.problems);
        if (err instanceof NoStorageError) throw new ApiError(409, "no-storage", err.message);
        throw err;
      }
      ({ config, errors: configErrors } = readNodeConfig(
        [args["config-dir"], settingsDir ?? args["config-dir"]],
        args.cmdline,
      ));
      supervisor.note(
        `settings stored in ${stored.file}${stored.changed.length ? `: ${stored.changed.join(", ")}` : ""}${request.consolePassword ? " (and a new console password)" : ""}`,
      );
      const restarted: string[] = [];
      const notes: string[] = [];
      const network = networkChanges(running, config);
      if (network.length && live) {
        nodeIface = await reapplyNetwork(
          running,
          config,
          nodeIface,
          (msg, level) => supervisor.note(msg, level),
          {
            has: (name) => supervisor.has(name),
            remove: (name) => supervisor.remove(name),
            add: async (spec) => {
              await supervisor.define(serviceSpecSchema.parse(spec));
              await supervisor.start(spec.name);
            },
          },
        );
        notes.push(`the network settings apply now (${network.join(", ")})`);
      } else if (network.length)
        notes.push(
          `the network settings are stored, not applied: this supervisor runs in ${mode} mode and leaves the network alone`,
        );
      // The grid service reads its grid, token, host name and address when it starts.
      const gridKeys = ["flatgrid.grid", "flatgrid.token", "flatgrid.hostname"];
      const readdress = readdressing(network) && live;
      if (
        (stored.changed.some((k) => gridKeys.includes(k)) || readdress) &&
        supervisor.has("grid")
      ) {
        await supervisor.restart("grid");
        restarted.push("grid");
      }
      return {
        config: redactConfig(stored.config),
        file: stored.file,
        changed: stored.changed,
        restarted,
        notes,
      };
    },
    checkPassword: (password) => settings.checkPassword(password),
    power: (action) => {
      supervisor.note(`${action} requested through the control socket`);
      if (underInit) {
        // init owns power: it stops us (SIGTERM), then everything else, then reboots.
        process.kill(1, action === "poweroff" ? "SIGUSR1" : "SIGINT");
      } else {
        void shutdown(
          `${action} requested, but there is no init above us: the supervisor just stops`,
        );
      }
    },
  }).catch((err: Error) => {
    // Two supervisors would fight over every service: the second one must not run at all.
    if (err instanceof SocketInUseError) {
      say(`ERROR: ${err.message}; exiting`);
      process.exit(1);
    }
    say(`ERROR: control socket: ${err.message}`);
    supervisor.note(`control socket: ${err.message}`, 50);
    return null;
  });
  if (server) say(`control socket: ${path}`);
  // Only now, sure that no other supervisor owns this node, is it safe to stop leftovers.
  for (const msg of await pidFiles.stopLeftovers()) {
    supervisor.note(msg, 40);
    say(msg);
  }

  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGHUP", () =>
    supervisor.note("SIGHUP ignored: restart a service with `flatgrid service restart`"),
  );

  supervisor.startAll();
  supervisor.note(`started ${specs.filter((s) => s.enabled).length} of ${specs.length} services`);
  say(`supervising ${specs.length} services; see \`flatgrid services\` and \`flatgrid logs NAME\``);
  // The line the simulator and boot benchmarks wait for.
  say(`ready in ${Date.now() - started} ms (kvm: ${existsSync("/dev/kvm") ? "yes" : "no"})`);
}

process.on("uncaughtException", (err) => {
  // Better to say exactly why and let init restart us than to limp on in an unknown state.
  process.stderr.write(`flatgrid-supervisor: fatal: ${err.stack ?? err.message}\n`);
  process.exit(70);
});

await main();

#!/usr/bin/env node
import { networkInterfaces } from "node:os";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { formatConfigError, readNodeConfig } from "../os/index.js";
import { GridNode } from "./grid-node.js";
import { gridSocketPath, listenGridSocket } from "./status-socket.js";

/**
 * The grid service: run by the node supervisor, it makes this node part of its grid (see
 * GridNode) and serves the local grid socket. Logs are pino JSON lines for the supervisor.
 */

const USAGE = `usage: flatgrid-grid [--state-dir DIR] [--config-dir DIR] [--cmdline FILE] [--socket PATH]
  [--address IP] [--interface NAME]... [--window-ms N] [--dead-grace-ms N] [--instance-grace-ms N]
  [--catalog DIR] [--instances DIR] [--images DIR] [--lease-ms N] [--cgroup-parent PATH]
  [--image-cache DIR] [--boot-deadline-ms N]`;

const { values: args } = parseArgs({
  options: {
    "state-dir": { type: "string", default: "/var/lib/flatgrid/grid" },
    // node.conf of each, a later one winning: the data partition's is the console's.
    "config-dir": {
      type: "string",
      multiple: true,
      default: ["/etc/flatgrid", "/var/lib/flatgrid"],
    },
    cmdline: { type: "string", default: "/proc/cmdline" },
    socket: { type: "string" },
    address: { type: "string" },
    interface: { type: "string", multiple: true },
    "window-ms": { type: "string" },
    "boot-deadline-ms": { type: "string" },
    "dead-grace-ms": { type: "string" },
    "instance-grace-ms": { type: "string" },
    catalog: { type: "string" },
    // The agent: instance directories, and the appliance catalog's images on this node.
    instances: { type: "string", default: "/var/lib/flatgrid/instances" },
    images: { type: "string", default: "/var/lib/flatgrid/catalog" },
    "lease-ms": { type: "string" },
    // Each VMM runs in PATH/<app>/<instance> below /sys/fs/cgroup, with its limits.
    "cgroup-parent": { type: "string", default: "flatgrid" },
    // Class images from peers, for a node without a catalog disk: on the data partition.
    "image-cache": { type: "string", default: "/var/lib/flatgrid/images" },
    help: { type: "boolean", default: false },
  },
  strict: true,
});
if (args.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}

const log = pino({ base: undefined });
const { config, errors } = readNodeConfig(args["config-dir"], args.cmdline, (msg) => log.warn(msg));
for (const e of errors) log.error(`configuration: ${formatConfigError(e)}`);

/** The first non-loopback IPv4 address; the network (DHCP) may still be coming up. */
async function waitForAddress(): Promise<string> {
  let said = false;
  for (;;) {
    for (const list of Object.values(networkInterfaces()))
      for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
    if (!said) log.info("waiting for an IPv4 address on a network link");
    said = true;
    await new Promise((r) => setTimeout(r, 500));
  }
}

const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
const node = new GridNode({
  stateDir: args["state-dir"],
  gridName: config.grid,
  token: config.token,
  address: args.address ?? (await waitForAddress()),
  hostname: config.hostname ?? undefined,
  interfaces: args.interface,
  windowMs: num(args["window-ms"]),
  deadGraceMs: num(args["dead-grace-ms"]),
  instanceGraceMs: num(args["instance-grace-ms"]),
  catalogDir: args.catalog,
  agent: {
    instancesDir: args.instances,
    imagesDir: args.images,
    leaseMs: num(args["lease-ms"]),
    cgroupParent: args["cgroup-parent"],
    imageCacheDir: args["image-cache"],
    bootDeadlineMs: num(args["boot-deadline-ms"]),
  },
  timescale: config.timescale,
  log: (level, msg, fields) => log[level](fields ?? {}, msg),
});
node.on("elected", (term: number) => log.info({ term }, "this node is the grid controller"));
node.on("deposed", (term: number, reason: string) =>
  log.warn({ term, reason }, "no longer the grid controller"),
);

const socket = args.socket ?? gridSocketPath();
const server = await listenGridSocket(socket, node);
await node.start();
log.info({ nodeId: node.nodeId, address: node.address, socket }, "grid service ready");

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  log.info("stopping: leaving the election, withdrawing from the registry");
  await node.stop();
  server.close();
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());

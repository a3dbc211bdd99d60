#!/usr/bin/env node
import { pino } from "pino";
import { readInventory } from "./inventory.js";

/**
 * A node service that logs the node's inventory as structured JSON (pino) at start and then
 * its load every interval. Until the node registry (grid formation) publishes the same
 * facts to etcd, this is how they reach `flatgrid logs inventory` and the console.
 */
const log = pino({ base: undefined });
const intervalMs = Number(process.env.FLATGRID_INVENTORY_INTERVAL_MS ?? 10_000);

const first = readInventory();
log.info(
  {
    cpus: first.cpus,
    cpuModel: first.cpuModel,
    memoryMiB: first.memoryMiB,
    kvm: first.kvm,
    links: first.links.map((l) => `${l.name}/${l.mac}/${l.up ? "up" : "down"}`).join(","),
    kernel: first.kernel,
  },
  "inventory",
);
if (!first.kvm) log.warn("no /dev/kvm: this node cannot run microVMs");

const timer = setInterval(() => {
  const now = readInventory();
  log.info({ load: now.load.join(" "), memoryAvailableMiB: now.memoryAvailableMiB }, "load");
}, intervalMs);

process.once("SIGTERM", () => {
  clearInterval(timer);
  log.info("stopping");
  process.exit(0);
});

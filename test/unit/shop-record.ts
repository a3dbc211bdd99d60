// examples/shop.yaml as the controller and the agents see it: stored, with a network number.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { AppRecord } from "../../src/controller/index.js";
import { DEFAULT_CATALOG, parseApplication, readCatalog } from "../../src/model/index.js";

const ROOT = join(import.meta.dirname, "..", "..", "..");

/** shop's record; `net` undefined: as stored by a flatgrid without networks. */
export function shopRecord(net?: number): AppRecord {
  const source = readFileSync(join(ROOT, "examples/shop.yaml"), "utf8");
  return {
    name: "shop",
    file: "shop.yaml",
    source,
    spec: parseApplication("shop.yaml", source, readCatalog(DEFAULT_CATALOG)),
    createdAt: "2026-11-27T00:00:00.000Z",
    ...(net === undefined ? {} : { net }),
  };
}

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Catalog } from "./application.js";
import { type ApplianceClass, classRef, parseClass } from "./class-descriptor.js";

// Reads files, unlike the rest of src/model: the CLI and the grid service share it.

/** The class descriptors shipped with flatgrid: catalog/classes beside dist/ (repo and image). */
export const DEFAULT_CATALOG = fileURLToPath(new URL("../../../catalog/classes", import.meta.url));

/** Reads every *.yaml class descriptor in a directory; a bad one throws with its problems. */
export function readCatalog(dir: string): Catalog {
  if (!existsSync(dir)) throw new Error(`no catalog at ${dir} (--catalog DIR chooses another)`);
  const classes = new Map<string, ApplianceClass>();
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith(".yaml"))
    .sort()) {
    const path = join(dir, file);
    const cls = parseClass(path, readFileSync(path, "utf8"));
    classes.set(classRef(cls), cls);
  }
  return classes;
}

import { z } from "zod";
import {
  type ApplianceClass,
  classRef,
  type PropertySpec,
  typeMatches,
  zodProblems,
} from "./class-descriptor.js";
import { DescriptorError, type Problem } from "./errors.js";
import { formatMiB, parseMiB } from "./quantity.js";
import { Source } from "./source.js";

/**
 * An application descriptor (YAML): components naming catalog classes, connections from
 * output terminals to input terminals, properties, a resource budget and external
 * interfaces. Parsing checks the shape against one schema; validation checks the meaning
 * against the catalog, and expands `count` into instances (`web` × 3 → web.0, web.1,
 * web.2). Every problem names its file, line and field. Pure.
 *
 *   name: shop
 *   budget: { cpus: 4, memory: 4GiB, nodes: 3 }
 *   components:
 *     lb:  { class: lb@1, expose: { http: 80 } }
 *     web: { class: web@1, count: 3, properties: { title: Shop } }
 *     db:  { class: db@1, memory: 1GiB }
 *   connections:
 *     - { from: lb.backend, to: web.http }
 *     - { from: web.db, to: db.redis }
 */

/** The smallest data volume: an ext4 with its journal wants a few MiB of its own. */
export const MIN_VOLUME_MIB = 16;

/** What applications and components may be called (they become etcd keys and host names). */
export const NAME = /^[a-z][a-z0-9-]{0,31}$/;
const CLASS_REF = /^[a-z][a-z0-9-]{0,31}@[1-9][0-9]*$/;
const ENDPOINT = /^[a-z][a-z0-9-]{0,31}(\.[0-9]+)?\.[a-z][a-z0-9-]{0,31}$/;
const size = z.union([z.string(), z.number()]).refine((v) => parseMiB(v) !== null, {
  message: 'is not a size, like "512MiB" or "2GiB"',
});

const componentSchema = z
  .object({
    class: z.string().regex(CLASS_REF, 'must name a catalog class and version, like "web@1"'),
    count: z.number().int().min(1).max(1000).default(1),
    cpus: z.number().positive().max(256).optional(),
    memory: size.optional(),
    disk: size.optional(),
    /** Each instance's data volume (0: none); the class says by default. */
    volume: z.union([size, z.literal(0)]).optional(),
    properties: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
    /** External interfaces: an input terminal published on a port of the node's LAN address. */
    expose: z.record(z.string(), z.number().int().min(1).max(65535)).default({}),
  })
  .strict();

export const applicationSchema = z
  .object({
    name: z.string().regex(NAME, "must be a-z, 0-9 and -, starting with a letter, up to 32"),
    description: z.string().default(""),
    budget: z
      .object({
        cpus: z.number().positive().max(100_000),
        memory: size,
        /** The most nodes the application may be spread over. */
        nodes: z.number().int().min(1).optional(),
      })
      .strict(),
    components: z
      .record(z.string().regex(NAME, "component names are a-z, 0-9 and -"), componentSchema)
      .refine((c) => Object.keys(c).length > 0, { message: "an application needs a component" }),
    connections: z
      .array(
        z
          .object({
            from: z.string().regex(ENDPOINT, 'must be "component.terminal"'),
            to: z.string().regex(ENDPOINT, 'must be "component.terminal"'),
          })
          .strict(),
      )
      .default([]),
  })
  .strict();

export interface Instance {
  /** `web.0`: component and index. */
  id: string;
  component: string;
  index: number;
  class: string;
  cpus: number;
  memoryMiB: number;
  diskMiB: number;
  /**
   * Its own data volume (ext4, /data in the guest), MiB; 0: none. It stays on its node across
   * restarts of its VM and goes when the instance leaves the node (absent in records of
   * flatgrid before volumes: none).
   */
  volumeMiB?: number;
  properties: Record<string, string | number | boolean>;
}

/** One output terminal of one instance connected to one input terminal of another. */
export interface Link {
  from: { instance: string; terminal: string };
  to: { instance: string; terminal: string };
  protocol: "tcp" | "udp";
  port: number;
}

export interface Exposure {
  component: string;
  terminal: string;
  /** Port on the node's LAN address. */
  port: number;
  /** The terminal's own port on the instance. */
  terminalPort: number;
  protocol: "tcp" | "udp";
}

export interface Application {
  name: string;
  description: string;
  budget: { cpus: number; memoryMiB: number; nodes: number | null };
  components: Record<string, { class: string; count: number }>;
  instances: Instance[];
  links: Link[];
  exposures: Exposure[];
  /** What the instances take together. */
  demand: { cpus: number; memoryMiB: number };
}

/** The catalog as validation sees it: classes by `name@version`. */
export type Catalog = ReadonlyMap<string, ApplianceClass>;

/** Parses and validates a descriptor; throws DescriptorError listing every problem. */
export function parseApplication(file: string, text: string, catalog: Catalog): Application {
  const source = new Source(file, text);
  if (source.problems.length) throw new DescriptorError(source.problems);
  const parsed = applicationSchema.safeParse(source.data);
  if (!parsed.success) throw new DescriptorError(zodProblems(source, parsed.error));
  const problems: Problem[] = [];
  const app = resolve(parsed.data, catalog, (path, msg) =>
    problems.push(source.problem(path, msg)),
  );
  if (problems.length) throw new DescriptorError(problems);
  return app;
}

type Report = (path: (string | number)[], message: string) => void;
type Parsed = z.infer<typeof applicationSchema>;

function resolve(d: Parsed, catalog: Catalog, report: Report): Application {
  const classes = new Map<string, ApplianceClass>();
  const instances: Instance[] = [];
  for (const [name, c] of Object.entries(d.components)) {
    const cls = catalog.get(c.class);
    if (!cls) {
      const versions = [...catalog.values()].filter((k) => k.name === c.class.split("@")[0]);
      report(
        ["components", name, "class"],
        `no class ${c.class} in the catalog${
          versions.length
            ? ` (it has ${versions.map(classRef).join(", ")})`
            : ` (classes: ${[...catalog.keys()].join(", ")})`
        }`,
      );
      continue;
    }
    classes.set(name, cls);
    const properties = checkProperties(name, c.properties, cls, report);
    for (const [terminal] of Object.entries(c.expose)) {
      const t = cls.terminals[terminal];
      if (!t)
        report(
          ["components", name, "expose", terminal],
          `${c.class} has no terminal "${terminal}"`,
        );
      else if (t.direction !== "input")
        report(
          ["components", name, "expose", terminal],
          `only an input terminal can be exposed; "${terminal}" is an output`,
        );
    }
    const volumeMiB = c.volume === undefined ? cls.volumeMiB : (parseMiB(c.volume) ?? 0);
    if (volumeMiB > 0 && volumeMiB < MIN_VOLUME_MIB)
      report(
        ["components", name, "volume"],
        `a data volume needs at least ${MIN_VOLUME_MIB} MiB (0: none)`,
      );
    for (let i = 0; i < c.count; i++) {
      instances.push({
        id: `${name}.${i}`,
        component: name,
        index: i,
        class: c.class,
        cpus: c.cpus ?? cls.cpus,
        memoryMiB: c.memory === undefined ? cls.memoryMiB : (parseMiB(c.memory) ?? 0),
        diskMiB: c.disk === undefined ? cls.diskMiB : (parseMiB(c.disk) ?? 0),
        volumeMiB,
        properties,
      });
    }
  }

  const links = resolveConnections(d, classes, report);

  // An output the class cannot work without must be connected, on every component using it.
  for (const [name, cls] of classes) {
    for (const [terminal, t] of Object.entries(cls.terminals)) {
      if (t.direction !== "output" || !t.mandatory) continue;
      if (
        !d.connections.some(
          (c) => endpoint(c.from).component === name && endpoint(c.from).terminal === terminal,
        )
      )
        report(
          ["components", name],
          `output terminal "${terminal}" of ${classRef(cls)} must be connected (to an input)`,
        );
    }
  }

  const budget = {
    cpus: d.budget.cpus,
    memoryMiB: parseMiB(d.budget.memory) ?? 0,
    nodes: d.budget.nodes ?? null,
  };
  const demand = {
    cpus: round(instances.reduce((n, i) => n + i.cpus, 0)),
    memoryMiB: instances.reduce((n, i) => n + i.memoryMiB, 0),
  };
  if (demand.cpus > budget.cpus)
    report(
      ["budget", "cpus"],
      `the components need ${demand.cpus} CPUs, the budget has ${budget.cpus}: ${round(demand.cpus - budget.cpus)} short`,
    );
  if (demand.memoryMiB > budget.memoryMiB)
    report(
      ["budget", "memory"],
      `the components need ${formatMiB(demand.memoryMiB)}, the budget has ${formatMiB(budget.memoryMiB)}: ${formatMiB(demand.memoryMiB - budget.memoryMiB)} short`,
    );

  const exposures: Exposure[] = [];
  const ports = new Map<number, string>();
  for (const [name, c] of Object.entries(d.components)) {
    const cls = classes.get(name);
    for (const [terminal, port] of Object.entries(c.expose)) {
      const t = cls?.terminals[terminal];
      if (!t) continue;
      const taken = ports.get(port);
      if (taken)
        report(
          ["components", name, "expose", terminal],
          `port ${port} is already exposed by ${taken}`,
        );
      ports.set(port, `${name}.${terminal}`);
      exposures.push({
        component: name,
        terminal,
        port,
        terminalPort: t.port,
        protocol: t.protocol,
      });
    }
  }

  return {
    name: d.name,
    description: d.description,
    budget,
    components: Object.fromEntries(
      Object.entries(d.components).map(([n, c]) => [n, { class: c.class, count: c.count }]),
    ),
    instances,
    links,
    exposures,
    demand,
  };
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

function endpoint(text: string): { component: string; index: number | null; terminal: string } {
  const parts = text.split(".");
  if (parts.length === 3)
    return { component: parts[0] ?? "", index: Number(parts[1]), terminal: parts[2] ?? "" };
  return { component: parts[0] ?? "", index: null, terminal: parts[1] ?? "" };
}

function checkProperties(
  component: string,
  given: Record<string, string | number | boolean>,
  cls: ApplianceClass,
  report: Report,
): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [key, value] of Object.entries(given)) {
    const spec: PropertySpec | undefined = cls.properties[key];
    if (!spec) {
      const known = Object.keys(cls.properties);
      report(
        ["components", component, "properties", key],
        `${classRef(cls)} has no property "${key}"${known.length ? ` (it has ${known.join(", ")})` : ""}`,
      );
    } else if (!typeMatches(spec.type, value)) {
      report(
        ["components", component, "properties", key],
        `must be ${spec.type === "integer" ? "an integer" : `a ${spec.type}`}, not ${JSON.stringify(value)}`,
      );
    } else out[key] = value;
  }
  for (const [key, spec] of Object.entries(cls.properties)) {
    if (key in out) continue;
    if (spec.default !== undefined) out[key] = spec.default;
    else if (spec.required)
      report(
        ["components", component, "properties"],
        `property "${key}" of ${classRef(cls)} is required`,
      );
  }
  return out;
}

/**
 * Terminal rules: `from` names an output and `to` an input; an output connects to exactly
 * one input, an input accepts many outputs; both ends carry the same protocol. Counts
 * expand on both sides: each instance of the source gets its own link to each instance
 * serving the target input (or to one, named like `db.0.redis`).
 */
function resolveConnections(
  d: Parsed,
  classes: Map<string, ApplianceClass>,
  report: Report,
): Link[] {
  const links: Link[] = [];
  const outputsUsed = new Map<string, number>();
  const connectOne = (c: Parsed["connections"][number], i: number): boolean => {
    const fail = (path: (string | number)[], message: string): false => {
      report(path, message);
      return false;
    };
    const from = endpoint(c.from);
    const to = endpoint(c.to);
    const fromClass = classes.get(from.component);
    const toClass = classes.get(to.component);
    if (!d.components[from.component])
      return fail(["connections", i, "from"], `no component "${from.component}"`);
    if (!d.components[to.component])
      return fail(["connections", i, "to"], `no component "${to.component}"`);
    if (!fromClass || !toClass) return false; // its class is missing: reported above
    const out = fromClass.terminals[from.terminal];
    const inp = toClass.terminals[to.terminal];
    if (!out)
      return fail(
        ["connections", i, "from"],
        `${classRef(fromClass)} has no terminal "${from.terminal}"`,
      );
    if (!inp)
      return fail(
        ["connections", i, "to"],
        `${classRef(toClass)} has no terminal "${to.terminal}"`,
      );
    if (out.direction !== "output")
      return fail(
        ["connections", i, "from"],
        `"${c.from}" is an input: a connection goes from an output to an input`,
      );
    if (inp.direction !== "input")
      return fail(
        ["connections", i, "to"],
        `"${c.to}" is an output: a connection goes from an output to an input`,
      );
    if (out.protocol !== inp.protocol)
      return fail(["connections", i], `${c.from} speaks ${out.protocol}, ${c.to} ${inp.protocol}`);
    const fromCount = d.components[from.component]?.count ?? 1;
    const toCount = d.components[to.component]?.count ?? 1;
    if (to.index !== null && to.index >= toCount)
      return fail(["connections", i, "to"], `${to.component} has no instance ${to.index}`);
    if (from.index !== null && from.index >= fromCount)
      return fail(["connections", i, "from"], `${from.component} has no instance ${from.index}`);
    const sources = from.index === null ? [...Array(fromCount).keys()] : [from.index];
    for (const s of sources) {
      const key = `${from.component}.${s}.${from.terminal}`;
      const seen = outputsUsed.get(key);
      if (seen !== undefined)
        return fail(
          ["connections", i, "from"],
          `output ${key} is already connected (connection ${seen + 1}): an output connects to exactly one input`,
        );
      outputsUsed.set(key, i);
      // An input of a component with several instances is one input served by all of them:
      // the output gets every instance as a peer (a load balancer its backends).
      const targets = to.index === null ? [...Array(toCount).keys()] : [to.index];
      for (const t of targets)
        links.push({
          from: { instance: `${from.component}.${s}`, terminal: from.terminal },
          to: { instance: `${to.component}.${t}`, terminal: to.terminal },
          protocol: inp.protocol,
          port: inp.port,
        });
    }
    return true;
  };
  d.connections.forEach((c, i) => {
    connectOne(c, i);
  });
  return links;
}

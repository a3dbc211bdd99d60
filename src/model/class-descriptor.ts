import { z } from "zod";
import { DescriptorError, type Problem } from "./errors.js";
import { parseMiB } from "./quantity.js";
import { Source } from "./source.js";

/**
 * An appliance class as the catalog describes it: its terminals (an input is a server side,
 * an output a client side), its typed properties, and the resources an instance takes unless
 * the application says otherwise. The images themselves are built and content-addressed by
 * the catalog; this is what an application is checked against. Pure.
 */

const NAME = /^[a-z][a-z0-9-]{0,31}$/;
const size = z.union([z.string(), z.number()]).refine((v) => parseMiB(v) !== null, {
  message: 'is not a size, like "512MiB" or "2GiB"',
});

const terminalSchema = z
  .object({
    direction: z.enum(["input", "output"]),
    protocol: z.enum(["tcp", "udp"]).default("tcp"),
    port: z.number().int().min(1).max(65535),
    /** An output the appliance cannot work without: it must be connected. */
    mandatory: z.boolean().default(true),
    description: z.string().default(""),
  })
  .strict();

const propertySchema = z
  .object({
    type: z.enum(["string", "integer", "boolean"]),
    default: z.union([z.string(), z.number(), z.boolean()]).optional(),
    required: z.boolean().default(false),
    description: z.string().default(""),
  })
  .strict();

export const classSchema = z
  .object({
    name: z.string().regex(NAME, "must be a-z, 0-9 and -, starting with a letter"),
    version: z.number().int().min(1),
    description: z.string().default(""),
    resources: z
      .object({
        cpus: z.number().positive().max(256),
        memory: size,
        /** The root disk's size (the class image). */
        disk: size.optional(),
        /** Each instance's own data volume (ext4 at /data in the guest), kept across restarts. */
        volume: size.optional(),
      })
      .strict(),
    terminals: z
      .record(z.string().regex(NAME, "terminal names are a-z, 0-9 and -"), terminalSchema)
      .default({}),
    properties: z
      .record(
        z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, "property names are a-z, 0-9, _ and -"),
        propertySchema,
      )
      .default({}),
  })
  .strict();

export type Terminal = z.infer<typeof terminalSchema>;
export type PropertySpec = z.infer<typeof propertySchema>;

export interface ApplianceClass {
  name: string;
  version: number;
  description: string;
  cpus: number;
  memoryMiB: number;
  diskMiB: number;
  /** Each instance's data volume, MiB; 0: none. */
  volumeMiB: number;
  terminals: Record<string, Terminal>;
  properties: Record<string, PropertySpec>;
}

/** `name@version`: how applications name a class. */
export function classRef(c: { name: string; version: number }): string {
  return `${c.name}@${c.version}`;
}

export function zodProblems(
  source: Source,
  error: z.ZodError,
  base: (string | number)[] = [],
): Problem[] {
  return error.issues.map((issue) => {
    const path = [...base, ...issue.path.map((p) => (typeof p === "symbol" ? String(p) : p))];
    let message = issue.message;
    if (issue.code === "unrecognized_keys")
      message = `unknown field ${issue.keys.map((k) => `"${k}"`).join(", ")}`;
    if (issue.code === "invalid_type" && /received undefined/.test(issue.message))
      message = "is required";
    return source.problem(path as (string | number)[], message);
  });
}

/** Parses one class descriptor (YAML); throws DescriptorError with every problem found. */
export function parseClass(file: string, text: string): ApplianceClass {
  const source = new Source(file, text);
  if (source.problems.length) throw new DescriptorError(source.problems);
  const parsed = classSchema.safeParse(source.data);
  if (!parsed.success) throw new DescriptorError(zodProblems(source, parsed.error));
  const c = parsed.data;
  const problems: Problem[] = [];
  for (const [name, p] of Object.entries(c.properties)) {
    if (p.default !== undefined && !typeMatches(p.type, p.default))
      problems.push(source.problem(["properties", name, "default"], `is not of type ${p.type}`));
  }
  if (problems.length) throw new DescriptorError(problems);
  return {
    name: c.name,
    version: c.version,
    description: c.description,
    cpus: c.resources.cpus,
    memoryMiB: parseMiB(c.resources.memory) ?? 0,
    diskMiB: c.resources.disk === undefined ? 0 : (parseMiB(c.resources.disk) ?? 0),
    volumeMiB: c.resources.volume === undefined ? 0 : (parseMiB(c.resources.volume) ?? 0),
    terminals: c.terminals,
    properties: c.properties,
  };
}

export function typeMatches(type: PropertySpec["type"], value: unknown): boolean {
  if (type === "string") return typeof value === "string";
  if (type === "integer") return typeof value === "number" && Number.isInteger(value);
  return typeof value === "boolean";
}

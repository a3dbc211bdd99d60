import { z } from "zod";

/**
 * The declarative service table: what the supervisor runs, in which order, how it
 * restarts a service and how it knows a service is ready. Pure: parsing and checking only.
 */

const restartSchema = z
  .object({
    /** always: restart on any exit; on-failure: not after exit 0; never: run once. */
    policy: z.enum(["always", "on-failure", "never"]).default("always"),
    initialDelayMs: z.number().int().min(0).default(200),
    maxDelayMs: z.number().int().min(0).default(30_000),
    factor: z.number().min(1).default(2),
    /** Give up after this many failures within windowMs... */
    maxFailures: z.number().int().min(1).default(5),
    windowMs: z.number().int().min(1).default(60_000),
    /** ...and a run this long counts as healthy: the delay starts over after it. */
    resetAfterMs: z.number().int().min(0).default(30_000),
  })
  .strict();

const readinessSchema = z.discriminatedUnion("type", [
  /** Ready as soon as the process is running. */
  z.object({ type: z.literal("started") }).strict(),
  /** Ready when a line of its output matches. */
  z.object({ type: z.literal("log"), pattern: z.string().min(1) }).strict(),
  /** Ready when a TCP connect to this port on loopback succeeds. */
  z
    .object({
      type: z.literal("tcp"),
      port: z.number().int().min(1).max(65535),
      host: z.string().default("127.0.0.1"),
    })
    .strict(),
  /** Ready when a file (a socket, a pid file) exists. */
  z.object({ type: z.literal("path"), path: z.string().min(1) }).strict(),
]);

export const serviceSpecSchema = z
  .object({
    name: z
      .string()
      .regex(
        /^[a-z][a-z0-9-]{0,31}$/,
        "must be 1-32 characters of a-z, 0-9 and -, starting with a letter",
      ),
    description: z.string().default(""),
    command: z.array(z.string().min(1)).min(1),
    env: z.record(z.string(), z.string()).default({}),
    cwd: z.string().optional(),
    dependsOn: z.array(z.string()).default([]),
    restart: restartSchema.default(restartSchema.parse({})),
    readiness: readinessSchema.default({ type: "started" }),
    /** How long after a readiness check starts before the service counts as failed. */
    readyTimeoutMs: z.number().int().min(1).default(30_000),
    /** Time between SIGTERM and SIGKILL when stopping. */
    stopTimeoutMs: z.number().int().min(0).default(10_000),
    /** json: our own services log one JSON object a line (pino); text: anything else. */
    logFormat: z.enum(["json", "text"]).default("text"),
    /** Start with the supervisor; a disabled service is listed and can be started by hand. */
    enabled: z.boolean().default(true),
  })
  .strict();

export type ServiceSpec = z.infer<typeof serviceSpecSchema>;
export type ServiceSpecInput = z.input<typeof serviceSpecSchema>;
export type RestartPolicy = ServiceSpec["restart"];
export type Readiness = ServiceSpec["readiness"];

export const serviceTableSchema = z.object({ services: z.array(z.unknown()) }).strict();

export class ServiceTableError extends Error {
  constructor(
    message: string,
    /** Where the problem is: a file, a service and a field. */
    readonly where: string,
  ) {
    super(`${where}: ${message}`);
    this.name = "ServiceTableError";
  }
}

function describePath(path: PropertyKey[]): string {
  return path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("");
}

/**
 * Checks a whole table: every entry against the schema, names unique, dependencies known
 * and acyclic. `source` names where the table came from, for error messages.
 */
export function parseServiceTable(input: unknown, source: string): ServiceSpec[] {
  const table = serviceTableSchema.safeParse(input);
  if (!table.success) {
    const issue = table.error.issues[0];
    throw new ServiceTableError(
      issue?.message ?? "invalid table",
      `${source}${describePath(issue?.path ?? [])}`,
    );
  }
  const specs: ServiceSpec[] = [];
  table.data.services.forEach((raw, index) => {
    const name =
      typeof raw === "object" &&
      raw !== null &&
      typeof (raw as { name?: unknown }).name === "string"
        ? (raw as { name: string }).name
        : `#${index}`;
    const parsed = serviceSpecSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = describePath(issue?.path ?? []);
      throw new ServiceTableError(
        issue?.message ?? "invalid service",
        `${source}: service ${name}${field ? ` field ${field.slice(1)}` : ""}`,
      );
    }
    specs.push(parsed.data);
  });
  checkServiceGraph(specs, source);
  return specs;
}

export function checkServiceGraph(specs: readonly ServiceSpec[], source: string): void {
  const names = new Set<string>();
  for (const spec of specs) {
    if (names.has(spec.name)) {
      throw new ServiceTableError("is defined twice", `${source}: service ${spec.name}`);
    }
    names.add(spec.name);
  }
  for (const spec of specs) {
    for (const dep of spec.dependsOn) {
      if (!names.has(dep)) {
        throw new ServiceTableError(
          `depends on unknown service "${dep}"`,
          `${source}: service ${spec.name} field dependsOn`,
        );
      }
    }
  }
  startOrder(specs, source);
}

/**
 * Dependency order (Kahn's algorithm, ties broken by table order so the order is stable).
 * A cycle is an error that names the services in it.
 */
export function startOrder(specs: readonly ServiceSpec[], source = "service table"): string[] {
  const pending = new Map(specs.map((s) => [s.name, new Set(s.dependsOn)]));
  const order: string[] = [];
  while (pending.size > 0) {
    const next = [...pending].find(([, deps]) => deps.size === 0);
    if (!next) {
      throw new ServiceTableError(
        `dependency cycle among ${[...pending.keys()].join(", ")}`,
        source,
      );
    }
    const [name] = next;
    pending.delete(name);
    order.push(name);
    for (const deps of pending.values()) deps.delete(name);
  }
  return order;
}

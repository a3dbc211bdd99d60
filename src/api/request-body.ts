import type { IncomingMessage } from "node:http";
import type { z } from "zod";
import { ApiError } from "./api-error.js";

export const MAX_BODY = 1 << 20;

/** The request body as text, at most 1 MiB. */
export async function readBody(req: IncomingMessage): Promise<string> {
  return (await readBytes(req, MAX_BODY)).toString("utf8");
}

/**
 * The request body as JSON checked against `schema`; `shape` names what it should be in
 * the error. An empty body stands for `empty` when one is given, else it is not JSON.
 */
export async function readJson<S extends z.ZodTypeAny>(
  req: IncomingMessage,
  schema: S,
  shape: string,
  empty?: unknown,
): Promise<z.output<S>> {
  let input: unknown;
  try {
    const body = await readBody(req);
    input = empty !== undefined && !body.trim() ? empty : JSON.parse(body);
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError("the request body is not JSON", "bad-request", 400);
  }
  const parsed = schema.safeParse(input);
  if (!parsed.success)
    throw new ApiError(
      `the request body needs ${shape}: ${parsed.error.issues.map((i: z.ZodIssue) => `${i.path.join(".") || "(body)"}: ${i.message}`).join("; ")}`,
      "bad-request",
      400,
    );
  return parsed.data;
}

/** The raw request body, at most `max` bytes (413 beyond). */
export function readBytes(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        const limit = max % (1 << 20) === 0 ? `${max >> 20} MiB` : `${max} bytes`;
        reject(new ApiError(`the request is larger than ${limit}`, "too-large", 413));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

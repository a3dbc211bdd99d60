import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

/** Runs a build tool; a failure throws with the end of its stderr. */
export function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; input?: Buffer; env?: NodeJS.ProcessEnv } = {},
): Buffer {
  const r = spawnSync(cmd, args, { ...options, maxBuffer: 1 << 30 });
  if (r.status !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (${r.status ?? r.signal}): ${r.stderr?.toString().slice(-2000)}`,
    );
  }
  return r.stdout;
}

export function sha256(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

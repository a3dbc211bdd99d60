import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";

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

/** The time every built file carries, so that two builds give the same bytes. */
export const EPOCH = Number(process.env.SOURCE_DATE_EPOCH ?? 1_767_225_600); // 2026-01-01

/** Sets the times of `dir` and everything under it (links included) to `epoch`. */
export function stampTimes(dir: string, epoch = EPOCH): void {
  run("find", [dir, "-exec", "touch", "-h", "-d", `@${epoch}`, "{}", "+"]);
}

/** A gzip-compressed newc cpio of the tree, in sorted order with fixed times. */
export function cpioImage(root: string, file: string, gzipLevel = 6): void {
  stampTimes(root);
  const list = run("find", [".", "-print0"], { cwd: root })
    .toString()
    .split("\0")
    .filter(Boolean)
    .sort();
  const cpio = run("cpio", ["--quiet", "-o", "-H", "newc", "--reproducible", "--null"], {
    cwd: root,
    input: Buffer.from(`${list.join("\0")}\0`),
  });
  writeFileSync(file, run("gzip", ["-n", `-${gzipLevel}`], { input: cpio }));
}

/** Links every busybox applet that no package of the tree provides into /bin. */
export function linkBusyboxApplets(root: string): void {
  const busybox = join(root, "bin/busybox");
  if (!existsSync(busybox)) throw new Error(`busybox is missing from ${root}`);
  const applets = run(busybox, ["--list"]).toString().trim().split("\n");
  const dirs = ["bin", "sbin", "usr/bin", "usr/sbin"];
  for (const applet of applets) {
    if (dirs.some((d) => existsSync(join(root, d, applet)))) continue;
    symlinkSync("busybox", join(root, "bin", applet));
  }
}

import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const GUESTS = fileURLToPath(new URL("../../../native/out/", import.meta.url));

/**
 * A catalog as `npm run catalog` lays it out, whose kernel is the idle test guest; or the
 * mute one, which never says it is ready (a boot that hangs).
 */
export function idleCatalog(dir: string, guest: "idle" | "mute" = "idle"): string {
  mkdirSync(dir, { recursive: true });
  const sha = (f: string) =>
    createHash("sha256")
      .update(readFileSync(join(dir, f)))
      .digest("hex");
  copyFileSync(join(GUESTS, `testguest-${guest}.elf`), join(dir, "vmlinuz"));
  writeFileSync(join(dir, "initrd.img"), "the idle guest needs no initrd\n");
  const classes: Record<string, unknown> = {};
  for (const name of ["base", "web", "lb", "db"]) {
    writeFileSync(join(dir, `${name}.ext4`), Buffer.alloc(64 * 1024, name));
    classes[`${name}@1`] = {
      id: sha(`${name}.ext4`),
      rootfs: `${name}.ext4`,
      sha256: sha(`${name}.ext4`),
      bytes: 64 * 1024,
      kernel: "vmlinuz",
      initrd: "initrd.img",
    };
  }
  writeFileSync(
    join(dir, "manifest.json"),
    JSON.stringify({
      kernel: { version: `testguest-${guest}`, sha256: sha("vmlinuz") },
      initrd: { sha256: sha("initrd.img"), modules: [] },
      classes,
    }),
  );
  return dir;
}

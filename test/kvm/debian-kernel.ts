// A stock Debian cloud kernel for tests, from Debian's packages: downloaded once with
// apt-get into /var/cache/flatgrid (outside the repository) and extracted with dpkg-deb.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";

const CACHE = "/var/cache/flatgrid";

function apt(args: string[], cwd?: string): string {
  return execFileSync(args[0] ?? "", args.slice(1), {
    cwd,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** The versioned kernel package the metapackage points at, e.g. linux-image-6.1.0-56-cloud-amd64. */
function kernelPackage(): string {
  const find = () =>
    /Depends: (linux-image-[0-9][^\s]*-cloud-amd64)\b/.exec(
      apt(["apt-cache", "depends", "linux-image-cloud-amd64"]),
    )?.[1];
  let name: string | undefined;
  try {
    name = find();
  } catch {
    name = undefined;
  }
  if (!name) {
    // A machine whose package lists were never fetched knows no kernels yet.
    apt(["apt-get", "update", "-qq"]);
    name = find();
  }
  if (!name) throw new Error("apt-cache knows no linux-image-*-cloud-amd64 package");
  return name;
}

/** Path of the Debian cloud kernel's vmlinuz (a bzImage). */
export function debianCloudKernel(): string {
  const pkg = kernelPackage();
  const extracted = join(CACHE, "extract", pkg);
  const boot = join(extracted, "boot");
  if (!existsSync(boot)) {
    const debs = join(CACHE, "debs");
    mkdirSync(debs, { recursive: true });
    let deb = readdirSync(debs).find((f) => f.startsWith(`${pkg}_`) && f.endsWith(".deb"));
    if (!deb) {
      apt(["apt-get", "download", "-qq", pkg], debs);
      deb = readdirSync(debs).find((f) => f.startsWith(`${pkg}_`) && f.endsWith(".deb"));
    }
    if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${debs}`);
    mkdirSync(extracted, { recursive: true });
    apt(["dpkg-deb", "-x", join(debs, deb), extracted]);
  }
  const vmlinuz = readdirSync(boot).find((f) => f.startsWith("vmlinuz-"));
  if (!vmlinuz) throw new Error(`${pkg} has no vmlinuz`);
  return join(boot, vmlinuz);
}

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";

/**
 * Debian packages for the image and the tests: fetched once with apt-get into
 * /var/cache/flatgrid (outside the repository) and extracted with dpkg-deb.
 */
export const CACHE = "/var/cache/flatgrid";

function run(cmd: string, args: string[], cwd?: string): string {
  return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/**
 * The versioned kernel a metapackage points at: linux-image-cloud-amd64 (the guests' kernel)
 * gives e.g. linux-image-6.1.0-56-cloud-amd64, linux-image-amd64 (the nodes', with the
 * drivers of real servers) linux-image-6.1.0-56-amd64.
 */
export function kernelPackage(flavour: "cloud-amd64" | "amd64"): string {
  const meta = `linux-image-${flavour}`;
  const pattern = new RegExp(`Depends: (linux-image-[0-9][^\\s]*-${flavour})\\b`);
  const find = () => {
    try {
      return pattern.exec(run("apt-cache", ["depends", meta]))?.[1];
    } catch {
      return undefined;
    }
  };
  let name = find();
  if (!name) {
    // A machine whose package lists were never fetched knows no kernels yet.
    run("apt-get", ["update", "-qq"]);
    name = find();
  }
  if (!name) throw new Error(`apt-cache knows no package that ${meta} depends on`);
  return name;
}

/** Path of the package's .deb in the cache, downloading it the first time. */
export function debianDeb(pkg: string): string {
  const debs = join(CACHE, "debs");
  mkdirSync(debs, { recursive: true });
  const find = () => readdirSync(debs).find((f) => f.startsWith(`${pkg}_`) && f.endsWith(".deb"));
  if (!find()) run("apt-get", ["download", "-qq", pkg], debs);
  const deb = find();
  if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${debs}`);
  return join(debs, deb);
}

/** Directory holding the package's files, extracted once. */
export function debianExtract(pkg: string): string {
  const dir = join(CACHE, "extract", pkg);
  if (!existsSync(dir)) {
    const deb = debianDeb(pkg);
    mkdirSync(dir, { recursive: true });
    run("dpkg-deb", ["-x", deb, dir]);
  }
  return dir;
}

/** A Debian kernel's vmlinuz (a bzImage), version and extracted package tree. */
export function debianKernel(flavour: "cloud-amd64" | "amd64"): {
  path: string;
  version: string;
  tree: string;
} {
  const tree = debianExtract(kernelPackage(flavour));
  const vmlinuz = readdirSync(join(tree, "boot")).find((f) => f.startsWith("vmlinuz-"));
  if (!vmlinuz) throw new Error(`${tree} has no boot/vmlinuz-*`);
  return { path: join(tree, "boot", vmlinuz), version: vmlinuz.slice("vmlinuz-".length), tree };
}

/** The guests' kernel: Debian's cloud kernel (virtio, boots fast, few modules). */
export function debianCloudKernel(): { path: string; version: string; tree: string } {
  return debianKernel("cloud-amd64");
}

// A stock Debian cloud kernel for tests, from Debian's packages (see image/debian.ts).
import { debianCloudKernel as kernel } from "../../image/debian.js";

/** Path of the Debian cloud kernel's vmlinuz (a bzImage). */
export function debianCloudKernel(): string {
  return kernel().path;
}

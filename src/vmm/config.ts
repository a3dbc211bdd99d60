import { readFileSync } from "node:fs";
import { z } from "zod";
import { MAX_GUEST_CID, MIN_GUEST_CID } from "./devices/virtio-vsock.js";
import type { VmConfig } from "./vm.js";

/** vm.json, the file `flatgrid vmm --config` reads: one VM, checked before anything starts. */
export const vmConfigSchema = z
  .object({
    memoryMiB: z
      .number()
      .int()
      .min(8)
      .max(1024 * 1024),
    vcpus: z.number().int().min(1).max(64).default(1),
    kernel: z.string().min(1),
    cmdline: z.string().max(4096).optional(),
    initrd: z.string().min(1).optional(),
    disks: z
      .array(
        z
          .object({
            path: z.string().min(1),
            readOnly: z.boolean().default(false),
            id: z.string().max(20).optional(),
          })
          .strict(),
      )
      .max(8)
      .default([]),
    nics: z
      .array(
        z
          .object({
            tap: z.string().max(15),
            mac: z
              .string()
              .regex(
                /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/,
                "must be a MAC address like 02:00:00:00:00:01",
              )
              .optional(),
            vhost: z.boolean().default(true),
          })
          .strict(),
      )
      .max(4)
      .default([]),
    debugExit: z.boolean().default(false),
    rng: z.boolean().default(true),
    vsock: z
      .object({ cid: z.number().int().min(MIN_GUEST_CID).max(MAX_GUEST_CID) })
      .strict()
      .optional(),
    hugepages: z.boolean().default(false),
  })
  .strict();

export class VmConfigFileError extends Error {
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "VmConfigFileError";
  }
}

export function loadVmConfig(file: string): VmConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new VmConfigFileError(
      file,
      (err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new VmConfigFileError(file, `not valid JSON: ${(err as Error).message}`);
  }
  const parsed = vmConfigSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = (issue?.path ?? [])
      .map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`))
      .join("")
      .slice(1);
    throw new VmConfigFileError(file, `field ${field || "(top)"}: ${issue?.message ?? "invalid"}`);
  }
  return parsed.data;
}

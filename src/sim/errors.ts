/** Why a simulator command failed; the CLI prints `code` with --json. */
export type SimErrorCode =
  | "no-image"
  | "already-up"
  | "not-up"
  | "no-such-node"
  | "bad-option"
  | "not-supported"
  | "host"
  | "qemu"
  | "not-ready"
  | "shell"
  | "wedged";

export class SimError extends Error {
  constructor(
    message: string,
    readonly code: SimErrorCode,
  ) {
    super(message);
    this.name = "SimError";
  }
}

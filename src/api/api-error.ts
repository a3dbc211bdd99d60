import type { Problem } from "../model/index.js";

/**
 * An API failure with an HTTP status and a stable code: the code is what scripts test, the
 * message what people read. Codes in use: bad-request, too-large, not-found, unauthorized,
 * not-member, no-quorum, unreachable, no-such-app, app-exists, invalid-descriptor,
 * no-such-instance, not-placed, not-here, not-running, node-unreachable, no-such-token,
 * too-many-tokens, conflict, internal.
 */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly status: number,
    /** A descriptor's problems, each with its file, line and field. */
    readonly problems?: Problem[],
  ) {
    super(message);
  }
}

/** The JSON body of a failure: `{"error": {code, message, problems?}}`. */
export function errorBody(err: unknown): { status: number; body: unknown } {
  const e =
    err instanceof ApiError
      ? err
      : new ApiError(err instanceof Error ? err.message : String(err), "internal", 500);
  return {
    status: e.status,
    body: { error: { code: e.code, message: e.message, problems: e.problems } },
  };
}

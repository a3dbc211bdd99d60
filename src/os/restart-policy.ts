import type { RestartPolicy } from "./service-spec.js";

export type RestartDecision =
  | { action: "restart"; delayMs: number; failuresInWindow: number }
  | { action: "stay-stopped"; reason: string }
  | { action: "give-up"; reason: string };

export interface ExitFacts {
  /** Exit code, or null when a signal ended it (or it never started). */
  code: number | null;
  signal: string | null;
  /** How long this run lasted. */
  ranMs: number;
  /** Wall-clock time of the exit. */
  at: number;
}

/**
 * Exponential backoff with a cap, and a circuit breaker: after maxFailures failures within
 * windowMs the service is given up on and reported, rather than restarted forever.
 * Pure: the caller supplies the clock through ExitFacts.at.
 */
export class RestartTracker {
  private failures: number[] = [];
  private consecutive = 0;

  constructor(private readonly policy: RestartPolicy) {}

  onExit(exit: ExitFacts): RestartDecision {
    const failed = exit.code !== 0;
    if (this.policy.policy === "never") {
      return { action: "stay-stopped", reason: "restart policy is never" };
    }
    if (!failed && this.policy.policy === "on-failure") {
      return { action: "stay-stopped", reason: "exited successfully" };
    }
    if (exit.ranMs >= this.policy.resetAfterMs) this.consecutive = 0;
    if (failed) {
      this.failures = this.failures.filter((t) => exit.at - t < this.policy.windowMs);
      this.failures.push(exit.at);
      if (this.failures.length >= this.policy.maxFailures) {
        return {
          action: "give-up",
          reason: `failed ${this.failures.length} times within ${formatMs(this.policy.windowMs)}`,
        };
      }
    }
    const delayMs = Math.min(
      this.policy.maxDelayMs,
      Math.round(this.policy.initialDelayMs * this.policy.factor ** this.consecutive),
    );
    this.consecutive += 1;
    return { action: "restart", delayMs, failuresInWindow: this.failures.length };
  }

  /** A manual restart or start clears the history: the operator asked for a fresh try. */
  reset(): void {
    this.failures = [];
    this.consecutive = 0;
  }
}

export function formatMs(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120_000) return `${+(ms / 1000).toFixed(1)} s`;
  return `${+(ms / 60_000).toFixed(1)} min`;
}

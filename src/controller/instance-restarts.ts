/**
 * What the reconciler does with a crashed instance: restart it on the same node after a
 * growing delay, and after 3 failures within 24 hours leave it stopped and raise an alert
 * (a crash loop on one node is a problem to look at, not to hide). Pure: the failure times
 * come from the instance's observed state in etcd.
 */
export const MAX_FAILURES = 3;
export const WINDOW_MS = 24 * 60 * 60 * 1000;
const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 60_000;

export type RestartDecision =
  | { action: "restart"; atMs: number; attempt: number }
  | { action: "give-up"; alert: string };

/** `failures`: times (ms) the instance failed, any order; the last one just happened. */
export function onInstanceFailure(
  instance: string,
  failures: readonly number[],
  now: number,
): RestartDecision {
  const recent = failures.filter((t) => now - t < WINDOW_MS).sort((a, b) => a - b);
  if (recent.length >= MAX_FAILURES) {
    const first = new Date(recent[0] ?? now).toISOString();
    return {
      action: "give-up",
      alert: `instance ${instance} failed ${recent.length} times since ${first}: left stopped; restart it by hand once the cause is fixed`,
    };
  }
  const attempt = recent.length;
  const delay = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 4 ** Math.max(0, attempt - 1));
  return { action: "restart", atMs: (recent.at(-1) ?? now) + delay, attempt };
}

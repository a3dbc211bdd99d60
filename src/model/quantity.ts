/** Sizes as people write them: "512MiB", "4GiB", "1.5 GiB", "2048" (MiB). Pure. */
const UNITS: Record<string, number> = {
  mib: 1,
  m: 1,
  mb: 1,
  gib: 1024,
  g: 1024,
  gb: 1024,
  tib: 1024 * 1024,
  t: 1024 * 1024,
};

/** MiB, or null when the text is not a size. */
export function parseMiB(value: unknown): number | null {
  if (typeof value === "number") return Number.isFinite(value) && value > 0 ? value : null;
  if (typeof value !== "string") return null;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  if (!m) return null;
  const unit = UNITS[(m[2] ?? "").toLowerCase() || "mib"];
  if (unit === undefined) return null;
  const mib = Number(m[1]) * unit;
  return mib > 0 ? Math.round(mib) : null;
}

export function formatMiB(mib: number): string {
  return mib >= 1024 && mib % 1024 === 0
    ? `${mib / 1024} GiB`
    : mib >= 1024
      ? `${(mib / 1024).toFixed(1)} GiB`
      : `${mib} MiB`;
}

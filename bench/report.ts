/**
 * One JSON line per measurement (see DESIGN.md, Benchmarks): bench, metric, value, unit, and
 * where there is one, the baseline measured in the same run and the ratio; where the issue
 * sets a target, the target and whether it was met.
 */
export interface Measurement {
  bench: string;
  metric: string;
  value: number;
  unit: string;
  baseline?: string;
  baseline_value?: number;
  target?: number;
  /** A target set as a ratio to the baseline (ours / theirs), as the issues set them. */
  target_ratio?: number;
  /** Throughputs: more is better, so the target ratio is a floor, not a ceiling. */
  higher_is_better?: boolean;
  /**
   * Where the bench runs both sides once per round (in alternating order): ours / theirs of
   * each round. Their spread says how far the ratio of medians can be trusted.
   */
  round_ratios?: number[];
  note?: string;
}

export function report(m: Measurement): void {
  const line: Record<string, unknown> = { ...m, value: round(m.value) };
  if (m.baseline_value !== undefined) {
    line.baseline_value = round(m.baseline_value);
    line.ratio = round(m.value / m.baseline_value, 3);
  }
  if (m.round_ratios) line.round_ratios = m.round_ratios.map((r) => round(r, 3));
  if (m.target !== undefined) line.met = m.value <= m.target;
  if (m.target_ratio !== undefined && m.baseline_value !== undefined) {
    const ratio = m.value / m.baseline_value;
    line.met = m.higher_is_better ? ratio >= m.target_ratio : ratio <= m.target_ratio;
  }
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

export function progress(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}

/** One decimal, or three significant digits for small values (0.0123 Gbit/s is not 0). */
function round(v: number, digits = 1): number {
  if (Math.abs(v) < 10 && v !== 0)
    digits = Math.max(digits, 2 - Math.floor(Math.log10(Math.abs(v))));
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

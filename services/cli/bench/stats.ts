/** Latency and rate arithmetic for the bench (pure). */

/** Nearest-rank percentile (p in [0, 100]) of unsorted samples; 0 for none. */
export function percentile(samples: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile: p must be in [0, 100], got ${p}`);
  if (samples.length === 0) return 0;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1] as number;
}

export interface LatencyPercentiles {
  samples: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
}

export function latencyPercentiles(samplesMs: readonly number[]): LatencyPercentiles {
  const n = samplesMs.length;
  return {
    samples: n,
    p50Ms: percentile(samplesMs, 50),
    p95Ms: percentile(samplesMs, 95),
    p99Ms: percentile(samplesMs, 99),
    maxMs: n === 0 ? 0 : Math.max(...samplesMs),
    meanMs: n === 0 ? 0 : samplesMs.reduce((a, b) => a + b, 0) / n,
  };
}

/** Gigabytes (1e9 bytes) per second; 0 when no time passed. */
export function gbps(bytes: number, ms: number): number {
  return ms > 0 ? bytes / (ms / 1000) / 1e9 : 0;
}

/** a / b, or null when b is 0 (a ratio against nothing is not a number to print). */
export function ratio(a: number, b: number): number | null {
  return b > 0 ? a / b : null;
}

/** Round to `digits` significant decimals for reports (keeps small numbers readable). */
export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const scale = 10 ** Math.max(0, digits - 1 - Math.floor(Math.log10(Math.abs(x))));
  return Math.round(x * scale) / scale;
}

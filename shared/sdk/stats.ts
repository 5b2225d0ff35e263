/**
 * Client-side statistics: counters and latency percentiles over a bounded window. Pure.
 *
 * Latencies are kept in a ring buffer of the most recent `samplesMax` samples per operation, so
 * memory is bounded and the percentiles describe recent behaviour (a worker that ran for a day
 * reports how it does now, not a day's average). Percentiles use the nearest-rank method: the
 * p-th percentile of n sorted samples is sample ceil(p/100 * n) (1-based), an observed value.
 */

/** Nearest-rank percentile of unsorted samples; NaN for no samples. p in (0, 100]. */
export function percentile(samples: ArrayLike<number>, p: number): number {
  if (!(p > 0 && p <= 100)) throw new RangeError(`percentile must be in (0, 100], got ${p}`);
  const n = samples.length;
  if (n === 0) return Number.NaN;
  const sorted = Float64Array.from(samples).sort();
  const rank = Math.ceil((p / 100) * n);
  return sorted[Math.min(n, Math.max(1, rank)) - 1] as number;
}

export interface LatencySummary {
  /** Samples in the window (at most samplesMax). */
  samples: number;
  /** Samples ever recorded. */
  count: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
}

/** A fixed-size ring of the most recent latency samples. */
export class LatencyWindow {
  private readonly ring: Float64Array;
  private next = 0;
  private filled = 0;
  private total = 0;

  constructor(readonly samplesMax: number) {
    if (!Number.isSafeInteger(samplesMax) || samplesMax < 1) {
      throw new RangeError(`samplesMax must be a positive integer, got ${samplesMax}`);
    }
    this.ring = new Float64Array(samplesMax);
  }

  record(ms: number): void {
    this.ring[this.next] = ms;
    this.next = (this.next + 1) % this.samplesMax;
    if (this.filled < this.samplesMax) this.filled++;
    this.total++;
  }

  summary(): LatencySummary {
    const window = this.ring.subarray(0, this.filled);
    let max = Number.NaN;
    let sum = 0;
    for (const v of window) {
      sum += v;
      if (!(v <= max)) max = v;
    }
    return {
      samples: this.filled,
      count: this.total,
      p50Ms: percentile(window, 50),
      p95Ms: percentile(window, 95),
      p99Ms: percentile(window, 99),
      maxMs: max,
      meanMs: this.filled === 0 ? Number.NaN : sum / this.filled,
    };
  }
}

export interface ClientStats {
  lookups: {
    /** lookup() and lookupDetailed() calls. */
    count: number;
    requestedTokens: number;
    hitTokens: number;
    /** hitTokens / requestedTokens (0 when nothing was requested). */
    hitRate: number;
    /** Lookups answered in degraded mode (Redis unreachable). */
    degraded: number;
  };
  gets: {
    count: number;
    /** Tokens the gets asked for (the whole prompts, partial last chunks included). */
    requestedTokens: number;
    /** Tokens the index claimed before the transfer (what lookup would have said). */
    indexedTokens: number;
    /** Tokens actually filled: the returned hit lengths, summed. */
    hitTokens: number;
    /** hitTokens / requestedTokens (0 when nothing was requested). */
    hitRate: number;
    /** Bytes moved over UCX into targets and verified. */
    bytes: number;
    /** Blocks the index claimed that did not arrive intact (vanished, refused, failed, corrupt). */
    shortenedBlocks: number;
    checksumFailures: number;
    /** Times a block moved on to another copy (node down, refusal, miss, corruption, late). */
    failovers: number;
    /** Blocks rejected because their read finished past the read lease. */
    lateBlocks: number;
    /** Gets that ran while the index was unreachable. */
    degraded: number;
    latency: LatencySummary;
  };
  puts: {
    count: number;
    chunksStored: number;
    chunksPresent: number;
    tokensIndexed: number;
    /** Bytes written over UCX and committed. */
    bytes: number;
    /** Puts whose commit reported replicas that did not confirm (see PutResult.outOfSync). */
    underReplicated: number;
    /** Puts whose index write failed (data stored, not findable yet). */
    indexDegraded: number;
    latency: LatencySummary;
  };
  /** Shard requests refused with STALE_EPOCH / NOT_OWNER (each followed by a placement refresh). */
  staleRetries: number;
}

const ratio = (a: number, b: number): number => (b === 0 ? 0 : a / b);

/** Mutable counters behind KvfClient.stats(). */
export class StatsRecorder {
  lookupCount = 0;
  lookupRequestedTokens = 0;
  lookupHitTokens = 0;
  lookupDegraded = 0;
  getCount = 0;
  getRequestedTokens = 0;
  getIndexedTokens = 0;
  getHitTokens = 0;
  getBytes = 0;
  getShortenedBlocks = 0;
  checksumFailures = 0;
  failovers = 0;
  lateBlocks = 0;
  getDegraded = 0;
  putUnderReplicated = 0;
  putIndexDegraded = 0;
  putCount = 0;
  chunksStored = 0;
  chunksPresent = 0;
  tokensIndexed = 0;
  putBytes = 0;
  staleRetries = 0;
  readonly getLatency: LatencyWindow;
  readonly putLatency: LatencyWindow;

  constructor(samplesMax: number) {
    this.getLatency = new LatencyWindow(samplesMax);
    this.putLatency = new LatencyWindow(samplesMax);
  }

  snapshot(): ClientStats {
    return {
      lookups: {
        count: this.lookupCount,
        requestedTokens: this.lookupRequestedTokens,
        hitTokens: this.lookupHitTokens,
        hitRate: ratio(this.lookupHitTokens, this.lookupRequestedTokens),
        degraded: this.lookupDegraded,
      },
      gets: {
        count: this.getCount,
        requestedTokens: this.getRequestedTokens,
        indexedTokens: this.getIndexedTokens,
        hitTokens: this.getHitTokens,
        hitRate: ratio(this.getHitTokens, this.getRequestedTokens),
        bytes: this.getBytes,
        shortenedBlocks: this.getShortenedBlocks,
        checksumFailures: this.checksumFailures,
        failovers: this.failovers,
        lateBlocks: this.lateBlocks,
        degraded: this.getDegraded,
        latency: this.getLatency.summary(),
      },
      puts: {
        count: this.putCount,
        chunksStored: this.chunksStored,
        chunksPresent: this.chunksPresent,
        tokensIndexed: this.tokensIndexed,
        bytes: this.putBytes,
        underReplicated: this.putUnderReplicated,
        indexDegraded: this.putIndexDegraded,
        latency: this.putLatency.summary(),
      },
      staleRetries: this.staleRetries,
    };
  }
}

/**
 * The metrics contract of docs/operations.md ("Metrics"), one prom-client registry per process.
 * Names follow vLLM's (`prefix_cache_queries_total` / `_hits_total`) with a `kvfabric_` prefix so
 * existing hit-rate dashboards carry over; cluster-config/grafana-dashboard.json reads them.
 *
 * Two ways a number gets here:
 * - Direct: code that sees an event increments a tally (`tally('evictions', 3, 'capacity')`) or
 *   observes a histogram.
 * - Sources: a component that already keeps cumulative counters (the SDK's stats(), a shard
 *   node's request counters) registers a function read at scrape time (`addSource`).
 * A counter's value is its direct tally plus every source's value, computed at scrape time, so
 * the two never double count or reset each other.
 *
 * Labels never carry a namespace (tenant), a chunk hash or anything derived from a prompt: the
 * only labels are `direction`, `model` and `reason` (docs/security.md).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Histogram buckets in seconds (the contract's list). */
export const LATENCY_BUCKETS_S = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

export const METRIC_NAMES = {
  queries: 'kvfabric_prefix_cache_queries_total',
  hits: 'kvfabric_prefix_cache_hits_total',
  bytes: 'kvfabric_bytes_transferred_total',
  blocks: 'kvfabric_blocks_transferred_total',
  getLatency: 'kvfabric_get_latency_seconds',
  putLatency: 'kvfabric_put_latency_seconds',
  arenaUsed: 'kvfabric_arena_used_bytes',
  arenaCapacity: 'kvfabric_arena_capacity_bytes',
  evictions: 'kvfabric_evictions_total',
  checksumFailures: 'kvfabric_checksum_failures_total',
  failovers: 'kvfabric_failovers_total',
  placementEpoch: 'kvfabric_placement_epoch',
} as const;

export type Direction = 'get' | 'put' | 'replicate';
export type EvictionReason = 'capacity' | 'ttl';

/** Counter name -> label value ('' for unlabelled counters) -> value. */
export type CounterValues = Partial<Record<CounterKey, Record<string, number>>>;
export type CounterKey =
  'queries' | 'hits' | 'bytes' | 'blocks' | 'evictions' | 'checksumFailures' | 'failovers';

/** A cumulative source read at scrape time: counters it owns, and gauges it knows. */
export interface MetricsSource {
  counters?(): CounterValues;
  /** Per model: arena bytes used and capacity. */
  arenas?(): readonly { model: string; usedBytes: number; capacityBytes: number }[];
  /** Placement epoch this component last saw; undefined = unknown. */
  placementEpoch?(): number | undefined;
}

const COUNTER_DEFS: Record<
  CounterKey,
  { name: string; help: string; label?: string; labelValues?: string[] }
> = {
  queries: { name: METRIC_NAMES.queries, help: 'Prompt tokens looked up (SDK).' },
  hits: { name: METRIC_NAMES.hits, help: 'Prompt tokens found cached (SDK); hit rate = hits / queries.' },
  bytes: {
    name: METRIC_NAMES.bytes,
    help: 'Bytes moved over UCX.',
    label: 'direction',
    labelValues: ['get', 'put', 'replicate'],
  },
  blocks: {
    name: METRIC_NAMES.blocks,
    help: 'Blocks moved over UCX.',
    label: 'direction',
    labelValues: ['get', 'put', 'replicate'],
  },
  evictions: {
    name: METRIC_NAMES.evictions,
    help: 'Blocks evicted by a shard node.',
    label: 'reason',
    labelValues: ['capacity', 'ttl'],
  },
  checksumFailures: {
    name: METRIC_NAMES.checksumFailures,
    help: 'Blocks whose checksum did not match (reader or replica).',
  },
  failovers: { name: METRIC_NAMES.failovers, help: 'Replicas promoted to primary (leader coordinator).' },
};

export interface MetricsOptions {
  /** Export prom-client's default process_* and nodejs_* metrics too. @default true */
  processMetrics?: boolean;
}

export class KvfMetrics {
  readonly registry = new Registry();
  readonly getLatency: Histogram;
  readonly putLatency: Histogram;
  private readonly tallies = new Map<CounterKey, Map<string, number>>();
  private readonly sources = new Set<MetricsSource>();
  private directEpoch: number | undefined;

  constructor(opts: MetricsOptions = {}) {
    const registers = [this.registry];
    for (const [key, def] of Object.entries(COUNTER_DEFS) as [
      CounterKey,
      (typeof COUNTER_DEFS)[CounterKey],
    ][]) {
      this.tallies.set(key, new Map());
      const values = (): Map<string, number> => this.counterValues(key, def.labelValues);
      if (def.label !== undefined) {
        const label = def.label;
        new Counter({
          name: def.name,
          help: def.help,
          labelNames: [label],
          registers,
          collect(this: Counter<string>) {
            this.reset();
            for (const [v, n] of values()) this.inc({ [label]: v }, n);
          },
        });
      } else {
        new Counter({
          name: def.name,
          help: def.help,
          registers,
          collect(this: Counter<string>) {
            this.reset();
            this.inc(values().get('') ?? 0);
          },
        });
      }
    }
    const histogram = (name: string, help: string): Histogram =>
      new Histogram({ name, help, buckets: LATENCY_BUCKETS_S, registers });
    this.getLatency = histogram(
      METRIC_NAMES.getLatency,
      'One get() end to end (lookup, locate, transfer, verify), seconds.',
    );
    this.putLatency = histogram(
      METRIC_NAMES.putLatency,
      'One put() end to end (allocate, transfer, commit, index), seconds.',
    );
    const arenas = (): Map<string, { used: number; capacity: number }> => this.arenaValues();
    new Gauge({
      name: METRIC_NAMES.arenaUsed,
      help: "Bytes of allocated blocks in a shard node's arenas.",
      labelNames: ['model'],
      registers,
      collect(this: Gauge<string>) {
        this.reset();
        for (const [model, a] of arenas()) this.set({ model }, a.used);
      },
    });
    new Gauge({
      name: METRIC_NAMES.arenaCapacity,
      help: "Bytes of a shard node's arenas.",
      labelNames: ['model'],
      registers,
      collect(this: Gauge<string>) {
        this.reset();
        for (const [model, a] of arenas()) this.set({ model }, a.capacity);
      },
    });
    const epoch = (): number | undefined => this.epochValue();
    new Gauge({
      name: METRIC_NAMES.placementEpoch,
      help: 'Placement epoch this process last saw.',
      registers,
      collect(this: Gauge<string>) {
        this.reset();
        const e = epoch();
        if (e !== undefined) this.set(e);
      },
    });
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Add `n` to a counter (label: direction or reason where the counter has one). */
  tally(key: CounterKey, n: number, label = ''): void {
    if (!(n > 0)) return;
    const m = this.tallies.get(key) as Map<string, number>;
    m.set(label, (m.get(label) ?? 0) + n);
  }

  /** Read this source at every scrape until the returned function is called. */
  addSource(source: MetricsSource): () => void {
    this.sources.add(source);
    return () => this.sources.delete(source);
  }

  setPlacementEpoch(epoch: number): void {
    this.directEpoch = epoch;
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  private counterValues(key: CounterKey, labelValues: string[] | undefined): Map<string, number> {
    const out = new Map<string, number>();
    // Every known label value shows up (as 0) so dashboards' rate() has a series from the start.
    for (const v of labelValues ?? ['']) out.set(v, 0);
    const add = (label: string, n: number): void => {
      if (Number.isFinite(n) && n > 0) out.set(label, (out.get(label) ?? 0) + n);
    };
    for (const [label, n] of this.tallies.get(key) ?? []) add(label, n);
    for (const s of this.sources) {
      const values = s.counters?.()[key];
      for (const [label, n] of Object.entries(values ?? {})) add(label, n);
    }
    return out;
  }

  private arenaValues(): Map<string, { used: number; capacity: number }> {
    const out = new Map<string, { used: number; capacity: number }>();
    for (const s of this.sources) {
      for (const a of s.arenas?.() ?? []) {
        const cur = out.get(a.model) ?? { used: 0, capacity: 0 };
        out.set(a.model, { used: cur.used + a.usedBytes, capacity: cur.capacity + a.capacityBytes });
      }
    }
    return out;
  }

  private epochValue(): number | undefined {
    let e = this.directEpoch;
    for (const s of this.sources) {
      const v = s.placementEpoch?.();
      if (v !== undefined && (e === undefined || v > e)) e = v;
    }
    return e;
  }
}

export function createMetrics(opts: MetricsOptions = {}): KvfMetrics {
  return new KvfMetrics(opts);
}

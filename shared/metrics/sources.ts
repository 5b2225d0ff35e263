/**
 * Where each actor's metrics come from, read at scrape time (registry.ts `addSource`) so the
 * actors keep their own counters and need no metrics code on their hot paths:
 *
 * - shardNodeSource: arena used/capacity per model and the placement epoch of a shard node.
 * - clientSource + instrumentClient: the SDK's stats() (tokens queried and hit, bytes moved,
 *   checksum failures) and get/put latency histograms (a wrapper around the client instance).
 * - placementPromotions: the leader coordinator counts replicas promoted to primary by comparing
 *   consecutive placement tables it wrote.
 *
 * Shapes are structural (no import of services/): shared code never depends on an actor.
 */
import type { PlacementTable } from '../protocol/cluster.js';
import type { CounterValues, KvfMetrics, MetricsSource } from './registry.js';

/** What a shard node exposes that metrics read (services/shard-node/shard-node.ts ShardNode). */
export interface ShardNodeView {
  readonly models: ReadonlyMap<
    string,
    {
      readonly slotBytes: number;
      capacityBytes(): number;
      readonly store: { stats(): { capacitySlots: number; freeSlots: number } };
    }
  >;
  readonly placement?: { epoch(): number } | undefined;
}

export function shardNodeSource(node: ShardNodeView): MetricsSource {
  return {
    arenas: () =>
      [...node.models].map(([model, m]) => {
        const st = m.store.stats();
        return {
          model,
          usedBytes: (st.capacitySlots - st.freeSlots) * m.slotBytes,
          capacityBytes: m.capacityBytes(),
        };
      }),
    placementEpoch: () => {
      const e = node.placement?.epoch();
      return e === undefined || e === 0 ? undefined : e;
    },
  };
}

/** The part of ClientStats (shared/sdk/stats.ts) metrics read. */
export interface ClientStatsView {
  lookups: { requestedTokens: number; hitTokens: number };
  gets: { requestedTokens: number; hitTokens: number; bytes: number; checksumFailures: number };
  puts: { bytes: number };
}

/** Blocks are counted by the instrumented calls (stats() has no block counts). */
interface BlockTally {
  get: number;
  put: number;
}

/**
 * Tokens queried are every lookup's and every get's prompt tokens (a get does its own lookup),
 * hits the tokens they found cached: hits / queries is the hit rate, as in vLLM.
 */
export function clientSource(client: { stats(): ClientStatsView }, blocks?: BlockTally): MetricsSource {
  return {
    counters: (): CounterValues => {
      const s = client.stats();
      return {
        queries: { '': s.lookups.requestedTokens + s.gets.requestedTokens },
        hits: { '': s.lookups.hitTokens + s.gets.hitTokens },
        bytes: { get: s.gets.bytes, put: s.puts.bytes },
        blocks: { get: blocks?.get ?? 0, put: blocks?.put ?? 0 },
        checksumFailures: { '': s.gets.checksumFailures },
      };
    },
  };
}

/** The client methods instrumentClient wraps (shared/sdk/client.ts KvfClient). */
export interface InstrumentableClient {
  stats(): ClientStatsView;
  getDetailed(...args: never[]): Promise<{ chunks: number }>;
  put(...args: never[]): Promise<{ chunksStored: number }>;
  layout(model?: string): Promise<{ groups: readonly unknown[] }>;
}

/**
 * Expose a client's counters through `metrics` and time its get/put calls (get() and the
 * convenience API go through getDetailed()). Returns a function that undoes it. Blocks are the
 * served chunks x layer groups of the call's model (a get) and the stored chunks x layer groups
 * (a put).
 */
export function instrumentClient(client: InstrumentableClient, metrics: KvfMetrics): () => void {
  const blocks: BlockTally = { get: 0, put: 0 };
  const remove = metrics.addSource(clientSource(client, blocks));
  const target = client as unknown as Record<string, unknown>;
  const origGet = client.getDetailed.bind(client) as (...a: unknown[]) => Promise<{ chunks: number }>;
  const origPut = client.put.bind(client) as (...a: unknown[]) => Promise<{ chunksStored: number }>;
  const groupsOf = async (opts: unknown): Promise<number> => {
    const model = (opts as { model?: string } | undefined)?.model;
    return (await client.layout(model).catch(() => ({ groups: [] }))).groups.length;
  };
  const timed = <R>(
    hist: KvfMetrics['getLatency'],
    fn: () => Promise<R>,
    count: (r: R) => void,
  ): Promise<R> => {
    const end = hist.startTimer();
    return fn().then(
      (r) => {
        end();
        count(r);
        return r;
      },
      (err: unknown) => {
        end();
        throw err;
      },
    );
  };
  target.getDetailed = (...a: unknown[]) =>
    timed(
      metrics.getLatency,
      () => origGet(...a),
      (r) => {
        if (r.chunks > 0) void groupsOf(a[2]).then((g) => (blocks.get += r.chunks * g));
      },
    );
  target.put = (...a: unknown[]) =>
    timed(
      metrics.putLatency,
      () => origPut(...a),
      (r) => {
        if (r.chunksStored > 0) void groupsOf(a[2]).then((g) => (blocks.put += r.chunksStored * g));
      },
    );
  return () => {
    remove();
    delete target.getDetailed;
    delete target.put;
  };
}

/**
 * Cells whose primary changed to a node that was a replica of the cell in the previous table:
 * a replica promoted to primary (its primary left or was declared dead).
 */
export function countPromotions(prev: PlacementTable, next: PlacementTable): number {
  let n = 0;
  for (const [cell, c] of Object.entries(next.cells)) {
    const before = prev.cells[cell]?.replicas;
    const primary = c.replicas[0];
    if (before === undefined || primary === undefined || before[0] === primary) continue;
    if (before.slice(1).includes(primary)) n++;
  }
  return n;
}

/**
 * A placement-table follower for coordinators: the epoch gauge, and promotions counted by the
 * coordinator that wrote the table (`leaderId`), so a cluster's sum counts each promotion once.
 */
export function placementPromotions(
  metrics: KvfMetrics,
  selfId: string,
): { observe(table: PlacementTable): void } {
  let prev: PlacementTable | undefined;
  return {
    observe(table) {
      if (prev !== undefined && table.epoch <= prev.epoch) return;
      metrics.setPlacementEpoch(table.epoch);
      if (prev !== undefined && table.leaderId === selfId) {
        metrics.tally('failovers', countPromotions(prev, table));
      }
      prev = table;
    },
  };
}

/** A shard node's replica/hot-copy pull (services/shard-node/pull.ts): bytes, blocks, bad checksums. */
export function recordPull(
  metrics: Pick<KvfMetrics, 'tally'> | undefined,
  r: { readonly statuses: readonly string[]; readonly bytes: number },
): void {
  if (metrics === undefined) return;
  metrics.tally('bytes', r.bytes, 'replicate');
  metrics.tally('blocks', r.statuses.filter((s) => s === 'stored').length, 'replicate');
  metrics.tally('checksumFailures', r.statuses.filter((s) => s === 'checksum_mismatch').length);
}

/** Evicted blocks by reason (capacity or ttl). */
export function recordEvictions(
  metrics: Pick<KvfMetrics, 'tally'> | undefined,
  blocks: readonly { readonly reason: 'capacity' | 'ttl' }[],
): void {
  if (metrics === undefined) return;
  for (const b of blocks) metrics.tally('evictions', 1, b.reason);
}

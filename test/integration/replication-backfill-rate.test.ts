/**
 * Backfill rate: 1 GiB of acknowledged blocks (llama-3-8b, 8 MiB per layer-group block) on three
 * shard nodes with rf 2; kill -9 one node and measure until every cell has two in-sync copies
 * again. Target (issue 5): the replication factor restored within 30 s for 1 GiB.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useLocalCluster, waitFor } from '../harness/cluster.js';
import { collectEvents, makeBlocks, RawClient } from './replication-helpers.js';

const MODEL = 'llama-3-8b';
const BLOCK = 8 * 1024 ** 2;

describe('backfill rate (1 GiB, real processes)', () => {
  const fx = useLocalCluster({
    shards: 3,
    models: [MODEL],
    heartbeatIntervalMs: 200,
    nodeDeadAfterMs: 1000,
    arenaBytes: 1536 * 1024 ** 2,
    env: { KVFABRIC_SHARD_ARENA_KIND: 'host', KVFABRIC_NATS_REQUEST_TIMEOUT_MS: '20000' },
  });
  let c: RawClient;
  beforeAll(async () => {
    c = await RawClient.open(fx.cluster.natsUrl, MODEL);
    await waitFor('placement', () => Object.keys(c.placement.current()?.members ?? {}).length === 3, 30_000);
  }, 60_000);
  afterAll(async () => {
    await c?.close();
  });

  it('restores rf 2 for 1 GiB within 30 s after a node is killed', async () => {
    const blocks = makeBlocks('gib', 32, 4, 16, () => BLOCK); // 32 chunks x 4 groups x 8 MiB = 1 GiB
    const r = await c.put(blocks, 'all');
    expect(r.committed).toBe(blocks.length);
    const ev = collectEvents(c.nc);
    const victim = fx.cluster.shards[2]!;
    const t0 = performance.now();
    victim.kill('SIGKILL');
    const survivors = ['shard-1', 'shard-2'];
    await waitFor('dead', () => !(victim.nodeId in (c.placement.current()?.members ?? {})), 10_000);
    const tDead = performance.now();
    const deadEpoch = c.placement.current()!.epoch;
    await waitFor(
      'rf restored',
      async () => {
        const st = await Promise.all(survivors.map((n) => c.stats(n)));
        // A survivor still on the table that held the victim reports its old (in-sync) cells.
        return st.every(
          (s) => s.epoch >= deadEpoch && s.replication!.inSyncCells === s.replication!.replicaCells,
        );
      },
      30_000,
    );
    const tDone = performance.now();
    ev.stop();
    const fin = ev.events.filter((e) => e.event === 'backfill_finished');
    const bytes = fin.reduce((a, e) => a + (e.bytes ?? 0), 0);
    const ms = Math.max(...fin.map((e) => e.ms ?? 0));
    console.log(
      `backfill: ${(bytes / 1024 ** 2).toFixed(0)} MiB copied, longest backfill ${ms.toFixed(0)} ms ` +
        `(${(bytes / 1024 ** 2 / (ms / 1000)).toFixed(0)} MiB/s); rf restored ${(tDone - tDead).toFixed(0)} ms after ` +
        `detection, ${(tDone - t0).toFixed(0)} ms after the kill`,
    );
    expect(bytes).toBeGreaterThan(0);
    expect(tDone - t0).toBeLessThan(30_000);
  });
});

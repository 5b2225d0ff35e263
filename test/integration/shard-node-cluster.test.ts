/**
 * Shard nodes as real child processes (`node bin/kvfabric.js shard-node`) with a real coordinator,
 * started by shared/local-cluster.ts: they join, get cells, answer their endpoints and $SRV, a
 * node added later joins the table, and SIGTERM shuts one down cleanly (exit 0, member record
 * deleted).
 */
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuckets, type ClusterBuckets } from '../../shared/cluster/buckets.js';
import { request } from '../../shared/protocol/codec.js';
import { decodeMemberRecord, shardSubject } from '../../shared/protocol/cluster.js';
import { statsReplySchema } from '../../shared/protocol/shard.js';
import { useLocalCluster, waitFor } from '../harness/cluster.js';

describe('local cluster: coordinator and shard nodes as child processes', () => {
  const fx = useLocalCluster({
    shards: 2,
    arenaBytes: 1024 * 1024,
    models: ['tiny-test'],
    partition: { layerGroups: 2, seqBuckets: 4, seqBucketTokens: 64 },
    env: { KVFABRIC_SHARD_ARENA_KIND: 'host', KVFABRIC_LOG_LEVEL: 'info' },
  });
  let nc: NatsConnection;
  let buckets: ClusterBuckets;

  beforeAll(async () => {
    nc = await connect({ servers: fx.cluster.natsUrl });
    buckets = await ensureBuckets(nc);
  });
  afterAll(async () => {
    await nc?.close();
  });

  it('lists every shard node in the placement table and in kvf_members, with UCX regions', async () => {
    const table = await fx.cluster.waitForPlacement(2, 30_000);
    expect(Object.keys(table.members).sort()).toEqual(['shard-1', 'shard-2']);
    // coordinator.replicationFactor defaults to 2 (issue 5): every cell on both nodes, primary first.
    expect(Object.values(table.cells).every((c) => c.replicas.length === 2)).toBe(true);
    for (const id of ['shard-1', 'shard-2']) {
      const rec = decodeMemberRecord((await buckets.members.get(id))!.value);
      expect(rec.capacityBytes).toBe(1024 * 1024);
      expect(Buffer.from(rec.ucxAddress, 'base64').length).toBeGreaterThan(0);
      expect(rec.models['tiny-test']!.blockBytes).toBe(4096);
      const st = await request(nc, shardSubject(id, 'stats'), {}, statsReplySchema, { timeoutMs: 5000 });
      expect(st.nodeId).toBe(id);
      expect(st.epoch).toBe(table.epoch);
      expect(st.arenaKind).toBe('host');
    }
    expect(fx.cluster.config.shard.arenaBytes).toBe(1024 * 1024);
  });

  it('answers $SRV.PING for each shard node', async () => {
    const ids: string[] = [];
    for await (const m of await nc.requestMany('$SRV.PING.kvfabric-shard', new Uint8Array(), {
      maxWait: 500,
    })) {
      ids.push((JSON.parse(new TextDecoder().decode(m.data)) as { id: string }).id);
    }
    expect(ids.sort()).toEqual(['shard-1', 'shard-2']);
  });

  it('adds a shard node that joins the placement table', async () => {
    const h = await fx.cluster.addShard();
    expect(h.nodeId).toBe('shard-3');
    const table = await fx.cluster.waitForPlacement(3, 30_000);
    expect(Object.keys(table.members)).toContain('shard-3');
  });

  it('SIGTERM stops a shard node cleanly: exit 0, member record deleted, the table drops it', async () => {
    const victim = fx.cluster.shards.find((s) => s.nodeId === 'shard-3')!;
    victim.kill('SIGTERM');
    expect(await victim.exited).toBe(0);
    const e = await buckets.members.get('shard-3');
    expect(e === null || e.operation !== 'PUT').toBe(true);
    await waitFor(
      'the placement table to drop shard-3',
      async () => {
        const t = (await buckets.placement.get('table'))!.json<{ members: Record<string, unknown> }>();
        return !Object.hasOwn(t.members, 'shard-3');
      },
      20_000,
    );
    expect(fx.logs.some((l) => l.startsWith('[shard-3] ') && l.includes('shard node stopped'))).toBe(true);
  });
});

/**
 * Worker SDK failure semantics on a real cluster with small arenas: a corrupted block, eviction
 * under capacity pressure, and a placement change seen first as a refused stale epoch. In every
 * case the hit is shortened and never carries wrong bytes.
 */
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UcxWorker } from '../../native/index.js';
import { ensureBuckets, type ClusterBuckets } from '../../shared/cluster/buckets.js';
import { envNameFor } from '../../shared/config.js';
import { cellFor, cellId } from '../../shared/partition.js';
import { BUILTIN_PROFILES } from '../../shared/profiles.js';
import { request } from '../../shared/protocol/codec.js';
import {
  decodeMemberRecord,
  decodePlacementTable,
  PLACEMENT_KEY,
  shardSubject,
  type PlacementTable,
} from '../../shared/protocol/cluster.js';
import { locateReplySchema, releaseReplySchema, statsReplySchema } from '../../shared/protocol/shard.js';
import { connect, type KvfClient, type ModelLayout } from '../../shared/sdk/mod.js';
import { useLocalCluster } from '../harness/cluster.js';
import { expectServed, kvFor, mulberry32, randomTokens, scribble } from './sdk-helpers.js';

const tiny = BUILTIN_PROFILES['tiny-test']!;
const CT = tiny.chunkTokens;
const SEED = Number(process.env.KVF_TEST_SEED ?? Date.now() % 1_000_000);
const SLOT_BYTES = 2 * 2 * tiny.kvHeads * CT * tiny.headDim * 2; // 2 layers per group: 4 KiB
const SLOTS_PER_NODE = 64;

describe(`worker SDK failure semantics (seed ${SEED})`, () => {
  const fx = useLocalCluster({
    shards: 3,
    arenaBytes: SLOTS_PER_NODE * SLOT_BYTES,
    partition: { layerGroups: 2, seqBuckets: 8, seqBucketTokens: 32 },
    // One copy per block: these tests are about what happens when the only copy is corrupt, gone
    // or moved. With replication the SDK reads another copy instead (sdk-replication.test.ts).
    env: { [envNameFor('coordinator.replicationFactor')]: '1' },
  });
  let worker: UcxWorker;
  let kvf: KvfClient;
  let layout: ModelLayout;
  let nc: NatsConnection;
  let buckets: ClusterBuckets;

  const base = () => ({
    natsServers: fx.cluster.natsUrl,
    redisUrl: fx.cluster.redisUrl,
    keyPrefix: fx.cluster.config.redis.keyPrefix,
    model: tiny.id,
  });

  beforeAll(async () => {
    // The test reaches shard memory itself (to corrupt a block), so it owns the process's one
    // UCX worker and lends it to the SDK.
    worker = UcxWorker.create();
    kvf = await connect({ ...base(), ucx: { worker } });
    layout = await kvf.layout();
    nc = await natsConnect({ servers: fx.cluster.natsUrl });
    buckets = await ensureBuckets(nc);
  });
  afterAll(async () => {
    await kvf?.close();
    await nc?.close();
    await worker?.close();
  });

  async function table(): Promise<PlacementTable> {
    const e = await buckets.placement.get(PLACEMENT_KEY);
    return decodePlacementTable(e!.value);
  }

  async function getChecked(c: KvfClient, tokens: number[]): Promise<number> {
    const target = await c.allocKv(tokens.length);
    scribble(target);
    const hit = await c.get(tokens, target);
    if (hit > 0) expectServed(target, kvFor(tokens, layout, 'default'), layout, hit / CT);
    return hit;
  }

  it('shortens the hit at a corrupted block and never serves its bytes', async () => {
    const p = randomTokens(mulberry32(SEED), 5 * CT);
    const { hashes, kv } = kvFor(p, layout, 'default');
    expect((await kvf.put(p, kv)).tokensIndexed).toBe(5 * CT);
    // Overwrite chunk 2, group 1 in the owning node's arena over UCX.
    const t = await table();
    const cell = cellFor(t.spec, {
      chunkIndex: 2,
      chunkTokens: CT,
      firstChunkHash: hashes[0]!,
      layerGroup: 1,
    });
    const node = t.cells[cellId(cell)]!.replicas[0]!;
    const loc = await request(
      nc,
      shardSubject(node, 'locate'),
      { model: tiny.id, epoch: t.epoch, blocks: [{ hash: hashes[2]!, g: 1, i: 2, s: cell.s }] },
      locateReplySchema,
      { timeoutMs: 5000 },
    );
    expect(loc.blocks[0]!.found).toBe(true);
    const member = decodeMemberRecord((await buckets.members.get(node))!.value);
    const ep = worker.connect(Buffer.from(member.ucxAddress, 'base64'));
    const rkey = ep.unpackRkey(Buffer.from(member.models[tiny.id]!.rkey, 'base64'));
    await ep.put({
      remoteAddress: loc.blocks[0]!.address!,
      rkey,
      local: new Uint8Array(64).fill(7),
      length: 64,
    });
    await ep.close();
    await request(nc, shardSubject(node, 'release'), { leaseIds: [loc.leaseId!] }, releaseReplySchema, {
      timeoutMs: 5000,
    });

    const before = kvf.stats().gets.checksumFailures;
    expect(await getChecked(kvf, p)).toBe(2 * CT);
    expect(kvf.stats().gets.checksumFailures).toBe(before + 1);
  });

  it('under eviction, every get is served byte-exact up to a hit the index does not overstate', async () => {
    const rng = mulberry32(SEED + 1);
    // 40 prompts x 4 chunks x 2 groups = 320 blocks for 3 x 64 slots.
    const prompts = Array.from({ length: 40 }, () => randomTokens(rng, 4 * CT));
    for (const p of prompts) await kvf.put(p, kvFor(p, layout, 'default').kv);
    let evicted = 0;
    for (const n of fx.cluster.shards) {
      const st = await request(nc, shardSubject(n.nodeId, 'stats'), {}, statsReplySchema, {
        timeoutMs: 5000,
      });
      const m = st.models.find((x) => x.model === tiny.id)!;
      evicted += m.stats.evictedTotal;
      expect(m.stats.usedBlocks).toBeLessThanOrEqual(m.stats.capacityBlocks);
    }
    expect(evicted).toBeGreaterThan(0);

    let served = 0;
    let overstated = 0;
    for (const p of prompts) {
      const claimed = await kvf.lookup(p);
      const hit = await getChecked(kvf, p);
      expect(hit).toBeLessThanOrEqual(claimed);
      if (hit < claimed) overstated++;
      // A get that found blocks missing drops their entries: the index now agrees with the data.
      expect(await kvf.lookup(p)).toBe(hit);
      served += hit;
    }
    expect(served).toBeGreaterThan(0);
    // Shard nodes delete evicted blocks' index entries, so the index rarely claims what is gone.
    expect(overstated).toBeLessThanOrEqual(2);
  });

  it('recovers from a stale epoch by refreshing placement', async () => {
    // A client without the placement watch keeps its table until a shard refuses it.
    const polled = await connect({ ...base(), ucx: { worker }, placementWatch: false });
    try {
      const q = randomTokens(mulberry32(SEED + 2), 16 * CT); // 16 chunks span all 8 x 2 cells
      expect((await polled.put(q, kvFor(q, layout, 'default').kv)).tokensIndexed).toBe(16 * CT);
      const epoch = polled.epoch;
      await fx.cluster.addShard();
      const t = await fx.cluster.waitForPlacement(4);
      expect(t.epoch).toBeGreaterThan(epoch);
      const moved = Object.values(t.cells).filter((c) => c.epoch > epoch).length;
      expect(moved).toBeGreaterThan(0);

      const hit = await getChecked(polled, q);
      expect(polled.stats().staleRetries).toBeGreaterThanOrEqual(1);
      expect(polled.epoch).toBe(t.epoch);
      // Blocks whose cell moved are not on the new owner: the hit stops before the first one.
      expect(hit).toBeLessThan(16 * CT);

      // Putting again stores the missing blocks on their new owners; the next get is whole.
      const again = await polled.put(q, kvFor(q, layout, 'default').kv);
      expect(again.chunksStored).toBeGreaterThan(0);
      expect(again.tokensIndexed).toBe(16 * CT);
      const retries = polled.stats().staleRetries;
      expect(await getChecked(polled, q)).toBe(16 * CT);
      expect(polled.stats().staleRetries).toBe(retries);
      // The watching client follows the change without being refused.
      const r0 = kvf.stats().staleRetries;
      expect(await getChecked(kvf, q)).toBe(16 * CT);
      expect(kvf.stats().staleRetries).toBe(r0);
    } finally {
      await polled.close();
    }
  });
});

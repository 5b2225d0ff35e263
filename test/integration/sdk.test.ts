/**
 * Worker SDK against a real 3-node local cluster (nats-server, redis-server, coordinator and
 * shard nodes as child processes; bulk bytes over UCX). tiny-test: 16-token chunks, 4 layers in
 * 2 layer groups.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUILTIN_PROFILES } from '../../shared/profiles.js';
import {
  connect,
  isKvfError,
  type KvfClient,
  type LayerGroupReady,
  type ModelLayout,
} from '../../shared/sdk/mod.js';
import { freePort } from '../../shared/local-servers.js';
import { useLocalCluster } from '../harness/cluster.js';
import { uniq } from '../harness/servers.js';
import { expectServed, kvFor, mulberry32, randomTokens, scribble } from './sdk-helpers.js';

const tiny = BUILTIN_PROFILES['tiny-test']!;
const CT = tiny.chunkTokens;
const SEED = Number(process.env.KVF_TEST_SEED ?? Date.now() % 1_000_000);

describe(`worker SDK on a 3-node cluster (seed ${SEED})`, () => {
  const fx = useLocalCluster({
    shards: 3,
    arenaBytes: 16 * 1024 * 1024,
    partition: { layerGroups: 2, seqBuckets: 8, seqBucketTokens: 32 },
  });
  let kvf: KvfClient;
  let layout: ModelLayout;
  const ops = { gets: 0, getTokens: 0, hitTokens: 0, puts: 0, lookups: 0 };

  beforeAll(async () => {
    kvf = await connect({
      natsServers: fx.cluster.natsUrl,
      redisUrl: fx.cluster.redisUrl,
      keyPrefix: fx.cluster.config.redis.keyPrefix,
      model: tiny.id,
    });
    await kvf.registerModel(tiny);
    layout = await kvf.layout();
  });
  afterAll(async () => {
    await kvf?.close();
  });

  async function get(tokens: number[], namespace = 'default'): Promise<number> {
    const target = await kvf.allocKv(tokens.length);
    scribble(target);
    const hit = await kvf.get(tokens, target, { namespace });
    ops.gets++;
    ops.getTokens += tokens.length;
    ops.hitTokens += hit;
    if (hit > 0) expectServed(target, kvFor(tokens, layout, namespace), layout, hit / CT);
    return hit;
  }

  async function put(tokens: number[], namespace = 'default') {
    ops.puts++;
    return kvf.put(tokens, kvFor(tokens, layout, namespace).kv, { namespace });
  }

  it('registers models idempotently and rejects a conflicting profile', async () => {
    expect((await kvf.registerModel(tiny)).created).toBe(false);
    const err = await kvf.registerModel({ ...tiny, headDim: 32 }).catch((e: unknown) => e);
    expect(isKvfError(err, 'PROFILE_CONFLICT')).toBe(true);
    expect(layout.groups).toHaveLength(2);
  });

  it('puts a prompt and reads it back byte-exact; the partial last chunk is never served', async () => {
    const rng = mulberry32(SEED);
    const a = randomTokens(rng, 5 * CT + 7);
    expect(await kvf.lookup(a)).toBe(0);
    ops.lookups++;
    const r = await put(a);
    expect(r).toMatchObject({
      chunksStored: 5,
      chunksPresent: 0,
      tokensIndexed: 5 * CT,
      indexDegraded: false,
    });
    expect(await kvf.lookup(a)).toBe(5 * CT);
    ops.lookups++;
    expect(await get(a)).toBe(5 * CT);
    // Putting it again writes nothing.
    expect(await put(a)).toMatchObject({ chunksStored: 0, chunksPresent: 5, tokensIndexed: 5 * CT });
    // A prompt shorter than one chunk has nothing to serve.
    expect(await get(a.slice(0, CT - 1))).toBe(0);
  });

  it('serves the longest cached prefix: extension, mid-chunk divergence, truncation', async () => {
    const rng = mulberry32(SEED + 1);
    const a = randomTokens(rng, 6 * CT);
    await put(a);
    const extended = [...a, ...randomTokens(rng, 3 * CT + 5)];
    expect(await get(extended)).toBe(6 * CT);
    const diverged = [...a];
    diverged[3 * CT + 5] = (diverged[3 * CT + 5]! + 1) % 128_000;
    expect(await kvf.lookup(diverged)).toBe(3 * CT);
    ops.lookups++;
    expect(await get(diverged)).toBe(3 * CT);
    expect(await get(a.slice(0, 2 * CT + 9))).toBe(2 * CT);
    // The extension, once put, is stored only for its new chunks.
    expect(await put(extended)).toMatchObject({ chunksStored: 3, chunksPresent: 6, tokensIndexed: 9 * CT });
    expect(await get(extended)).toBe(9 * CT);
  });

  it('round-trips random prompts with shared prefixes byte-exact', async () => {
    const rng = mulberry32(SEED + 2);
    const roots = Array.from({ length: 3 }, () => randomTokens(rng, Math.floor(rng() * 6 * CT) + CT));
    const prompts = Array.from({ length: 18 }, () => {
      const root = roots[Math.floor(rng() * roots.length)]!;
      const keep = Math.floor(rng() * root.length);
      return [...root.slice(0, keep), ...randomTokens(rng, Math.floor(rng() * 4 * CT))];
    });
    for (const p of prompts) await put(p);
    for (const p of prompts) expect(await get(p)).toBe(Math.floor(p.length / CT) * CT);
  });

  it('keeps namespaces apart and serves within one', async () => {
    const rng = mulberry32(SEED + 3);
    const p = randomTokens(rng, 4 * CT);
    const [nsA, nsB] = [uniq('tenantA'), uniq('tenantB')];
    await put(p, nsA);
    expect(await kvf.lookup(p, { namespace: nsB })).toBe(0);
    expect(await kvf.lookup(p)).toBe(0);
    ops.lookups += 2;
    expect(await get(p, nsB)).toBe(0);
    expect(await get(p, nsA)).toBe(4 * CT);
  });

  it('reports each layer group as it lands', async () => {
    const rng = mulberry32(SEED + 4);
    const p = randomTokens(rng, 7 * CT);
    await put(p);
    const seen: LayerGroupReady[] = [];
    const target = await kvf.allocKv(p.length);
    const hit = await kvf.get(p, target, { onLayerGroup: (r) => seen.push(r) });
    ops.gets++;
    ops.getTokens += p.length;
    ops.hitTokens += hit;
    expect(hit).toBe(7 * CT);
    expect(seen.map((s) => s.group).sort()).toEqual([0, 1]);
    for (const s of seen) expect(s).toMatchObject({ chunks: 7, tokens: 7 * CT });
  });

  it('round-trips the single-layer convenience API', async () => {
    const rng = mulberry32(SEED + 5);
    const prefix = randomTokens(rng, 2 * CT + 9);
    const n = tiny.kvHeads * prefix.length * tiny.headDim;
    const k = Uint16Array.from({ length: n }, () => Math.floor(rng() * 65536));
    const v = Uint16Array.from({ length: n }, () => Math.floor(rng() * 65536));
    expect(await kvf.getCachedKv(prefix, 1)).toBeNull();
    const r = await kvf.cacheKv(prefix, 1, k, v);
    expect(r.tokensIndexed).toBe(2 * CT);
    const got = await kvf.getCachedKv(prefix, 1);
    expect(got).not.toBeNull();
    expect(got!.tokens).toBe(2 * CT);
    // Expected: the first 2*CT tokens of every head, [kvHeads, tokens, headDim].
    const T = 2 * CT;
    const slice = (x: Uint16Array) => {
      const out = new Uint16Array(tiny.kvHeads * T * tiny.headDim);
      for (let h = 0; h < tiny.kvHeads; h++) {
        const from = h * prefix.length * tiny.headDim;
        out.set(x.subarray(from, from + T * tiny.headDim), h * T * tiny.headDim);
      }
      return out;
    };
    expect(Buffer.from(got!.k.buffer).equals(Buffer.from(slice(k).buffer))).toBe(true);
    expect(Buffer.from(got!.v.buffer).equals(Buffer.from(slice(v).buffer))).toBe(true);
    // Another layer was not cached; a wrong dtype is a typed error.
    expect(await kvf.getCachedKv(prefix, 2)).toBeNull();
    const bad = await kvf
      .cacheKv(prefix, 1, new Float32Array(n), new Float32Array(n))
      .catch((e: unknown) => e);
    expect(isKvfError(bad, 'DTYPE_MISMATCH')).toBe(true);
  });

  it('degrades without Redis: lookups miss, gets ask the shards, puts report the index loss', async () => {
    const rng = mulberry32(SEED + 6);
    const p = randomTokens(rng, 3 * CT + 2);
    await put(p);
    const noRedis = await connect({
      natsServers: fx.cluster.natsUrl,
      redisUrl: `redis://127.0.0.1:${await freePort()}`,
      indexConnectWaitMs: 200,
      indexCommandTimeoutMs: 200,
      model: tiny.id,
    });
    try {
      expect(await noRedis.lookupDetailed(p)).toMatchObject({ tokens: 0, degraded: true });
      const target = await noRedis.allocKv(p.length);
      scribble(target);
      const r = await noRedis.getDetailed(p, target);
      expect(r).toMatchObject({ tokens: 3 * CT, degraded: true, checksumFailures: 0 });
      expectServed(target, kvFor(p, layout, 'default'), layout, 3);
      const q = randomTokens(rng, 2 * CT);
      expect(await noRedis.put(q, kvFor(q, layout, 'default').kv)).toMatchObject({
        indexDegraded: true,
        tokensIndexed: 0,
      });
      expect(noRedis.stats().lookups.degraded).toBe(1);
    } finally {
      await noRedis.close();
    }
  });

  it('keeps stats consistent with what the test did', () => {
    const s = kvf.stats();
    expect(s.gets.count).toBe(ops.gets + 3); // + getCachedKv x 2 hits/misses + 1
    expect(s.puts.count).toBe(ops.puts + 1); // + cacheKv
    expect(s.lookups.count).toBe(ops.lookups);
    expect(s.gets.hitTokens).toBe(ops.hitTokens + 2 * CT);
    expect(s.gets.requestedTokens).toBeGreaterThanOrEqual(ops.getTokens);
    expect(s.gets.hitRate).toBeCloseTo(s.gets.hitTokens / s.gets.requestedTokens, 10);
    const bytesPerToken = layout.blockBytes.reduce((a, b) => a + b, 0) / CT;
    expect(s.gets.bytes).toBe(ops.hitTokens * bytesPerToken + 2 * CT * (2 * tiny.kvHeads * tiny.headDim * 2));
    expect(s.gets.checksumFailures).toBe(0);
    const l = s.gets.latency;
    expect(l.samples).toBe(s.gets.count);
    expect(l.p50Ms).toBeGreaterThan(0);
    expect(l.p50Ms).toBeLessThanOrEqual(l.p95Ms);
    expect(l.p95Ms).toBeLessThanOrEqual(l.p99Ms);
    expect(l.p99Ms).toBeLessThanOrEqual(l.maxMs);
    expect(s.puts.latency.samples).toBe(s.puts.count);
  });

  it('two workers putting one prompt at once leave one copy and index it', async () => {
    const other = await connect({
      natsServers: fx.cluster.natsUrl,
      redisUrl: fx.cluster.redisUrl,
      keyPrefix: fx.cluster.config.redis.keyPrefix,
      model: tiny.id,
    });
    try {
      const p = randomTokens(mulberry32(SEED + 7), 12 * CT);
      const { kv } = kvFor(p, layout, 'default');
      const [a, b] = await Promise.all([kvf.put(p, kv), other.put(p, kv)]);
      // Every block was written by exactly one of them.
      expect(a.bytes + b.bytes).toBe(12 * layout.blockBytes.reduce((x, y) => x + y, 0));
      expect(Math.max(a.tokensIndexed, b.tokensIndexed)).toBe(12 * CT);
      expect(await kvf.lookup(p)).toBe(12 * CT);
      expect(await get(p)).toBe(12 * CT);
    } finally {
      await other.close();
    }
  });

  it('rejects every call after close with CLOSED', async () => {
    const c = await connect({
      natsServers: fx.cluster.natsUrl,
      redisUrl: fx.cluster.redisUrl,
      keyPrefix: fx.cluster.config.redis.keyPrefix,
      model: tiny.id,
    });
    await c.close();
    await c.close(); // idempotent
    for (const call of [
      () => c.lookup([1, 2, 3]),
      () => c.put([1], { groups: [] }),
      () => c.registerModel(tiny),
    ]) {
      const err = await call().catch((e: unknown) => e);
      expect(isKvfError(err, 'CLOSED')).toBe(true);
    }
  });
});

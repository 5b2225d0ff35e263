/**
 * Worker SDK on a replicated cluster (rf 2, 3 shard nodes, real processes): ack modes, reads
 * spread over both copies, a corrupt copy read from the other one, the read lease failing closed,
 * Redis killed and restarted empty, a primary killed with -9 under a reader loop, and nats-server
 * restarted under the SDK. Served bytes are checked byte for byte everywhere; no SDK call may throw.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuckets, type ClusterBuckets } from '../../shared/cluster/buckets.js';
import { envNameFor } from '../../shared/config.js';
import { startLocalCluster, type LocalCluster } from '../../shared/local-cluster.js';
import {
  freePort,
  startNatsServer,
  startRedisServer,
  type ServerHandle,
} from '../../shared/local-servers.js';
import { cellFor, cellId } from '../../shared/partition.js';
import { BUILTIN_PROFILES } from '../../shared/profiles.js';
import { request } from '../../shared/protocol/codec.js';
import {
  decodePlacementTable,
  PLACEMENT_KEY,
  shardSubject,
  type PlacementTable,
} from '../../shared/protocol/cluster.js';
import {
  debugCorruptReplySchema,
  locateReplySchema,
  releaseReplySchema,
  statsReplySchema,
} from '../../shared/protocol/shard.js';
import { connect, type ConnectOptions, type KvfClient, type ModelLayout } from '../../shared/sdk/mod.js';
import { buildDist, waitFor } from '../harness/cluster.js';
import { expectServed, kvFor, mulberry32, randomTokens, scribble } from './sdk-helpers.js';

const tiny = BUILTIN_PROFILES['tiny-test']!;
const CT = tiny.chunkTokens;
const SEED = Number(process.env.KVF_TEST_SEED ?? Date.now() % 1_000_000);
// One layer group: a chunk is one block in one cell, so per-node counters tell copies apart.
const SPEC = { layerGroups: 1, seqBuckets: 8, seqBucketTokens: 32 };

describe(`worker SDK with replication (seed ${SEED})`, () => {
  let nats: ServerHandle;
  let redis: ServerHandle;
  let natsDir: string;
  let cluster: LocalCluster;
  let nc: NatsConnection;
  let buckets: ClusterBuckets;
  let kvf: KvfClient;
  let layout: ModelLayout;
  const logs: string[] = [];
  const rng = mulberry32(SEED);

  const base = (): ConnectOptions => ({
    natsServers: nats.url,
    redisUrl: redis.url,
    keyPrefix: cluster.config.redis.keyPrefix,
    model: tiny.id,
    indexCommandTimeoutMs: 300,
  });

  beforeAll(async () => {
    buildDist();
    natsDir = mkdtempSync(path.join(os.tmpdir(), 'kvf-sdk-repl-nats-'));
    nats = await startNatsServer({ port: await freePort(), storeDir: natsDir });
    redis = await startRedisServer({ port: await freePort() });
    cluster = await startLocalCluster({
      shards: 3,
      nats,
      redis,
      heartbeatIntervalMs: 100,
      nodeDeadAfterMs: 800,
      partition: SPEC,
      env: { KVFABRIC_TEST_HOOKS: '1', [envNameFor('coordinator.replicationFactor')]: '2' },
      log: (l) => logs.push(l),
    });
    nc = await natsConnect({ servers: nats.url });
    buckets = await ensureBuckets(nc);
    await waitFor('every cell has 2 copies', async () =>
      Object.values((await table()).cells).every((c) => c.replicas.length === 2),
    );
    kvf = await connect(base());
    layout = await kvf.layout();
  }, 90_000);

  afterAll(async () => {
    await kvf?.close();
    await nc?.close().catch(() => undefined);
    await cluster?.stop();
    await redis?.stop();
    await nats?.stop();
    if (natsDir) rmSync(natsDir, { recursive: true, force: true });
  }, 60_000);

  async function table(): Promise<PlacementTable> {
    const e = await buckets.placement.get(PLACEMENT_KEY);
    return decodePlacementTable(e!.value);
  }

  /** The replica set of chunk i's cell (one layer group). */
  async function copiesOf(
    hashes: readonly string[],
    i: number,
  ): Promise<{ cell: string; replicas: string[] }> {
    const t = await table();
    const c = cellFor(t.spec, { chunkIndex: i, chunkTokens: CT, firstChunkHash: hashes[0]!, layerGroup: 0 });
    const id = cellId(c);
    return { cell: id, replicas: t.cells[id]!.replicas };
  }

  async function locates(nodeId: string): Promise<number> {
    const r = await request(nc, shardSubject(nodeId, 'stats'), {}, statsReplySchema, { timeoutMs: 3000 });
    return r.requests.locate;
  }

  /** A get whose served prefix is checked byte for byte; returns the hit in chunks. */
  async function getChecked(c: KvfClient, tokens: number[]): Promise<number> {
    const target = await c.allocKv(tokens.length);
    scribble(target);
    const r = await c.getDetailed(tokens, target);
    if (r.chunks > 0) expectServed(target, kvFor(tokens, layout, 'default'), layout, r.chunks);
    return r.chunks;
  }

  async function putPrompt(chunks: number, opts: { ack?: 'primary' | 'all' } = {}) {
    const p = randomTokens(rng, chunks * CT);
    const { hashes, kv } = kvFor(p, layout, 'default');
    const r = await kvf.put(p, kv, opts);
    return { p, hashes, r };
  }

  it("acknowledges with ack 'all' only after the replica has the blocks; 'primary' reports it too", async () => {
    const all = await putPrompt(4);
    expect(all.r).toMatchObject({ chunksStored: 4, ack: 'all', outOfSync: [] });
    expect(all.r.replicated).toBeGreaterThanOrEqual(1);
    // Right after the put, each block's replica (not the primary) finds it.
    const t = await table();
    for (let i = 0; i < 4; i++) {
      const { replicas } = await copiesOf(all.hashes, i);
      const c = cellFor(t.spec, {
        chunkIndex: i,
        chunkTokens: CT,
        firstChunkHash: all.hashes[0]!,
        layerGroup: 0,
      });
      const reply = await request(
        nc,
        shardSubject(replicas[1]!, 'locate'),
        { model: tiny.id, epoch: t.epoch, blocks: [{ hash: all.hashes[i]!, g: 0, i, s: c.s }] },
        locateReplySchema,
        { timeoutMs: 3000 },
      );
      expect(reply.blocks[0]!.found, `chunk ${i} on replica ${replicas[1]}`).toBe(true);
      if (reply.leaseId) {
        await request(
          nc,
          shardSubject(replicas[1]!, 'release'),
          { leaseIds: [reply.leaseId] },
          releaseReplySchema,
          {
            timeoutMs: 3000,
          },
        );
      }
    }
    const primary = await putPrompt(3, { ack: 'primary' });
    expect(primary.r).toMatchObject({ chunksStored: 3, ack: 'primary', outOfSync: [] });
    expect(primary.r.replicated).toBeGreaterThanOrEqual(0);
    expect(await getChecked(kvf, primary.p)).toBe(3);
    expect(await getChecked(kvf, all.p)).toBe(4);
  }, 30_000);

  it('spreads locates over both copies of a cell; readSpread: false reads the primary only', async () => {
    const { p, hashes } = await putPrompt(1);
    const { replicas } = await copiesOf(hashes, 0);
    const [primary, replica] = replicas as [string, string];
    const nodes = cluster.shards.map((s) => s.nodeId);
    const before = new Map(await Promise.all(nodes.map(async (n) => [n, await locates(n)] as const)));
    const GETS = 30;
    for (let k = 0; k < GETS; k++) expect(await getChecked(kvf, p)).toBe(1);
    const delta = async (n: string): Promise<number> => (await locates(n)) - before.get(n)!;
    const onPrimary = await delta(primary);
    const onReplica = await delta(replica);
    // Binomial(30, 1/2): below 5 on either side has probability < 1e-4.
    expect(onPrimary, `primary ${primary}`).toBeGreaterThanOrEqual(5);
    expect(onReplica, `replica ${replica}`).toBeGreaterThanOrEqual(5);
    expect(onPrimary + onReplica).toBeGreaterThanOrEqual(GETS);

    const pinned = await connect({ ...base(), readSpread: false });
    try {
      const r0 = await locates(replica);
      for (let k = 0; k < 10; k++) expect(await getChecked(pinned, p)).toBe(1);
      expect(await locates(replica)).toBe(r0);
    } finally {
      await pinned.close();
    }
  }, 60_000);

  it('reads a block whose copy is corrupt from the other copy and reports it to the node', async () => {
    const { p, hashes } = await putPrompt(3);
    const { replicas } = await copiesOf(hashes, 1);
    const primary = replicas[0]!;
    const flip = await request(
      nc,
      shardSubject(primary, 'debug_corrupt'),
      { model: tiny.id, hash: hashes[1]!, g: 0, byteOffset: 100 },
      debugCorruptReplySchema,
      { timeoutMs: 3000 },
    );
    expect(flip.flipped).toBe(true);
    // Pinned to primaries first, so the corrupt copy is the one read first.
    const pinned = await connect({ ...base(), readSpread: false });
    try {
      const target = await pinned.allocKv(p.length);
      scribble(target);
      const r = await pinned.getDetailed(p, target);
      expect(r).toMatchObject({ chunks: 3, checksumFailures: 1 });
      expect(r.failovers).toBeGreaterThanOrEqual(1);
      expectServed(target, kvFor(p, layout, 'default'), layout, 3);
      // report_corrupt made the node drop its copy: it stops being served (no more mismatches).
      await waitFor('the corrupt copy is dropped', async () => {
        const again = await pinned.getDetailed(p, await pinned.allocKv(p.length));
        return again.checksumFailures === 0 && again.chunks >= 1;
      });
    } finally {
      await pinned.close();
    }
  }, 30_000);

  it('fails closed when the read and check finish past the read lease', async () => {
    const { p } = await putPrompt(2);
    // Every clock reading is 10 minutes after the previous one: each read completes "late".
    let skew = 0;
    const late = await connect({ ...base(), clock: () => performance.now() + (skew += 600_000) });
    try {
      const target = await late.allocKv(p.length);
      scribble(target);
      const r = await late.getDetailed(p, target);
      expect(r.chunks).toBe(0);
      expect(r.lateBlocks).toBeGreaterThanOrEqual(1);
      expect(r.checksumFailures).toBe(0); // a late block is never called corrupt
      expect(late.stats().gets.lateBlocks).toBe(r.lateBlocks);
    } finally {
      await late.close();
    }
    expect(await getChecked(kvf, p)).toBe(2);
  }, 30_000);

  it('keeps serving, with a typed degraded status, while Redis is killed and restarted empty', async () => {
    const before = await putPrompt(3);
    expect(await getChecked(kvf, before.p)).toBe(3);
    const port = redis.port;
    const errors: unknown[] = [];
    let degradedGets = 0;
    let degradedHits = 0;
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        try {
          const r = await kvf.getDetailed(before.p, await kvf.allocKv(before.p.length));
          if (r.degraded) {
            degradedGets++;
            if (r.chunks === 3) degradedHits++;
          }
          const q = randomTokens(rng, 2 * CT);
          await kvf.put(q, kvFor(q, layout, 'default').kv);
          await kvf.lookupDetailed(q);
        } catch (err) {
          errors.push(err);
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    await redis.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 1500));
    const lookup = await kvf.lookupDetailed(before.p);
    expect(lookup).toMatchObject({ tokens: 0, degraded: true });
    redis = await startRedisServer({ port });
    // Hits come back: from the index rebuilt by the cluster, or after the prompt is put again.
    await waitFor(
      'hits after the restart',
      async () => {
        const l = await kvf.lookupDetailed(before.p);
        if (!l.degraded && l.tokens < 3 * CT) await kvf.put(before.p, kvFor(before.p, layout, 'default').kv);
        return !l.degraded && l.tokens === 3 * CT;
      },
      20_000,
    );
    stop = true;
    await loop;
    expect(errors).toEqual([]);
    expect(degradedGets).toBeGreaterThan(0);
    expect(degradedHits).toBeGreaterThan(0); // the shard path served the prompt without the index
    const r = await kvf.getDetailed(before.p, await kvf.allocKv(before.p.length));
    expect(r).toMatchObject({ chunks: 3, degraded: false });
  }, 60_000);

  it('kill -9 of a primary under a reader loop: no get throws, bytes exact, its blocks served again quickly', async () => {
    const prompts = await Promise.all([0, 1, 2, 3, 4, 5].map(() => putPrompt(4)));
    for (const x of prompts) {
      expect(x.r).toMatchObject({ chunksStored: 4, outOfSync: [] });
      expect(x.r.replicated).toBeGreaterThanOrEqual(1);
    }
    const { replicas } = await copiesOf(prompts[0]!.hashes, 0);
    const victim = replicas[0]!;
    // Prompts with at least one block whose primary is the victim.
    const onVictim: number[] = [];
    for (const [k, x] of prompts.entries()) {
      for (let i = 0; i < 4; i++) {
        if ((await copiesOf(x.hashes, i)).replicas[0] === victim) {
          onVictim.push(k);
          break;
        }
      }
    }
    expect(onVictim.length).toBeGreaterThan(0);
    const errors: unknown[] = [];
    const shortAt: number[] = []; // times a victim prompt was served short, after the kill
    let fullAfterKill = 0;
    let stop = false;
    let killedAt = 0;
    const loop = (async () => {
      while (!stop) {
        for (const k of onVictim) {
          try {
            const chunks = await getChecked(kvf, prompts[k]!.p); // byte-exact check inside
            if (killedAt > 0 && chunks < 4) shortAt.push(performance.now());
            if (killedAt > 0 && chunks === 4) fullAfterKill++;
          } catch (err) {
            errors.push(err);
          }
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    const shard = cluster.shards.find((s) => s.nodeId === victim)!;
    killedAt = performance.now();
    shard.kill('SIGKILL');
    await waitFor(
      'the coordinator declares the victim dead',
      async () => !Object.hasOwn((await table()).members, victim),
      15_000,
    );
    const declaredAt = performance.now();
    await new Promise((r) => setTimeout(r, 3500));
    stop = true;
    await loop;
    const lastShort = shortAt.length > 0 ? shortAt[shortAt.length - 1]! : killedAt;
    const figures = {
      detectMs: Math.round(declaredAt - killedAt),
      shortGets: shortAt.length,
      fullGetsAfterKill: fullAfterKill,
      lastShortAfterKillMs: Math.round(lastShort - killedAt),
      servedAgainAfterDeclarationMs: Math.max(0, Math.round(lastShort - declaredAt)),
    };
    console.log(`failover figures: ${JSON.stringify(figures)}`);
    expect(errors).toEqual([]);
    expect(fullAfterKill).toBeGreaterThan(0);
    expect(lastShort - declaredAt).toBeLessThan(3000);
    for (const k of onVictim) expect(await getChecked(kvf, prompts[k]!.p)).toBe(4);
  }, 60_000);

  it('fails over on a locate timeout when a primary is paused (SIGSTOP), then SIGCONT', async () => {
    const x = await putPrompt(2);
    const { replicas } = await copiesOf(x.hashes, 0);
    const victim = cluster.shards.find((s) => s.nodeId === replicas[0])!;
    // Pinned to primaries: every get asks the paused node first and must time out to the replica.
    const pinned = await connect({ ...base(), readSpread: false, locateTimeoutMs: 300 });
    try {
      victim.kill('SIGSTOP');
      const started = performance.now();
      const r = await pinned.getDetailed(x.p, await pinned.allocKv(x.p.length));
      const ms = performance.now() - started;
      console.log(`paused primary: get served in ${Math.round(ms)} ms, failovers ${r.failovers}`);
      expect(r.chunks).toBe(2);
      expect(r.failovers).toBeGreaterThanOrEqual(1);
      expect(ms).toBeLessThan(3000);
      expect(await getChecked(pinned, x.p)).toBe(2);
    } finally {
      victim.kill('SIGCONT');
      await pinned.close();
    }
  }, 30_000);

  it('survives nats-server restarting: calls during the outage do not throw, service resumes', async () => {
    const x = await putPrompt(3);
    const port = nats.port;
    const errors: unknown[] = [];
    let outageCalls = 0;
    await nats.stop('SIGKILL');
    const downAt = performance.now();
    for (let k = 0; k < 3; k++) {
      try {
        await getChecked(kvf, x.p);
        const q = randomTokens(rng, 2 * CT);
        await kvf.put(q, kvFor(q, layout, 'default').kv);
        outageCalls++;
      } catch (err) {
        errors.push(err);
      }
    }
    nats = await startNatsServer({ port, storeDir: natsDir });
    let resumedAt = 0;
    await waitFor(
      'a full hit after the restart',
      async () => {
        const chunks = await getChecked(kvf, x.p);
        if (chunks === 3) resumedAt = performance.now();
        return chunks === 3;
      },
      30_000,
    );
    // Reads resume first (a node serves reads while it cannot heartbeat); writes once the nodes'
    // heartbeats land in the restarted server's JetStream again (until then allocate is FENCED
    // and a put stores nothing, without throwing).
    let writesAt = 0;
    let q: number[] = [];
    await waitFor(
      'a put stored in full after the restart',
      async () => {
        q = randomTokens(rng, 2 * CT);
        const stored = (await kvf.put(q, kvFor(q, layout, 'default').kv)).chunksStored;
        if (stored === 2) writesAt = performance.now();
        return stored === 2;
      },
      30_000,
    );
    expect(await getChecked(kvf, q)).toBe(2);
    console.log(
      `nats restart: reads resumed ${Math.round(resumedAt - downAt)} ms, writes ${Math.round(writesAt - downAt)} ms after the kill`,
    );
    expect(errors).toEqual([]);
    expect(outageCalls).toBe(3);
  }, 60_000);
});

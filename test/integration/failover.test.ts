/**
 * Failover on a real local cluster: a node paused (SIGSTOP) past nodeDeadAfterMs and resumed is
 * fenced (refuses writes, publishes a `fenced` event) and re-joins as a fresh member; a
 * `kvfabric replica` process joins as role replica, is never a primary and holds copies in sync;
 * Redis killed and restarted empty gets its index rebuilt from the shards by the coordinator.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isKvfError } from '../../shared/errors.js';
import { PrefixIndex } from '../../shared/index/prefix-index.js';
import { useLocalCluster, waitFor } from '../harness/cluster.js';
import { cellOf, collectEvents, makeBlocks, RawClient } from './replication-helpers.js';

const MODEL = 'tiny-test';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('failover, fencing, replica process, index rebuild (real processes)', () => {
  const fx = useLocalCluster({
    shards: 3,
    heartbeatIntervalMs: 200,
    nodeDeadAfterMs: 1000,
    arenaBytes: 16 * 1024 ** 2,
    env: { KVFABRIC_COORDINATOR_INDEX_CHECK_INTERVAL_MS: '300' },
  });
  let c: RawClient;
  let index: PrefixIndex;

  beforeAll(async () => {
    c = await RawClient.open(fx.cluster.natsUrl, MODEL);
    index = new PrefixIndex({ url: fx.cluster.redisUrl });
    await waitFor('placement', () => Object.keys(c.placement.current()?.members ?? {}).length === 3, 30_000);
  }, 60_000);
  afterAll(async () => {
    await c?.close();
    await index?.close();
  });

  it('a node paused past nodeDeadAfterMs is fenced when it resumes, refuses writes, then re-joins fresh', async () => {
    const ev = collectEvents(c.nc);
    const before = c.table();
    // A node that is primary of some cell: with rf 2, a node that joined after the others may be
    // primary of none (the nodes holding the data keep that role), and then has no write to refuse.
    const victim = fx.cluster.shards.find((sh) =>
      Object.values(before.cells).some((p) => p.replicas[0] === sh.nodeId),
    )!;
    const inc0 = before.members[victim.nodeId]!.incarnation;
    const cell = Object.entries(before.cells).find(([, p]) => p.replicas[0] === victim.nodeId)![0];
    const [g, s] = cell.split('.').map(Number) as [number, number];
    victim.kill('SIGSTOP');
    await waitFor('declared dead', () => !(victim.nodeId in (c.placement.current()?.members ?? {})), 10_000);
    victim.kill('SIGCONT');
    // Its first write after resuming, with the epoch it knew: refused.
    const err = await c
      .call(
        victim.nodeId,
        'allocate',
        { model: MODEL, epoch: before.epoch, blocks: [{ hash: 'a'.repeat(64), g, i: 0, parent: '', s }] },
        { description: 'any', parse: (v) => v },
      )
      .catch((e: unknown) => e);
    // FENCED while it re-joins; STALE_EPOCH only if the coordinator re-placed it first.
    console.log(`write after SIGCONT refused with ${isKvfError(err) ? err.codeName : String(err)}`);
    expect(isKvfError(err, 'FENCED') || isKvfError(err, 'STALE_EPOCH')).toBe(true);
    await waitFor('fenced event', () =>
      ev.events.some((e) => e.event === 'fenced' && e.nodeId === victim.nodeId),
    );
    // Re-joined as a new incarnation, re-placed, accepting writes again.
    await waitFor(
      're-placed with a new incarnation',
      () => {
        const m = c.placement.current()?.members[victim.nodeId];
        return m !== undefined && m.incarnation !== inc0;
      },
      10_000,
    );
    await waitFor(
      'not fenced',
      async () => (await c.stats(victim.nodeId)).replication?.fenced === false,
      10_000,
    );
    ev.stop();
    const blocks = makeBlocks('after-fence', 16, 4, 16, () => 2048);
    const r = await c.put(blocks, 'all');
    expect(r.committed).toBe(blocks.length);
  });

  it('kvfabric replica joins with role replica, is never primary, and holds its cells in sync', async () => {
    const blocks = makeBlocks('for-replica', 32, 4, 16, () => 2048);
    await c.put(blocks, 'all');
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/kvfabric.js'), 'replica'], {
      env: {
        ...process.env,
        ...fx.cluster.env,
        KVFABRIC_SHARD_ID: 'replica-1',
        KVFABRIC_SHARD_ARENA_KIND: 'host',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: string[] = [];
    child.stderr.on('data', (d: Buffer) => out.push(d.toString()));
    try {
      await waitFor(
        'replica placed',
        () => c.placement.current()?.members['replica-1']?.role === 'replica',
        20_000,
      );
      const t = c.table();
      const cells = Object.values(t.cells).filter((p) => p.replicas.includes('replica-1'));
      expect(cells.length).toBeGreaterThan(0);
      expect(cells.every((p) => p.replicas[0] !== 'replica-1')).toBe(true);
      await waitFor(
        'replica in sync',
        async () => {
          const st = (await c.stats('replica-1').catch(() => undefined))?.replication;
          return st !== undefined && st.replicaCells > 0 && st.inSyncCells === st.replicaCells;
        },
        20_000,
      );
      const st = await c.stats('replica-1');
      expect(st.replication!.role).toBe('replica');
      expect(st.replication!.primaryCells).toBe(0);
      const table = c.table();
      const mine = blocks.filter((b) => table.cells[cellOf(b)]!.replicas.includes('replica-1'));
      expect(mine.length).toBeGreaterThan(0);
      const loc = await c.locate('replica-1', mine);
      expect(loc.blocks.every((b) => b.found)).toBe(true);
      expect(await c.verify('replica-1', mine, loc)).toBe(0);
    } catch (err) {
      console.log(out.join('').slice(-3000));
      throw err;
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });

  it('Redis killed and restarted empty: the coordinator rebuilds the index from the shards', async () => {
    const blocks = makeBlocks('indexed', 24, 4, 16, () => 2048);
    expect((await c.put(blocks, 'all')).committed).toBe(blocks.length);
    const hashes = [...new Set(blocks.map((b) => b.hash))];
    // The coordinator's sentinel exists on a healthy index.
    await waitFor('sentinel', async () => (await index.sentinel()) === 'present', 10_000);
    // A marker no shard holds: gone after the restart proves Redis came back empty. (The blocks'
    // own entries cannot show that: the coordinator may rebuild them before this test looks.)
    const marker = randomBytes(32).toString('hex');
    expect(await index.publish([{ hash: marker, meta: { m: MODEL, i: 0 } }])).toBe(true);
    await fx.cluster.killRedis();
    await fx.cluster.restartRedis();
    await waitFor('redis back', () => index.ready(1000), 10_000);
    expect(await index.present([marker])).toEqual([false]);
    const t0 = performance.now();
    await waitFor('index rebuilt', async () => (await index.present(hashes)).every((x) => x), 15_000);
    console.log(`index rebuilt ${(performance.now() - t0).toFixed(0)} ms after Redis came back`);
    // A chunk missing a layer group is not indexed (the entry means every group is present).
    const partial = makeBlocks('partial', 1, 4, 16, () => 2048).slice(0, 3);
    await c.put(partial, 'all');
    await fx.cluster.killRedis();
    await fx.cluster.restartRedis();
    await waitFor('redis back', () => index.ready(1000), 10_000);
    await waitFor('rebuilt again', async () => (await index.present(hashes)).every((x) => x), 15_000);
    expect(await index.present([partial[0]!.hash])).toEqual([false]);
  });
});

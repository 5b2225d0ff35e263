/**
 * Shard nodes in this process against a real nats-server and redis-server, driven through their
 * NATS endpoints with `request()`, with bytes moved over real UCX. One UCX worker per process:
 * the nodes and the test's client share it (UCX transfers within one process like to a peer).
 * No coordinator: the test writes the placement table itself.
 */
import { createHash, randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crc32c, UcxWorker, type Endpoint, type RemoteKey } from '../../native/index.js';
import { ensureBuckets, type ClusterBuckets } from '../../shared/cluster/buckets.js';
import { KvfError } from '../../shared/errors.js';
import { PrefixIndex } from '../../shared/index/prefix-index.js';
import { createLogger } from '../../shared/log.js';
import type { PartitionSpec } from '../../shared/partition.js';
import { decodeReply, encodeBody, request } from '../../shared/protocol/codec.js';
import { decodeMemberRecord, modelKey, shardSubject, type ShardOp } from '../../shared/protocol/cluster.js';
import type { Schema } from '../../shared/protocol/schema.js';
import {
  abortReplySchema,
  allocateReplySchema,
  commitReplySchema,
  locateReplySchema,
  releaseReplySchema,
  statsReplySchema,
  type StatsReply,
} from '../../shared/protocol/shard.js';
import { ShardNode, type ShardNodeOptions } from '../../services/shard-node/shard-node.js';
import { useServers, uniq } from '../harness/servers.js';
import { waitFor, writePlacement } from '../harness/cluster.js';

const MODEL = 'tiny-test';
/** tiny-test (4 layers) in 3 groups: [2, 1, 1] layers -> 4096, 2048, 2048 bytes; slots of 4096. */
const SPEC: PartitionSpec = { layerGroups: 3, seqBuckets: 4, seqBucketTokens: 64 };
const GROUP_BYTES = [4096, 2048, 2048];
const SLOT = 4096;
/** Buckets 0,1 -> n1; 2 -> n2; 3 -> a node that is not running ("other"). */
function cells(overrides: Record<string, { replicas: string[]; epoch: number }> = {}) {
  const out: Record<string, { replicas: string[]; epoch: number }> = {};
  for (let g = 0; g < SPEC.layerGroups; g++) {
    for (let b = 0; b < SPEC.seqBuckets; b++) {
      out[`${g}.${b}`] = { replicas: [b < 2 ? 'n1' : b === 2 ? 'n2' : 'other'], epoch: 1 };
    }
  }
  return { ...out, ...overrides };
}

const h = (x: string): string => createHash('sha256').update(x).digest('hex');
const anyReply: Schema<Record<string, unknown>> = {
  description: 'any',
  parse: (v) => v as Record<string, unknown>,
};

describe('shard node endpoints (in process, real NATS, Redis and UCX)', () => {
  const fx = useServers();
  let nc: NatsConnection;
  let buckets: ClusterBuckets;
  let ucx: UcxWorker;
  let index: PrefixIndex;
  let ep: Endpoint;
  const nodes: ShardNode[] = [];
  const rkeys = new Map<string, RemoteKey>();
  let epoch = 1;

  async function startNode(
    nodeId: string,
    o: Partial<ShardNodeOptions> = {},
    logger = createLogger(`shard-node.${nodeId}`, { level: 'warn' }),
  ): Promise<ShardNode> {
    const node = new ShardNode(
      {
        nodeId,
        partition: SPEC,
        arenaBytes: 16 * SLOT,
        arenaKind: 'host',
        models: [MODEL],
        heartbeatIntervalMs: 200,
        sweepIntervalMs: 100,
        batchBlocksMax: 64,
        ...o,
      },
      { nc, ucx, index, buckets, logger },
    );
    await node.start();
    nodes.push(node);
    return node;
  }

  const call = <T>(node: string, op: ShardOp, body: Record<string, unknown>, schema: Schema<T>): Promise<T> =>
    request(nc, shardSubject(node, op), body, schema, { timeoutMs: 5000 });

  async function rkeyOf(node: string, model = MODEL): Promise<RemoteKey> {
    const k = `${node}/${model}`;
    const have = rkeys.get(k);
    if (have) return have;
    const e = await buckets.members.get(node);
    const rec = decodeMemberRecord(e!.value);
    const rk = ep.unpackRkey(Buffer.from(rec.models[model]!.rkey, 'base64'));
    rkeys.set(k, rk);
    return rk;
  }

  /** Allocate, UCX-put and commit blocks (all in one bucket); returns the commit statuses. */
  async function put(
    node: string,
    blocks: {
      hash: string;
      g: number;
      i: number;
      parent?: string;
      s: number;
      bytes: Buffer;
      badChecksum?: boolean;
    }[],
  ): Promise<string[]> {
    const a = await call(
      node,
      'allocate',
      {
        model: MODEL,
        epoch,
        blocks: blocks.map((b) => ({ hash: b.hash, g: b.g, i: b.i, parent: b.parent ?? '', s: b.s })),
      },
      allocateReplySchema,
    );
    const rkey = await rkeyOf(node);
    const toCommit: { hash: string; g: number; checksum: number }[] = [];
    for (const [k, r] of a.blocks.entries()) {
      const b = blocks[k]!;
      if (r.status !== 'allocated') continue;
      const { buffer, region } = ucx.allocBuffer(b.bytes.length);
      b.bytes.copy(buffer);
      await ep.put({ remoteAddress: r.address!, rkey, local: buffer, length: b.bytes.length });
      region.deregister();
      toCommit.push({ hash: b.hash, g: b.g, checksum: (crc32c(b.bytes) ^ (b.badChecksum ? 1 : 0)) >>> 0 });
    }
    if (toCommit.length === 0) return a.blocks.map((r) => r.status);
    const c = await call(
      node,
      'commit',
      { model: MODEL, epoch, allocId: a.allocId, blocks: toCommit },
      commitReplySchema,
    );
    return c.blocks.map((r) => r.status);
  }

  async function getBytes(node: string, address: bigint, length: number): Promise<Buffer> {
    const { buffer, region } = ucx.allocBuffer(length);
    await ep.get({ remoteAddress: address, rkey: await rkeyOf(node), local: buffer, length });
    const out = Buffer.from(buffer.subarray(0, length));
    region.deregister();
    return out;
  }

  const stats = (node: string): Promise<StatsReply> => call(node, 'stats', {}, statsReplySchema);
  const modelStats = async (node: string) => (await stats(node)).models.find((m) => m.model === MODEL)!.stats;

  beforeAll(async () => {
    nc = await connect({ servers: fx.nats.url });
    buckets = await ensureBuckets(nc);
    ucx = UcxWorker.create();
    index = new PrefixIndex({ url: fx.redis.url, keyPrefix: uniq('kvf') });
    await index.ready();
    await writePlacement(buckets.placement, SPEC, 1, cells());
    ep = ucx.connect(ucx.address());
    await startNode('n1');
    await startNode('n2', { arenaBytes: 4 * SLOT, allocTimeoutMs: 500 });
  });

  afterAll(async () => {
    for (const n of nodes) await n.stop();
    await ep?.close();
    await ucx?.close();
    await index?.close();
    await nc?.close();
  });

  it('publishes its UCX address, capacity and per-model region in its member record', async () => {
    const rec = decodeMemberRecord((await buckets.members.get('n1'))!.value);
    expect(rec.role).toBe('shard');
    expect(Buffer.from(rec.ucxAddress, 'base64').equals(ucx.address())).toBe(true);
    expect(rec.capacityBytes).toBe(16 * SLOT);
    const m = rec.models[MODEL]!;
    expect(m.blockBytes).toBe(SLOT);
    expect(m.blockCount).toBe(16);
    expect(BigInt(m.baseAddress)).toBeGreaterThan(0n);
  });

  it('allocate -> UCX put -> commit -> locate -> UCX get is byte-exact with matching checksums', async () => {
    const hash = h(uniq('roundtrip'));
    const data = [0, 1, 2].map((g) => randomBytes(GROUP_BYTES[g]!));
    const a = await call(
      'n1',
      'allocate',
      { model: MODEL, epoch, blocks: [0, 1, 2].map((g) => ({ hash, g, i: 0, parent: '', s: 1 })) },
      allocateReplySchema,
    );
    expect(a.blocks.map((b) => b.status)).toEqual(['allocated', 'allocated', 'allocated']);
    // Not readable before commit.
    const early = await call(
      'n1',
      'locate',
      { model: MODEL, epoch, blocks: [{ hash, g: 0, i: 0, s: 1 }] },
      locateReplySchema,
    );
    expect(early.blocks[0]!.found).toBe(false);
    expect(early.leaseId).toBeUndefined();
    const rkey = await rkeyOf('n1');
    for (const [g, r] of a.blocks.entries()) {
      await ep.put({ remoteAddress: r.address!, rkey, local: data[g]!, length: data[g]!.length });
    }
    const c = await call(
      'n1',
      'commit',
      {
        model: MODEL,
        epoch,
        allocId: a.allocId,
        blocks: [0, 1, 2].map((g) => ({ hash, g, checksum: crc32c(data[g]!) })),
      },
      commitReplySchema,
    );
    expect(c.blocks.map((b) => b.status)).toEqual(['committed', 'committed', 'committed']);
    const l = await call(
      'n1',
      'locate',
      { model: MODEL, epoch, blocks: [0, 1, 2].map((g) => ({ hash, g, i: 0, s: 1 })) },
      locateReplySchema,
    );
    expect(l.leaseId).toBeDefined();
    for (const [g, b] of l.blocks.entries()) {
      expect(b.found).toBe(true);
      const got = await getBytes('n1', b.address!, GROUP_BYTES[g]!);
      expect(got.equals(data[g]!)).toBe(true);
      expect(b.checksum).toBe(crc32c(got));
    }
    const rel = await call('n1', 'release', { leaseIds: [l.leaseId!, l.leaseId!] }, releaseReplySchema);
    expect(rel.released).toBe(1); // idempotent: the second is already gone
    // A put of a block already present is a no-op.
    const again = await call(
      'n1',
      'allocate',
      { model: MODEL, epoch, blocks: [{ hash, g: 0, i: 0, parent: '', s: 1 }] },
      allocateReplySchema,
    );
    expect(again.blocks[0]!.status).toBe('present');
    expect(again.allocId).toBeUndefined();
  });

  it('a commit with a wrong checksum leaves the block unreadable and frees its slot', async () => {
    const before = await stats('n1');
    const hash = h(uniq('badsum'));
    const st = await put('n1', [{ hash, g: 1, i: 0, s: 0, bytes: randomBytes(2048), badChecksum: true }]);
    expect(st).toEqual(['checksum_mismatch']);
    const l = await call(
      'n1',
      'locate',
      { model: MODEL, epoch, blocks: [{ hash, g: 1, i: 0, s: 0 }] },
      locateReplySchema,
    );
    expect(l.blocks[0]!.found).toBe(false);
    const after = await stats('n1');
    expect(after.checksumFailures).toBe(before.checksumFailures + 1);
    expect(after.models[0]!.stats.usedBlocks).toBe(before.models[0]!.stats.usedBlocks);
  });

  it('concurrent allocates of one block leave one copy', async () => {
    const hash = h(uniq('race'));
    const before = await modelStats('n1');
    const body = { model: MODEL, epoch, blocks: [{ hash, g: 2, i: 0, parent: '', s: 0 }] };
    const [a, b] = await Promise.all([
      call('n1', 'allocate', body, allocateReplySchema),
      call('n1', 'allocate', body, allocateReplySchema),
    ]);
    expect([a.blocks[0]!.status, b.blocks[0]!.status].sort()).toEqual(['allocated', 'busy']);
    const winner = a.blocks[0]!.status === 'allocated' ? a : b;
    const bytes = randomBytes(2048);
    await ep.put({
      remoteAddress: winner.blocks[0]!.address!,
      rkey: await rkeyOf('n1'),
      local: bytes,
      length: 2048,
    });
    await call(
      'n1',
      'commit',
      { model: MODEL, epoch, allocId: winner.allocId, blocks: [{ hash, g: 2, checksum: crc32c(bytes) }] },
      commitReplySchema,
    );
    const third = await call('n1', 'allocate', body, allocateReplySchema);
    expect(third.blocks[0]!.status).toBe('present');
    const after = await modelStats('n1');
    expect(after.committedBlocks).toBe(before.committedBlocks + 1);
    expect(after.usedBlocks).toBe(before.usedBlocks + 1);
  });

  it('refuses a stale epoch (STALE_EPOCH) and a cell it does not own (NOT_OWNER), changing nothing', async () => {
    const node = nodes[0]!;
    // Epoch 3 moves cell 0.1 (n1 keeps it, but the cell's epoch is now 3).
    await writePlacement(buckets.placement, SPEC, 3, cells({ '0.1': { replicas: ['n1'], epoch: 3 } }));
    await waitFor('n1 to see epoch 3', () => node.placement?.epoch() === 3);
    const before = await modelStats('n1');
    const fresh = h(uniq('stale'));
    const blocks = [
      { hash: fresh, g: 0, i: 0, parent: '', s: 0 }, // cell 0.0, epoch 1: fine alone
      { hash: h(fresh), g: 0, i: 1, parent: fresh, s: 1 }, // cell 0.1 changed at 3
    ];
    const stale = call('n1', 'allocate', { model: MODEL, epoch: 2, blocks }, allocateReplySchema);
    await expect(stale).rejects.toMatchObject({ codeName: 'STALE_EPOCH' });
    await expect(
      call(
        'n1',
        'locate',
        { model: MODEL, epoch: 2, blocks: [{ hash: h(fresh), g: 0, i: 1, s: 1 }] },
        locateReplySchema,
      ),
    ).rejects.toMatchObject({ codeName: 'STALE_EPOCH' });
    // A client ahead of every table: the node refreshes, still cannot see it, and says so.
    await expect(
      call(
        'n1',
        'locate',
        { model: MODEL, epoch: 99, blocks: [{ hash: fresh, g: 0, i: 0, s: 0 }] },
        locateReplySchema,
      ),
    ).rejects.toMatchObject({ codeName: 'STALE_EPOCH', details: { nodeBehind: true } });
    // Not the owner: bucket 2 is n2's, bucket 3 another node's.
    for (const sb of [2, 3]) {
      await expect(
        call(
          'n1',
          'allocate',
          { model: MODEL, epoch: 3, blocks: [{ hash: fresh, g: 0, i: 0, parent: '', s: sb }] },
          allocateReplySchema,
        ),
      ).rejects.toMatchObject({ codeName: 'NOT_OWNER' });
    }
    expect(await modelStats('n1')).toEqual(before);
    // The same request at the current epoch goes through.
    epoch = 3;
    const ok = await call('n1', 'allocate', { model: MODEL, epoch, blocks }, allocateReplySchema);
    expect(ok.blocks.map((b) => b.status)).toEqual(['allocated', 'allocated']);
    await call('n1', 'abort', { model: MODEL, allocId: ok.allocId }, abortReplySchema);
    // A client that saw a newer table than the node: the node catches up before checking.
    await writePlacement(buckets.placement, SPEC, 4, cells({ '0.1': { replicas: ['n1'], epoch: 3 } }));
    epoch = 4;
    const caughtUp = await call(
      'n1',
      'locate',
      { model: MODEL, epoch, blocks: [{ hash: fresh, g: 0, i: 0, s: 0 }] },
      locateReplySchema,
    );
    expect(caughtUp.blocks[0]!.found).toBe(false);
    expect(node.placement?.epoch()).toBe(4);
  });

  it('answers bad input on every endpoint with a typed error and changes nothing', async () => {
    const before = await stats('n1');
    const raw = async (op: ShardOp, data: Uint8Array): Promise<KvfError> => {
      const msg = await nc.request(shardSubject('n1', op), data, { timeout: 5000 });
      expect(msg.headers?.get('Nats-Service-Error-Code')).toMatch(/^\d+$/);
      try {
        decodeReply(msg, anyReply);
      } catch (err) {
        return err as KvfError;
      }
      throw new Error(`${op}: expected an error reply`);
    };
    const hash = h('bad');
    const block = { hash, g: 0, i: 0, parent: '', s: 0 };
    const cases: [ShardOp, Uint8Array | Record<string, unknown>, string][] = [];
    for (const op of ['allocate', 'commit', 'abort', 'locate', 'release', 'stats'] as ShardOp[]) {
      cases.push([op, new TextEncoder().encode('{not json'), 'MALFORMED']);
      cases.push([op, new Uint8Array([0xff, 0xfe, 0x00]), 'MALFORMED']);
      cases.push([op, new TextEncoder().encode(JSON.stringify({ v: 99 })), 'VERSION_MISMATCH']);
      cases.push([op, { bogus: 1 }, 'BAD_REQUEST']);
    }
    cases.push(['allocate', { model: MODEL, epoch, blocks: [{ ...block, g: 'zero' }] }, 'BAD_REQUEST']);
    cases.push(['allocate', { model: MODEL, epoch, blocks: [] }, 'BAD_REQUEST']);
    cases.push(['allocate', { model: MODEL, epoch, blocks: [{ ...block, g: 3 }] }, 'BAD_REQUEST']); // group out of range
    cases.push(['allocate', { model: MODEL, epoch, blocks: [{ ...block, s: 4 }] }, 'BAD_REQUEST']); // bucket out of range
    cases.push([
      'allocate',
      { model: MODEL, epoch, blocks: [{ hash, g: 0, i: 0, parent: '' }] },
      'BAD_REQUEST',
    ]); // no cell
    cases.push(['allocate', { model: 'no-such-model', epoch, blocks: [block] }, 'UNKNOWN_MODEL']);
    cases.push([
      'locate',
      { model: 'no-such-model', epoch, blocks: [{ hash, g: 0, i: 0, s: 0 }] },
      'UNKNOWN_MODEL',
    ]);
    cases.push([
      'commit',
      { model: 'no-such-model', epoch, allocId: 'x', blocks: [{ hash, g: 0, checksum: 1 }] },
      'UNKNOWN_MODEL',
    ]);
    cases.push(['abort', { model: 'no-such-model', allocId: 'x' }, 'UNKNOWN_MODEL']);
    cases.push([
      'commit',
      { model: MODEL, epoch, allocId: 'forged.0.a1', blocks: [{ hash, g: 0, checksum: 1 }] },
      'ALLOCATION_NOT_FOUND',
    ]);
    cases.push([
      'commit',
      { model: MODEL, epoch, allocId: 'x', blocks: [{ hash, g: 0, checksum: -1 }] },
      'BAD_REQUEST',
    ]);
    cases.push(['locate', { model: MODEL, epoch: -1, blocks: [{ hash, g: 0, i: 0, s: 0 }] }, 'BAD_REQUEST']);
    cases.push(['release', { leaseIds: [] }, 'BAD_REQUEST']);
    cases.push(['stats', { chunks: 'yes' }, 'BAD_REQUEST']);
    // Oversized: past this node's batchBlocksMax (64), and past the protocol's 4096.
    const many = (n: number) => Array.from({ length: n }, (_, i) => ({ hash, g: 0, i, s: 0 }));
    cases.push(['locate', { model: MODEL, epoch, blocks: many(65) }, 'BATCH_TOO_LARGE']);
    cases.push(['locate', { model: MODEL, epoch, blocks: many(4097) }, 'BATCH_TOO_LARGE']);
    for (const [op, body, code] of cases) {
      const data = body instanceof Uint8Array ? body : encodeBody(body);
      const err = await raw(op, data);
      expect(err, `${op} ${JSON.stringify(body).slice(0, 80)}`).toBeInstanceOf(KvfError);
      expect(err.codeName, `${op} ${JSON.stringify(body).slice(0, 80)}`).toBe(code);
    }
    const after = await stats('n1');
    expect(after.models).toEqual(before.models);
    expect(after.requests.errors).toBe(before.requests.errors + cases.length);
    expect(after.requests.allocate).toBe(before.requests.allocate);
  });

  it('eviction under capacity pressure removes the chunks index entries before the slots are reused', async () => {
    // n2: 4 slots, bucket 2. A prompt of 4 chunks (group 0 only) fills it.
    const chain: string[] = [];
    for (let i = 0; i < 4; i++) chain.push(h(`${chain[i - 1] ?? uniq('prompt')}/${i}`));
    const st = await put(
      'n2',
      chain.map((hash, i) => ({ hash, g: 0, i, parent: chain[i - 1] ?? '', s: 2, bytes: randomBytes(4096) })),
    );
    expect(st).toEqual(['committed', 'committed', 'committed', 'committed']);
    await index.publish(chain.map((hash, i) => ({ hash, meta: { m: MODEL, i } })));
    expect(await index.present(chain)).toEqual([true, true, true, true]);
    // Hold a read lease on chunk 0: it must survive.
    const lease = await call(
      'n2',
      'locate',
      { model: MODEL, epoch, blocks: [{ hash: chain[0]!, g: 0, i: 0, s: 2 }] },
      locateReplySchema,
    );
    expect(lease.blocks[0]!.found).toBe(true);
    // Four new blocks need four slots: three come from evicting chunks 3, 2, 1; chunk 0 is leased.
    const fresh = [0, 1, 2, 3].map((k) => h(uniq(`fresh${k}`)));
    const a = await call(
      'n2',
      'allocate',
      { model: MODEL, epoch, blocks: fresh.map((hash) => ({ hash, g: 0, i: 0, parent: '', s: 2 })) },
      allocateReplySchema,
    );
    expect(a.blocks.map((b) => b.status)).toEqual(['allocated', 'allocated', 'allocated', 'full']);
    // By the time the writer has the addresses, the index no longer claims the evicted chunks.
    expect(await index.present(chain)).toEqual([true, false, false, false]);
    const l = await call(
      'n2',
      'locate',
      { model: MODEL, epoch, blocks: chain.map((hash, i) => ({ hash, g: 0, i, s: 2 })) },
      locateReplySchema,
    );
    expect(l.blocks.map((b) => b.found)).toEqual([true, false, false, false]);
    expect((await modelStats('n2')).evictedTotal).toBe(3);
    await call('n2', 'release', { leaseIds: [lease.leaseId!, l.leaseId!] }, releaseReplySchema);
    await call('n2', 'abort', { model: MODEL, allocId: a.allocId }, abortReplySchema);
  });

  it('reclaims an allocation that is never committed (periodic sweep)', async () => {
    const hash = h(uniq('abandoned'));
    const a = await call(
      'n2',
      'allocate',
      { model: MODEL, epoch, blocks: [{ hash, g: 1, i: 0, parent: '', s: 2 }] },
      allocateReplySchema,
    );
    expect(a.blocks[0]!.status).toBe('allocated');
    expect((await modelStats('n2')).writingBlocks).toBe(1);
    await waitFor(
      'the sweep to reclaim the allocation',
      async () => (await modelStats('n2')).writingBlocks === 0,
      5000,
    );
    await expect(
      call(
        'n2',
        'commit',
        { model: MODEL, epoch, allocId: a.allocId, blocks: [{ hash, g: 1, checksum: 0 }] },
        commitReplySchema,
      ),
    ).rejects.toMatchObject({ codeName: 'ALLOCATION_NOT_FOUND' });
  });

  it('serves a model registered later in kvf_models and publishes it', async () => {
    const profile = { id: 'tiny-late', layers: 2, kvHeads: 1, headDim: 8, dtype: 'fp16', chunkTokens: 8 };
    await buckets.models.put(modelKey(profile.id), JSON.stringify(profile));
    await waitFor('n1 to publish tiny-late', async () => {
      const rec = decodeMemberRecord((await buckets.members.get('n1'))!.value);
      return rec.models['tiny-late'] !== undefined;
    });
    const rec = decodeMemberRecord((await buckets.members.get('n1'))!.value);
    // 2 layers in min(3, 2) = 2 groups: 1 layer x 2 x 1 head x 8 tokens x 8 dims x 2 bytes.
    expect(rec.models['tiny-late']!.blockBytes).toBe(256);
    const l = await call(
      'n1',
      'locate',
      { model: 'tiny-late', epoch, blocks: [{ hash: h('late'), g: 1, i: 0, s: 0 }] },
      locateReplySchema,
    );
    expect(l.blocks[0]!.found).toBe(false);
    await expect(
      call(
        'n1',
        'locate',
        { model: 'tiny-late', epoch, blocks: [{ hash: h('late'), g: 2, i: 0, s: 0 }] },
        locateReplySchema,
      ),
    ).rejects.toMatchObject({ codeName: 'BAD_REQUEST' });
  });

  it('prefaults its host arena in the background when shard.prefault is on, and serves meanwhile', async () => {
    const lines: string[] = [];
    const node = await startNode(
      'n-prefault',
      { prefault: true, arenaBytes: 64 * SLOT },
      createLogger('shard-node.n-prefault', { level: 'info', write: (l) => lines.push(l) }),
    );
    // Serving already: its member record is published while pages may still be faulting in.
    expect((await buckets.members.get('n-prefault'))?.value.length).toBeGreaterThan(0);
    await waitFor('the prefault log line', () => lines.some((l) => l.includes('arena prefaulted')), 30_000);
    const rec = JSON.parse(lines.find((l) => l.includes('arena prefaulted'))!) as {
      model: string;
      ms: number;
    };
    expect(rec.model).toBe(MODEL);
    expect(rec.ms).toBeGreaterThanOrEqual(0);
    await node.stop();
    nodes.splice(nodes.indexOf(node), 1);
  });

  it('registers as a NATS micro service ($SRV ping, info, stats)', async () => {
    const dec = (m: { data: Uint8Array }) =>
      JSON.parse(new TextDecoder().decode(m.data)) as Record<string, unknown>;
    const ping = dec(await nc.request('$SRV.PING.kvfabric-shard', new Uint8Array(), { timeout: 2000 }));
    expect(ping).toMatchObject({ type: 'io.nats.micro.v1.ping_response', name: 'kvfabric-shard' });
    expect(['n1', 'n2']).toContain(ping.id);
    const replies: Record<string, unknown>[] = [];
    for await (const m of await nc.requestMany('$SRV.INFO', new Uint8Array(), { maxWait: 500 }))
      replies.push(dec(m));
    const ids = replies.filter((r) => r.name === 'kvfabric-shard').map((r) => r.id);
    expect(ids.sort()).toEqual(['n1', 'n2']);
    const info = replies.find((r) => r.id === 'n1')!;
    expect(info.type).toBe('io.nats.micro.v1.info_response');
    expect((info.endpoints as { subject: string }[]).map((e) => e.subject)).toContain(
      shardSubject('n1', 'allocate'),
    );
    const st = dec(await nc.request('$SRV.STATS.kvfabric-shard.n1', new Uint8Array(), { timeout: 2000 }));
    expect(st.type).toBe('io.nats.micro.v1.stats_response');
    const eps = st.endpoints as {
      name: string;
      num_requests: number;
      num_errors: number;
      processing_time: number;
    }[];
    const alloc = eps.find((e) => e.name === 'allocate')!;
    expect(alloc.num_requests).toBeGreaterThan(alloc.num_errors);
    expect(alloc.num_errors).toBeGreaterThan(0); // from the bad-input test
    expect(alloc.processing_time).toBeGreaterThan(0);
  });

  it('stop() leaves the cluster: member record deleted, endpoints gone', async () => {
    const n3 = await startNode('n3', { arenaBytes: 2 * SLOT });
    expect(await buckets.members.get('n3')).not.toBeNull();
    await n3.stop();
    const e = await buckets.members.get('n3');
    expect(e === null || e.operation !== 'PUT').toBe(true);
    await expect(call('n3', 'stats', {}, statsReplySchema)).rejects.toMatchObject({
      codeName: 'PEER_UNREACHABLE',
    });
  });
});

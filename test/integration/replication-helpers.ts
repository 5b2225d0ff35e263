/**
 * A minimal raw client for replication tests: shard requests over NATS and block bytes over UCX
 * (its own worker), without the SDK, so these tests pin the node-side protocol exactly.
 */
import { createHash, randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { crc32c, UcxWorker, type Endpoint, type RemoteKey } from '../../native/index.js';
import { ensureBuckets, type ClusterBuckets } from '../../shared/cluster/buckets.js';
import { MembersCache } from '../../shared/cluster/members-cache.js';
import { PlacementCache } from '../../shared/cluster/placement-cache.js';
import { request } from '../../shared/protocol/codec.js';
import {
  EVENT_SUBJECTS,
  shardSubject,
  type MemberRecord,
  type PlacementTable,
  type ReplicationEvent,
  type ShardOp,
} from '../../shared/protocol/cluster.js';
import type { Schema } from '../../shared/protocol/schema.js';
import {
  allocateReplySchema,
  commitReplySchema,
  locateReplySchema,
  statsReplySchema,
  type AckMode,
  type LocateReply,
  type StatsReply,
} from '../../shared/protocol/shard.js';

export const h = (x: string): string => createHash('sha256').update(x).digest('hex');

export interface TestBlock {
  hash: string;
  g: number;
  s: number;
  i: number;
  parent: string;
  bytes: Buffer;
}

/** `n` one-chunk prompts' blocks of `groups` layer groups, spread over `seqBuckets` buckets. */
export function makeBlocks(
  tag: string,
  n: number,
  groups: number,
  seqBuckets: number,
  bytesOf: (g: number) => number,
): TestBlock[] {
  const out: TestBlock[] = [];
  for (let k = 0; k < n; k++) {
    const hash = h(`${tag}-${k}`);
    for (let g = 0; g < groups; g++) {
      out.push({ hash, g, s: k % seqBuckets, i: 0, parent: '', bytes: randomBytes(bytesOf(g)) });
    }
  }
  return out;
}

export const cellOf = (b: { g: number; s: number }): string => `${b.g}.${b.s}`;

export class RawClient {
  private readonly eps = new Map<
    string,
    { incarnation: string; ep: Endpoint; rkeys: Map<string, RemoteKey> }
  >();

  private constructor(
    readonly nc: NatsConnection,
    readonly buckets: ClusterBuckets,
    readonly placement: PlacementCache,
    readonly members: MembersCache,
    readonly ucx: UcxWorker,
    readonly model: string,
  ) {}

  static async open(natsUrl: string, model: string): Promise<RawClient> {
    const nc = await connect({ servers: natsUrl, name: 'replication-test' });
    const buckets = await ensureBuckets(nc);
    const placement = await PlacementCache.open(buckets.placement);
    const members = await MembersCache.open(buckets.members);
    return new RawClient(nc, buckets, placement, members, UcxWorker.create({ opTimeoutMs: 3000 }), model);
  }

  async close(): Promise<void> {
    for (const e of this.eps.values()) await e.ep.close().catch(() => undefined);
    await this.ucx.close();
    this.placement.close();
    this.members.close();
    await this.nc.close();
  }

  table(): PlacementTable {
    const t = this.placement.current();
    if (t === undefined) throw new Error('no placement table');
    return t;
  }

  call<T>(
    node: string,
    op: ShardOp,
    body: Record<string, unknown>,
    schema: Schema<T>,
    timeoutMs = 5000,
  ): Promise<T> {
    return request(this.nc, shardSubject(node, op), body, schema, { timeoutMs });
  }

  stats(node: string): Promise<StatsReply> {
    return this.call(node, 'stats', {}, statsReplySchema);
  }

  private async link(node: string): Promise<{ ep: Endpoint; rkey: RemoteKey; rec: MemberRecord }> {
    let rec = await this.members.fetch(node);
    if (rec === undefined) throw new Error(`no member ${node}`);
    let l = this.eps.get(node);
    if (l === undefined || l.incarnation !== rec.incarnation || l.ep.dead) {
      if (l) await l.ep.close().catch(() => undefined);
      l = {
        incarnation: rec.incarnation,
        ep: this.ucx.connect(Buffer.from(rec.ucxAddress, 'base64')),
        rkeys: new Map(),
      };
      this.eps.set(node, l);
    }
    const region = rec.models[this.model];
    if (region === undefined) throw new Error(`${node} has no region for ${this.model}`);
    let rkey = l.rkeys.get(region.rkey);
    if (rkey === undefined) {
      rkey = l.ep.unpackRkey(Buffer.from(region.rkey, 'base64'));
      l.rkeys.set(region.rkey, rkey);
    }
    rec = rec as MemberRecord;
    return { ep: l.ep, rkey, rec };
  }

  /** Put blocks to their cells' primaries (one allocate + commit per primary). */
  async put(
    blocks: TestBlock[],
    ack: AckMode = 'all',
  ): Promise<{ committed: number; replies: { node: string; replicated?: number; outOfSync?: string[] }[] }> {
    const table = this.table();
    const byNode = new Map<string, TestBlock[]>();
    for (const b of blocks) {
      const p = table.cells[cellOf(b)]?.replicas[0];
      if (p === undefined) throw new Error(`cell ${cellOf(b)} has no primary`);
      let l = byNode.get(p);
      if (l === undefined) byNode.set(p, (l = []));
      l.push(b);
    }
    let committed = 0;
    const replies: { node: string; replicated?: number; outOfSync?: string[] }[] = [];
    for (const [node, bs] of byNode) {
      for (let at = 0; at < bs.length; at += 512) {
        const part = bs.slice(at, at + 512);
        const a = await this.call(
          node,
          'allocate',
          {
            model: this.model,
            epoch: table.epoch,
            blocks: part.map((b) => ({ hash: b.hash, g: b.g, i: b.i, parent: b.parent, s: b.s })),
          },
          allocateReplySchema,
        );
        const { ep, rkey } = await this.link(node);
        const toCommit: { hash: string; g: number; checksum: number }[] = [];
        const ops = a.blocks.flatMap((r, k) => {
          const b = part[k] as TestBlock;
          if (r.status !== 'allocated' || r.address === undefined) return [];
          toCommit.push({ hash: b.hash, g: b.g, checksum: crc32c(b.bytes) });
          return [{ remoteAddress: r.address, rkey, local: b.bytes, length: b.bytes.length }];
        });
        const res = await ep.putBatch(ops);
        if (!res.every((r) => r.ok)) throw new Error(`UCX put to ${node} failed`);
        if (toCommit.length === 0) continue;
        const c = await this.call(
          node,
          'commit',
          { model: this.model, epoch: table.epoch, allocId: a.allocId, blocks: toCommit, ack },
          commitReplySchema,
          10_000,
        );
        committed += c.blocks.filter((x) => x.status === 'committed').length;
        replies.push({
          node,
          ...(c.replicated !== undefined ? { replicated: c.replicated } : {}),
          ...(c.outOfSync !== undefined ? { outOfSync: c.outOfSync } : {}),
        });
      }
    }
    return { committed, replies };
  }

  /** locate on one node (any cell member), with the node's answer or error code. */
  async locate(
    node: string,
    blocks: readonly TestBlock[],
    opts: { hotCopy?: boolean; epoch?: number } = {},
  ): Promise<LocateReply> {
    return this.call(
      node,
      'locate',
      {
        model: this.model,
        epoch: opts.epoch ?? this.table().epoch,
        blocks: blocks.map((b) => ({ hash: b.hash, g: b.g, i: b.i, s: b.s })),
        ...(opts.hotCopy ? { hotCopy: true } : {}),
      },
      locateReplySchema,
    );
  }

  /** Read located blocks back over UCX and compare with the written bytes; returns mismatches. */
  async verify(node: string, blocks: readonly TestBlock[], reply: LocateReply): Promise<number> {
    const { ep, rkey } = await this.link(node);
    let bad = 0;
    const ops = reply.blocks.flatMap((r, k) => {
      const b = blocks[k] as TestBlock;
      if (!r.found || r.address === undefined) return [];
      const local = Buffer.alloc(b.bytes.length);
      return [{ op: { remoteAddress: r.address, rkey, local, length: local.length }, b, local }];
    });
    const res = await ep.getBatch(ops.map((o) => o.op));
    ops.forEach((o, k) => {
      if (!res[k]?.ok || !o.local.equals(o.b.bytes)) bad++;
    });
    return bad;
  }
}

/**
 * Replication events from now on. They are published to KVF_EVENTS through JetStream; a core
 * subscription on the subject sees them too (nats-server 2.9 has no multi-filter consumers).
 */
export function collectEvents(nc: NatsConnection): { events: ReplicationEvent[]; stop: () => void } {
  const events: ReplicationEvent[] = [];
  const sub = nc.subscribe(EVENT_SUBJECTS.replication, {
    callback: (_err, m) => {
      events.push(m.json<ReplicationEvent>());
    },
  });
  return { events, stop: () => sub.unsubscribe() };
}

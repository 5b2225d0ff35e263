/**
 * Hot chunks on a shard node (docs/replication.md "Hot copies").
 *
 * As a cell's primary, the node counts locates per block (HotTracker). A block whose rate reaches
 * shard.hotReadsPerSec gets extra read copies pushed (`replicate {hot: true}`) to up to
 * shard.hotCopiesMax live nodes outside its replica set, chosen by a hash of the block and node
 * (rendezvous order, so the same block lands on the same nodes); locate replies list them in
 * `copies`. When the block cools the primary tells the holders (`drop_copies`) and stops listing
 * them.
 *
 * As a holder, the node keeps hot copies as ordinary evictable blocks flagged hot (never
 * replicas, never in the index's accounting) and drops one nobody read for shard.hotCopyTtlMs,
 * so copies vanish even when the primary that pushed them died.
 */
import { createHash } from 'node:crypto';
import { request } from '../../shared/protocol/codec.js';
import { shardSubject } from '../../shared/protocol/cluster.js';
import { dropCopiesReplySchema, replicateReplySchema } from '../../shared/protocol/shard.js';
import { HotTracker } from './hot-copies.js';
import type { ModelArena } from './model-arena.js';
import type { Replication } from './replication.js';
import type { ShardNode } from './shard-node.js';

export interface HotOptions {
  hotReadsPerSec: number;
  hotCopiesMax: number;
  hotCopyTtlMs: number;
  requestTimeoutMs: number;
}

const keyOf = (model: string, hash: string, g: number): string => `${model}\u0000${hash}\u0000${g}`;

function rank(key: string, node: string): string {
  return createHash('sha256').update(key).update('\u0000').update(node).digest('hex');
}

export class HotManager {
  readonly tracker: HotTracker;
  /** Holder side: hot copies held, per model: `${hash}:${g}`. */
  private readonly held = new Map<string, Set<string>>();

  constructor(
    private readonly node: ShardNode,
    private readonly rep: Replication,
    private readonly o: HotOptions,
  ) {
    this.tracker = new HotTracker({
      hotReadsPerSec: o.hotReadsPerSec,
      copiesMax: o.hotCopiesMax,
      coolMs: o.hotCopyTtlMs,
    });
  }

  get heldCount(): number {
    let n = 0;
    for (const s of this.held.values()) n += s.size;
    return n;
  }

  /**
   * Primary side: count a located block and start pushes when it turned hot. Returns the nodes
   * holding copies now (for the reply's `copies`).
   */
  onPrimaryLocate(m: ModelArena, hash: string, g: number, cellReplicas: readonly string[]): string[] {
    if (this.o.hotCopiesMax <= 0) return [];
    const key = keyOf(m.profile.id, hash, g);
    const now = this.node.clock.nowMs();
    const rate = this.tracker.hit(key, now);
    const table = this.node.placement?.current();
    if (rate >= this.o.hotReadsPerSec && table !== undefined) {
      const candidates = Object.keys(table.members)
        .filter((n) => n !== this.node.nodeId && !cellReplicas.includes(n))
        .sort((a, b) => (rank(key, a) < rank(key, b) ? -1 : 1));
      const targets = this.tracker.wantCopies(key, rate, now, candidates);
      for (const t of targets) void this.push(m, hash, g, key, t);
    }
    return this.tracker.copiesOf(key);
  }

  /** Holder side: remember a hot copy stored here. */
  heldCopy(model: string, hash: string, g: number): void {
    let s = this.held.get(model);
    if (s === undefined) this.held.set(model, (s = new Set()));
    s.add(`${hash}:${g}`);
  }

  /** Holder side: drop copies (the primary said they cooled). */
  dropCopies(m: ModelArena, blocks: readonly { hash: string; g: number }[]): number {
    let n = 0;
    for (const b of blocks) {
      const st = m.store.get(b.hash, b.g);
      this.held.get(m.profile.id)?.delete(`${b.hash}:${b.g}`);
      if (st?.hot === true && m.store.drop(b.hash, b.g)) n++;
    }
    return n;
  }

  /** Every sweep: cool hot blocks (primary) and expire unread copies (holder). */
  sweep(): void {
    const now = this.node.clock.nowMs();
    for (const c of this.tracker.cooled(now)) void this.withdraw(c.key, c.holders);
    for (const [model, keys] of this.held) {
      const m = this.node.models.get(model);
      for (const k of keys) {
        const [hash, g] = k.split(':') as [string, string];
        const st = m?.store.get(hash, Number(g));
        if (st === undefined || !st.hot) {
          keys.delete(k);
        } else if (now - st.lastAccessMs > this.o.hotCopyTtlMs && st.leases === 0) {
          m?.store.drop(hash, Number(g));
          keys.delete(k);
        }
      }
    }
  }

  private async push(m: ModelArena, hash: string, g: number, key: string, target: string): Promise<void> {
    const st = m.store.get(hash, g);
    let ok = false;
    if (st !== undefined) {
      try {
        const reply = await request(
          this.node.deps.nc,
          shardSubject(target, 'replicate'),
          {
            model: m.profile.id,
            epoch: this.node.placement?.epoch() ?? 0,
            source: this.node.nodeId,
            sourceIncarnation: this.node.incarnation(),
            hot: true,
            blocks: [
              {
                hash,
                g,
                ...(st.s !== undefined ? { s: st.s } : {}),
                i: st.chunkIndex,
                parent: st.parent,
                address: m.arena.addressOf(st.slot).toString(),
                checksum: st.checksum,
              },
            ],
          },
          replicateReplySchema,
          { timeoutMs: this.o.requestTimeoutMs },
        );
        ok = reply.blocks.every((b) => b.status === 'stored' || b.status === 'present');
      } catch (err) {
        this.node.log.debug('hot copy push failed', { target, err });
      }
    }
    this.tracker.pushed(key, target, ok);
    if (ok) {
      this.rep.event({ event: 'hot_copies_added', peer: target, model: m.profile.id, blocks: 1 });
    }
  }

  private async withdraw(key: string, holders: string[]): Promise<void> {
    const [model, hash, g] = key.split('\u0000') as [string, string, string];
    await Promise.allSettled(
      holders.map((h) =>
        request(
          this.node.deps.nc,
          shardSubject(h, 'drop_copies'),
          { model, blocks: [{ hash, g: Number(g) }] },
          dropCopiesReplySchema,
          { timeoutMs: this.o.requestTimeoutMs },
        ),
      ),
    );
    if (holders.length > 0) {
      this.rep.event({ event: 'hot_copies_dropped', model, blocks: holders.length, reason: hash });
    }
  }
}

/**
 * Replica side of placement changes: after every table (and on a timer, to retry failures) the
 * node compares the cells it is a non-primary member of with the cells it holds in full
 * (Replication.inSync) and backfills the difference from each cell's primary: `list_cell` pages
 * (bounded bytes per page) and one batched UCX GET per page (pull.ts), one primary at a time per
 * node and at most `concurrencyMax` primaries at once. A cell becomes readable here (in sync)
 * only when its whole listing was copied and its primary is still the same.
 *
 * It also reports promotions: cells this node was a replica of and is now primary of, because
 * their previous primary left the set.
 */
import { toKvfError } from '../../shared/errors.js';
import { request } from '../../shared/protocol/codec.js';
import { shardSubject, type PlacementTable } from '../../shared/protocol/cluster.js';
import { listCellReplySchema } from '../../shared/protocol/shard.js';
import { pullBlocks } from './pull.js';
import { recordPull } from '../../shared/metrics/sources.js';
import type { Replication } from './replication.js';
import type { ShardNode } from './shard-node.js';
import type { PeerLinks } from './peers.js';

export interface BackfillOptions {
  /** Primaries backfilled from at once. @default 2 */
  concurrencyMax?: number;
  /** Bytes of blocks per list_cell page (one UCX batch). @default 64 MiB */
  pageBytesMax?: number;
  /** Wait after a failed backfill before the next try. @default 1000 */
  retryDelayMs?: number;
  /** Bound of one list_cell request. @default 10000 */
  requestTimeoutMs?: number;
}

export class Backfiller {
  private readonly running = new Map<string, Promise<void>>(); // primary -> backfill
  private readonly retryAt = new Map<string, number>();
  private previous: PlacementTable | undefined;
  private readonly o: Required<BackfillOptions>;

  constructor(
    private readonly node: ShardNode,
    private readonly rep: Replication,
    private readonly peers: PeerLinks,
    opts: BackfillOptions = {},
  ) {
    this.o = {
      concurrencyMax: opts.concurrencyMax ?? 2,
      pageBytesMax: opts.pageBytesMax ?? 64 * 1024 ** 2,
      retryDelayMs: opts.retryDelayMs ?? 1000,
      requestTimeoutMs: opts.requestTimeoutMs ?? 10_000,
    };
  }

  /** Idle: no backfill running. */
  get idle(): boolean {
    return this.running.size === 0;
  }

  /** Called on every new table and every sweep. */
  reconcile(): void {
    const table = this.node.placement?.current();
    if (table === undefined || this.node.fenced) return;
    if (this.previous !== table) {
      this.reportPromotions(this.previous, table);
      this.rep.prune(table);
      this.previous = table;
    }
    const me = this.node.nodeId;
    const need = new Map<string, string[]>(); // primary -> cells
    for (const [cell, p] of Object.entries(table.cells)) {
      const pos = p.replicas.indexOf(me);
      if (pos <= 0) continue;
      const primary = p.replicas[0] as string;
      if (this.rep.syncedWith(cell, primary, p.epoch)) continue;
      let l = need.get(primary);
      if (l === undefined) need.set(primary, (l = []));
      l.push(cell);
    }
    const now = performance.now();
    for (const [primary, cells] of need) {
      if (this.running.has(primary) || this.running.size >= this.o.concurrencyMax) continue;
      if ((this.retryAt.get(primary) ?? 0) > now) continue;
      const cellEpochs = new Map(cells.map((c) => [c, table.cells[c]?.epoch ?? -1]));
      const run = this.backfill(primary, cells, table.epoch, cellEpochs).finally(() =>
        this.running.delete(primary),
      );
      this.running.set(primary, run);
    }
  }

  /** Resolves when the backfills running now have ended. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.running.values()]);
  }

  private reportPromotions(prev: PlacementTable | undefined, table: PlacementTable): void {
    if (prev === undefined) return;
    const me = this.node.nodeId;
    const byOld = new Map<string, string[]>();
    for (const [cell, p] of Object.entries(table.cells)) {
      if (p.replicas[0] !== me) continue;
      const before = prev.cells[cell]?.replicas ?? [];
      const old = before[0];
      if (before.indexOf(me) <= 0 || old === undefined || p.replicas.includes(old)) continue;
      let l = byOld.get(old);
      if (l === undefined) byOld.set(old, (l = []));
      l.push(cell);
    }
    for (const [old, cells] of byOld) {
      this.rep.event({ event: 'promoted', peer: old, cells, epoch: table.epoch });
    }
  }

  /** `cellEpochs`: each cell's epoch when the copy was planned; a cell that changed since is not marked. */
  private async backfill(
    primary: string,
    cells: string[],
    epoch: number,
    cellEpochs: ReadonlyMap<string, number>,
  ): Promise<void> {
    const t0 = performance.now();
    this.rep.counters.backfills++;
    this.rep.event({ event: 'backfill_started', peer: primary, cells, epoch });
    let blocks = 0;
    let bytes = 0;
    try {
      for (const m of this.node.models.values()) {
        const r = await this.copyModel(m.profile.id, primary, cells, epoch);
        blocks += r.blocks;
        bytes += r.bytes;
      }
    } catch (err) {
      this.retryAt.set(primary, performance.now() + this.o.retryDelayMs);
      const e = toKvfError(err);
      this.rep.event({
        event: 'backfill_failed',
        peer: primary,
        cells,
        epoch,
        blocks,
        bytes,
        reason: `${e.codeName}: ${e.message}`.slice(0, 1000),
      });
      return;
    }
    const table = this.node.placement?.current();
    // Only cells whose replica set did not change during the copy (same cell epoch): a cell that
    // moved away and back meanwhile may have been written without this node, so it is copied again.
    const done = cells.filter((c) => {
      const cell = table?.cells[c];
      const set = cell?.replicas ?? [];
      return set[0] === primary && set.indexOf(this.node.nodeId) > 0 && cell?.epoch === cellEpochs.get(c);
    });
    for (const c of done) this.rep.markInSync(c, primary, cellEpochs.get(c) as number);
    this.rep.counters.backfillBlocks += blocks;
    const ms = performance.now() - t0;
    this.rep.event({ event: 'backfill_finished', peer: primary, cells, epoch, blocks, bytes, ms });
    // Cells may have changed during the copy: look again now rather than at the next sweep.
    setImmediate(() => this.reconcile());
  }

  private async copyModel(
    model: string,
    primary: string,
    cells: string[],
    epoch: number,
  ): Promise<{ blocks: number; bytes: number }> {
    const m = this.node.models.get(model);
    if (m === undefined) return { blocks: 0, bytes: 0 };
    const limit = Math.max(1, Math.min(1024, Math.floor(this.o.pageBytesMax / m.slotBytes)));
    let cursor: string | undefined;
    let blocks = 0;
    let bytes = 0;
    for (;;) {
      let reply;
      try {
        reply = await request(
          this.node.deps.nc,
          shardSubject(primary, 'list_cell'),
          { model, epoch, cells, limit, from: this.node.nodeId, ...(cursor ? { cursor } : {}) },
          listCellReplySchema,
          { timeoutMs: this.o.requestTimeoutMs },
        );
      } catch (err) {
        // The primary does not serve this model (yet): nothing of it to copy.
        if (toKvfError(err).codeName === 'UNKNOWN_MODEL') return { blocks, bytes };
        throw err;
      }
      const missing = reply.blocks.filter((b) => !m.store.has(b.hash, b.g));
      if (missing.length > 0) {
        const source = await this.peers.member(primary, reply.incarnation);
        const r = await pullBlocks(m, this.peers, source, missing, { hot: false });
        recordPull(this.node.deps.metrics, r);
        const bad = r.statuses.filter((s) => s !== 'stored' && s !== 'present').length;
        if (bad > 0) throw new Error(`${bad} of ${missing.length} blocks not copied from ${primary}`);
        blocks += missing.length;
        bytes += r.bytes;
        this.rep.counters.blocksIn += missing.length;
      }
      if (reply.nextCursor === undefined) return { blocks, bytes };
      cursor = reply.nextCursor;
    }
  }
}

/**
 * The shard node's request handlers. Every request has been size-, version- and schema-checked by
 * serveEndpoint before it gets here; these check what the schema cannot know (served models,
 * layer-group and bucket ranges, the node's batch limit, cell ownership at the caller's epoch)
 * and then change the block table synchronously, so a refused request changes nothing and two
 * requests never interleave between check and change.
 *
 * Wire ids: allocation and lease ids are `<instanceId>.<modelSlot>.<storeId>`, so an id from
 * another process (a restarted node) or for another model is refused, never confused.
 */
import { checkOwnership, ownershipError } from '../../shared/cluster/epochs.js';
import { isKvfError, KvfError, type KvfError as KvfErrorType } from '../../shared/errors.js';
import { cellId } from '../../shared/partition.js';
import {
  abortRequestSchema,
  allocateRequestSchema,
  commitRequestSchema,
  locateRequestSchema,
  releaseRequestSchema,
  SHARD_LIMITS,
  statsRequestSchema,
  replicateRequestSchema,
  listCellRequestSchema,
  resyncRequestSchema,
  dropCopiesRequestSchema,
  reportCorruptRequestSchema,
  debugCorruptRequestSchema,
  type AllocateRequest,
  type CommitRequest,
  type ListCellRequest,
  type LocateRequest,
  type ReplicateRequest,
  type StatsReply,
} from '../../shared/protocol/shard.js';
import type { Infer, Schema } from '../../shared/protocol/schema.js';
import type { ShardOp } from '../../shared/protocol/cluster.js';
import type { ModelArena } from './model-arena.js';
import { commitInSlices } from './commit-slices.js';
import { ReplicaOps } from './replica-ops.js';
import type { CommittedBlock } from './replication.js';
import type { ShardNode } from './shard-node.js';

export const SHARD_REQUEST_SCHEMAS: Record<ShardOp, Schema<unknown>> = {
  allocate: allocateRequestSchema,
  commit: commitRequestSchema,
  abort: abortRequestSchema,
  locate: locateRequestSchema,
  release: releaseRequestSchema,
  stats: statsRequestSchema,
  replicate: replicateRequestSchema,
  list_cell: listCellRequestSchema,
  resync: resyncRequestSchema,
  drop_copies: dropCopiesRequestSchema,
  report_corrupt: reportCorruptRequestSchema,
  debug_corrupt: debugCorruptRequestSchema,
};

type Reply = Record<string, unknown>;

/** Cells an open allocation's blocks were checked against, for commit's epoch check. */
interface PendingCells {
  deadlineMs: number;
  cells: Map<string, string>; // `${hash}:${g}` -> cell id
}

const blockKey = (hash: string, g: number): string => `${hash}:${g}`;

export class ShardHandlers {
  readonly counters = { allocate: 0, commit: 0, locate: 0, errors: 0, checksumFailures: 0 };
  private readonly pending = new Map<string, PendingCells>();
  private refreshing: Promise<unknown> | undefined;
  private readonly ops: ReplicaOps;

  constructor(private readonly node: ShardNode) {
    this.ops = new ReplicaOps(node, (epoch) => this.catchUp(epoch));
  }

  handlerFor(op: ShardOp): (req: unknown) => Promise<Reply> | Reply {
    switch (op) {
      case 'allocate':
        return (r) => this.allocate(r as AllocateRequest);
      case 'commit':
        return (r) => this.commit(r as CommitRequest);
      case 'abort':
        return (r) => this.abort(r as Infer<typeof abortRequestSchema>);
      case 'locate':
        return (r) => this.locate(r as LocateRequest);
      case 'release':
        return (r) => this.release(r as Infer<typeof releaseRequestSchema>);
      case 'stats':
        return (r) => this.stats(r as Infer<typeof statsRequestSchema>);
      case 'replicate':
        return (r) => this.ops.replicate(r as ReplicateRequest);
      case 'list_cell':
        return (r) => this.ops.listCell(r as ListCellRequest);
      case 'resync':
        return (r) => this.ops.resync(r as Infer<typeof resyncRequestSchema>);
      case 'drop_copies':
        return (r) => this.ops.dropCopies(r as Infer<typeof dropCopiesRequestSchema>);
      case 'report_corrupt':
        return (r) => this.ops.reportCorrupt(r as Infer<typeof reportCorruptRequestSchema>);
      case 'debug_corrupt':
        return (r) => this.ops.debugCorrupt(r as Infer<typeof debugCorruptRequestSchema>);
    }
  }

  countOk(op: ShardOp): void {
    if (op === 'allocate' || op === 'commit' || op === 'locate') this.counters[op]++;
  }

  countError(_err: KvfErrorType): void {
    this.counters.errors++;
  }

  /** Forget cells of allocations the block table has reclaimed by now. */
  sweep(): void {
    const now = this.node.clock.nowMs();
    for (const [id, p] of this.pending) if (p.deadlineMs <= now) this.pending.delete(id);
  }

  async allocate(req: AllocateRequest): Promise<Reply> {
    const m = this.node.model(req.model);
    this.checkBatch(req.blocks.length);
    const cells = req.blocks.map((b, k) => this.cellOf(m, b.g, b.s, k));
    await this.node.checkLiveness();
    await this.catchUp(req.epoch);
    // From here on synchronous: the ownership check and the change see the same table.
    this.node.assertWritable();
    this.assertOwned(new Set(cells), req.epoch, true);
    const { allocId, results } = m.store.allocate(
      req.blocks.map((b) => ({
        hash: b.hash,
        g: b.g,
        chunkIndex: b.i,
        parent: b.parent,
        ...(b.s !== undefined ? { s: b.s } : {}),
      })),
    );
    const wireId = this.wireId(m, allocId);
    const mine = new Map<string, string>();
    results.forEach((r, k) => {
      const b = req.blocks[k];
      if (r.status === 'allocated' && b) mine.set(blockKey(b.hash, b.g), cells[k] as string);
    });
    if (mine.size > 0) {
      this.pending.set(wireId, {
        deadlineMs: this.node.clock.nowMs() + this.node.o.allocTimeoutMs,
        cells: mine,
      });
      // Evicted chunks must leave the index before the writer overwrites their old slots.
      await this.node.evictionBarrier();
    }
    return {
      ...(mine.size > 0 ? { allocId: wireId } : {}),
      allocTtlMs: this.node.o.allocTimeoutMs,
      blocks: results.map((r) =>
        r.status === 'allocated'
          ? { status: r.status, address: m.arena.addressOf(r.slot) }
          : { status: r.status },
      ),
    };
  }

  async commit(req: CommitRequest): Promise<Reply> {
    const m = this.node.model(req.model);
    this.checkBatch(req.blocks.length);
    const storeId = this.parseWireId(m, req.allocId, 'allocation');
    await this.node.checkLiveness();
    await this.catchUp(req.epoch);
    this.node.assertWritable();
    const pending = this.pending.get(req.allocId);
    const cells = new Set<string>();
    for (const b of req.blocks) {
      const c = pending?.cells.get(blockKey(b.hash, b.g));
      if (c !== undefined) cells.add(c);
    }
    this.assertOwned(cells, req.epoch, true);
    let results;
    try {
      results = await commitInSlices(m, storeId, req.blocks);
    } catch (err) {
      if (isKvfError(err, 'ALLOCATION_NOT_FOUND')) this.pending.delete(req.allocId);
      throw isKvfError(err, 'ALLOCATION_NOT_FOUND')
        ? new KvfError('ALLOCATION_NOT_FOUND', `allocation ${req.allocId} is unknown or expired`, {
            details: { allocId: req.allocId },
          })
        : err;
    }
    const committed: CommittedBlock[] = [];
    results.forEach((r, k) => {
      const b = req.blocks[k];
      const cell = b ? pending?.cells.get(blockKey(b.hash, b.g)) : undefined;
      if (r.status !== 'committed' || b === undefined || cell === undefined) return;
      committed.push({ hash: b.hash, g: b.g, s: Number(cell.split('.')[1]), cell });
    });
    for (const b of req.blocks) pending?.cells.delete(blockKey(b.hash, b.g));
    if (pending && pending.cells.size === 0) this.pending.delete(req.allocId);
    for (const r of results) if (r.status === 'checksum_mismatch') this.counters.checksumFailures++;
    this.node.deps.metrics?.tally(
      'checksumFailures',
      results.filter((r) => r.status === 'checksum_mismatch').length,
    );
    const rep = await this.node.replication().afterCommit(m, committed, req.ack ?? 'all');
    return {
      blocks: results.map((r) => ({ status: r.status })),
      ...(rep.hadReplicas ? { replicated: rep.replicated } : {}),
      ...(rep.outOfSync.length > 0 ? { outOfSync: rep.outOfSync } : {}),
    };
  }

  abort(req: Infer<typeof abortRequestSchema>): Reply {
    const m = this.node.model(req.model);
    let storeId: string;
    try {
      storeId = this.parseWireId(m, req.allocId, 'allocation');
    } catch {
      return { freed: 0 }; // idempotent: an id that was never ours has nothing to free
    }
    this.pending.delete(req.allocId);
    return { freed: m.store.abort(storeId) };
  }

  async locate(req: LocateRequest): Promise<Reply> {
    const m = this.node.model(req.model);
    this.checkBatch(req.blocks.length);
    if (req.hotCopy === true) return this.locateCopies(m, req);
    const cells = req.blocks.map((b, k) => this.cellOf(m, b.g, b.s, k));
    await this.node.checkLiveness('read');
    await this.catchUp(req.epoch);
    this.assertOwned(new Set(cells), req.epoch, false);
    const table = this.node.placement?.current();
    for (const c of new Set(cells)) {
      if (!this.node.replication().readable(c, table)) {
        throw new KvfError('NOT_IN_SYNC', `node ${this.node.nodeId} has not copied cell ${c} in full yet`, {
          details: { cellId: c, nodeId: this.node.nodeId, requestEpoch: req.epoch },
        });
      }
    }
    const res = m.store.locate(req.blocks.map((b) => ({ hash: b.hash, g: b.g, chunkIndex: b.i })));
    return {
      ...(res.leaseId !== null ? { leaseId: this.wireId(m, res.leaseId) } : {}),
      leaseTtlMs: this.node.o.readLeaseMs,
      blocks: res.blocks.map((b, k) => {
        if (b === null) return { found: false };
        const rb = req.blocks[k] as LocateRequest['blocks'][number];
        const set = table?.cells[cells[k] as string]?.replicas ?? [];
        const copies =
          set[0] === this.node.nodeId ? this.node.hot().onPrimaryLocate(m, rb.hash, rb.g, set) : [];
        return {
          found: true,
          address: m.arena.addressOf(b.slot),
          checksum: b.checksum,
          ...(copies.length > 0 ? { copies } : {}),
        };
      }),
    };
  }

  /** locate {hotCopy: true}: blocks held here, whatever the cells' owners (content-addressed). */
  private locateCopies(m: ModelArena, req: LocateRequest): Reply {
    for (const b of req.blocks) this.cellOf(m, b.g, b.s ?? 0, 0);
    const res = m.store.locate(req.blocks.map((b) => ({ hash: b.hash, g: b.g, chunkIndex: b.i })));
    return {
      ...(res.leaseId !== null ? { leaseId: this.wireId(m, res.leaseId) } : {}),
      leaseTtlMs: this.node.o.readLeaseMs,
      blocks: res.blocks.map((b) =>
        b === null
          ? { found: false }
          : { found: true, address: m.arena.addressOf(b.slot), checksum: b.checksum },
      ),
    };
  }

  release(req: Infer<typeof releaseRequestSchema>): Reply {
    let released = 0;
    for (const id of req.leaseIds) {
      const m = this.modelOfWireId(id);
      if (m === undefined) continue;
      if (m.store.release(this.parseWireId(m, id, 'lease'))) released++;
    }
    return { released };
  }

  stats(req: Infer<typeof statsRequestSchema>): Reply {
    const models: StatsReply['models'] = [];
    for (const [id, m] of this.node.models) {
      const st = m.store.stats();
      const entry: StatsReply['models'][number]['stats'] = {
        blockBytes: m.slotBytes,
        capacityBlocks: st.capacitySlots,
        usedBlocks: st.capacitySlots - st.freeSlots,
        committedBlocks: st.committedBlocks,
        writingBlocks: st.writingBlocks,
        leasedBlocks: st.leasedBlocks,
        evictedTotal: st.evictedTotal,
        chunks: undefined,
        chunksTruncated: undefined,
      };
      if (req.chunks === true) {
        const chunks: NonNullable<typeof entry.chunks> = [];
        let truncated = false;
        for (const e of m.store.entries()) {
          if (chunks.length >= SHARD_LIMITS.blocksPerRequestMax) {
            truncated = true;
            break;
          }
          chunks.push({ hash: e.hash, parent: e.parent, g: e.g, bytes: m.groupBytes(e.g) });
        }
        entry.chunks = chunks;
        entry.chunksTruncated = truncated;
      }
      models.push({ model: id, stats: entry });
    }
    const first = this.node.models.values().next().value;
    return {
      nodeId: this.node.nodeId,
      incarnation: this.node.agent?.incarnation ?? this.node.instanceId,
      arenaKind: first?.arena.kind ?? 'host',
      epoch: this.node.placement?.epoch() ?? 0,
      models,
      requests: {
        allocate: this.counters.allocate,
        commit: this.counters.commit,
        locate: this.counters.locate,
        errors: this.counters.errors,
      },
      checksumFailures: this.counters.checksumFailures,
      replication: this.node.replicationStats(),
    };
  }

  private checkBatch(n: number): void {
    const max = this.node.o.batchBlocksMax;
    if (n > max) {
      throw new KvfError('BATCH_TOO_LARGE', `blocks: ${n} items, at most ${max} on this node`, {
        details: { items: n, maxItems: max },
      });
    }
  }

  /** The cell id of a block, after range checks the schema cannot do (they depend on the model). */
  private cellOf(m: ModelArena, g: number, s: number | undefined, k: number): string {
    if (g >= m.groupCount) {
      throw new KvfError(
        'BAD_REQUEST',
        `blocks[${k}].g: layer group ${g} out of range [0, ${m.groupCount}) for model ${m.profile.id}`,
        { details: { index: k, g, layerGroups: m.groupCount } },
      );
    }
    if (s === undefined) {
      throw new KvfError(
        'BAD_REQUEST',
        `blocks[${k}].s: the sequence bucket of the block's cell is required`,
        {
          details: { index: k },
        },
      );
    }
    const buckets = this.node.o.partition.seqBuckets;
    if (s >= buckets) {
      throw new KvfError('BAD_REQUEST', `blocks[${k}].s: sequence bucket ${s} out of range [0, ${buckets})`, {
        details: { index: k, s, seqBuckets: buckets },
      });
    }
    return cellId({ g, s });
  }

  /** When the caller has seen a newer table than this node, fetch it once (shared by concurrent requests). */
  async catchUp(epoch: number): Promise<void> {
    const placement = this.node.placement;
    if (placement === undefined || epoch <= placement.epoch()) return;
    this.refreshing ??= placement.refresh().finally(() => {
      this.refreshing = undefined;
    });
    try {
      await this.refreshing;
    } catch (err) {
      this.node.log.warn('placement refresh failed', { err });
    }
  }

  private assertOwned(cells: Set<string>, epoch: number, primaryOnly: boolean): void {
    const table = this.node.placement?.current();
    for (const c of cells) {
      const q = { cellId: c, epoch, nodeId: this.node.nodeId, primaryOnly };
      const check = checkOwnership(table, q);
      if (!check.ok) throw ownershipError(check, q, table);
    }
  }

  private wireId(m: ModelArena, storeId: string): string {
    return `${this.node.instanceId}.${m.slot}.${storeId}`;
  }

  private modelOfWireId(id: string): ModelArena | undefined {
    const [inst, slot] = id.split('.');
    if (inst !== this.node.instanceId || slot === undefined || !/^\d+$/.test(slot)) return undefined;
    return this.node.modelBySlot(Number(slot));
  }

  private parseWireId(m: ModelArena, id: string, what: 'allocation' | 'lease'): string {
    const parts = id.split('.');
    if (parts.length !== 3 || parts[0] !== this.node.instanceId || parts[1] !== String(m.slot)) {
      throw new KvfError(
        what === 'allocation' ? 'ALLOCATION_NOT_FOUND' : 'LEASE_EXPIRED',
        `${what} ${id} is not one of this node's (restarted, or another model)`,
        { details: { id } },
      );
    }
    return parts[2] as string;
  }
}

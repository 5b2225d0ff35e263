/**
 * Replication on a shard node (docs/replication.md). Every node plays both parts, per cell:
 *
 * - **Primary** (first in the cell's replica set): after a commit it sends the new blocks to every
 *   other member of the set (`replicate`); with ack 'all' the commit reply waits for those it
 *   believes in sync, bounded by replicationAckTimeoutMs. A replica that fails or misses the bound
 *   is marked out of sync for the cells concerned (event, stats, `outOfSync` in the reply) and is
 *   told to `resync`; it is in sync again once it has listed those cells to the end (`list_cell`).
 * - **Replica** (any later position): it copies what it is sent, and after every placement change
 *   backfills the cells whose primary it has not copied in full (backfill.ts). Until then its
 *   locates of those cells answer NOT_IN_SYNC, so readers never take a half-filled copy's miss for
 *   the truth.
 *
 * Promotion needs no step here: the coordinator makes the first surviving replica primary at a
 * new epoch, and the node reports it (`promoted` event) when its table shows it.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { publishEvent } from '../../shared/cluster/events.js';
import type { JetStreamClient } from '@nats-io/jetstream';
import { KvfError, toKvfError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { cellId } from '../../shared/partition.js';
import { request } from '../../shared/protocol/codec.js';
import {
  EVENT_SUBJECTS,
  shardSubject,
  type PlacementTable,
  type ReplicationEvent,
} from '../../shared/protocol/cluster.js';
import {
  replicateReplySchema,
  resyncReplySchema,
  type AckMode,
  type ReplicaBlock,
} from '../../shared/protocol/shard.js';
import type { ModelArena } from './model-arena.js';

export interface ReplicationOptions {
  nodeId: string;
  replicationAckTimeoutMs: number;
  /** Bound of one replicate/resync request sent without waiting (ack 'primary'). */
  requestTimeoutMs: number;
}

export interface ReplicationHost {
  readonly nc: NatsConnection;
  readonly log: Logger;
  js(): JetStreamClient | undefined;
  table(): PlacementTable | undefined;
  incarnation(): string;
}

export interface CommittedBlock {
  hash: string;
  g: number;
  s: number;
  cell: string;
}

export interface AckOutcome {
  replicated: number;
  outOfSync: string[];
  /** False when no cell of the blocks has another member (rf 1): the reply omits the fields. */
  hadReplicas: boolean;
}

export class Replication {
  /** Primary side: cell -> replicas marked out of sync. */
  readonly outOfSync = new Map<string, Set<string>>();
  /** Replica side: cell -> the primary this node holds the cell in full from. */
  readonly inSync = new Map<string, string>();
  /**
   * Replica side: cell -> the cell epoch its sync was established at. The sync holds only while
   * the cell keeps that epoch: a cell that moved to other nodes and back (epoch bumped, even if
   * this node never saw the table in between) was written without this node meanwhile.
   */
  readonly inSyncEpoch = new Map<string, number>();
  readonly counters = { blocksOut: 0, blocksIn: 0, backfills: 0, backfillBlocks: 0 };
  private readonly resyncing = new Set<string>(); // `${replica}\u0000${cell}`

  constructor(
    private readonly o: ReplicationOptions,
    private readonly host: ReplicationHost,
  ) {}

  event(e: Omit<ReplicationEvent, 'nodeId' | 'at' | 'epoch'> & { epoch?: number }): void {
    const body: ReplicationEvent = {
      nodeId: this.o.nodeId,
      epoch: e.epoch ?? this.host.table()?.epoch ?? 0,
      at: Date.now(),
      ...e,
    };
    this.host.log.info(`replication: ${e.event}`, { ...body });
    const js = this.host.js();
    if (js === undefined) return;
    publishEvent(js, { subject: EVENT_SUBJECTS.replication, body }).catch((err: unknown) =>
      this.host.log.warn('event publish failed', { event: e.event, err }),
    );
  }

  isOutOfSync(cell: string, nodeId: string): boolean {
    return this.outOfSync.get(cell)?.has(nodeId) ?? false;
  }

  /** Replica side: may this node answer reads of `cell`? (the primary always may) */
  readable(cell: string, table: PlacementTable | undefined): boolean {
    const set = table?.cells[cell]?.replicas;
    if (set === undefined) return false;
    const pos = set.indexOf(this.o.nodeId);
    if (pos === 0) return true;
    return pos > 0 && this.syncedWith(cell, set[0] as string, table?.cells[cell]?.epoch);
  }

  /** Replica side: in sync with `primary` for `cell` at the cell epoch `epoch`. */
  syncedWith(cell: string, primary: string, epoch: number | undefined): boolean {
    return this.inSync.get(cell) === primary && epoch !== undefined && this.inSyncEpoch.get(cell) === epoch;
  }

  /** Replica side: record a completed backfill (or sync) of `cell` from `primary` at cell epoch `epoch`. */
  markInSync(cell: string, primary: string, epoch: number): void {
    this.inSync.set(cell, primary);
    this.inSyncEpoch.set(cell, epoch);
  }

  /** Replica side: the cell is no longer known to be complete here. */
  dropSync(cell: string): void {
    this.inSync.delete(cell);
    this.inSyncEpoch.delete(cell);
  }

  /**
   * Send freshly committed blocks to the other members of their cells. Resolves (ack 'all') when
   * every replica not already out of sync confirmed or missed the bound; (ack 'primary') at once.
   */
  async afterCommit(m: ModelArena, blocks: readonly CommittedBlock[], ack: AckMode): Promise<AckOutcome> {
    const table = this.host.table();
    const byReplica = new Map<string, { blocks: ReplicaBlock[]; cells: Set<string> }>();
    for (const b of blocks) {
      const set = table?.cells[b.cell]?.replicas ?? [];
      if (set[0] !== this.o.nodeId) continue;
      const st = m.store.get(b.hash, b.g);
      if (st === undefined) continue;
      for (const r of set.slice(1)) {
        let e = byReplica.get(r);
        if (e === undefined) byReplica.set(r, (e = { blocks: [], cells: new Set() }));
        e.cells.add(b.cell);
        e.blocks.push({
          hash: b.hash,
          g: b.g,
          s: b.s,
          i: st.chunkIndex,
          parent: st.parent,
          address: m.arena.addressOf(st.slot),
          checksum: st.checksum,
        });
      }
    }
    if (byReplica.size === 0) return { replicated: 0, outOfSync: [], hadReplicas: false };
    const epoch = table?.epoch ?? 0;
    const sends = [...byReplica].map(async ([replica, e]) => {
      const waited = ack === 'all' && [...e.cells].some((c) => !this.isOutOfSync(c, replica));
      const ok = await this.send(m.profile.id, epoch, replica, e.blocks, waited);
      if (!ok) this.markOutOfSync(m.profile.id, replica, [...e.cells]);
      return { replica, ok, waited };
    });
    if (ack === 'primary') {
      void Promise.all(sends);
      return { replicated: byReplica.size, outOfSync: [], hadReplicas: true };
    }
    const res = await Promise.all(sends);
    return {
      replicated: res.filter((r) => r.ok).length,
      outOfSync: res.filter((r) => !r.ok && r.waited).map((r) => r.replica),
      hadReplicas: true,
    };
  }

  /** One replicate request (split at the wire limit); true when every block is stored or present. */
  private async send(
    model: string,
    epoch: number,
    replica: string,
    blocks: ReplicaBlock[],
    bounded: boolean,
  ): Promise<boolean> {
    const timeoutMs = bounded ? this.o.replicationAckTimeoutMs : this.o.requestTimeoutMs;
    try {
      for (let at = 0; at < blocks.length; at += 1024) {
        const part = blocks.slice(at, at + 1024);
        const reply = await request(
          this.host.nc,
          shardSubject(replica, 'replicate'),
          {
            model,
            epoch,
            source: this.o.nodeId,
            sourceIncarnation: this.host.incarnation(),
            blocks: part.map((b) => ({ ...b, address: b.address.toString() })),
          },
          replicateReplySchema,
          { timeoutMs },
        );
        if (!reply.blocks.every((b) => b.status === 'stored' || b.status === 'present')) return false;
        this.counters.blocksOut += part.length;
      }
      return true;
    } catch (err) {
      this.host.log.warn('replicate failed', { replica, model, err: toKvfError(err).message });
      return false;
    }
  }

  /** Mark a replica out of sync for cells and tell it (retried until it accepts or leaves the cell). */
  markOutOfSync(model: string, replica: string, cells: string[]): void {
    const fresh = cells.filter((c) => !this.isOutOfSync(c, replica));
    for (const c of cells) {
      let s = this.outOfSync.get(c);
      if (s === undefined) this.outOfSync.set(c, (s = new Set()));
      s.add(replica);
    }
    if (fresh.length > 0) this.event({ event: 'out_of_sync', peer: replica, model, cells: fresh });
    void this.tellResync(model, replica, cells);
  }

  private async tellResync(model: string, replica: string, cells: string[]): Promise<void> {
    const key = `${replica}\u0000${cells.join(',')}`;
    if (this.resyncing.has(key)) return;
    this.resyncing.add(key);
    try {
      for (let attempt = 0; attempt < 20; attempt++) {
        const table = this.host.table();
        const still = cells.filter(
          (c) => this.isOutOfSync(c, replica) && table?.cells[c]?.replicas.includes(replica) === true,
        );
        if (still.length === 0) return;
        try {
          await request(
            this.host.nc,
            shardSubject(replica, 'resync'),
            { model, epoch: table?.epoch ?? 0, source: this.o.nodeId, cells: still },
            resyncReplySchema,
            { timeoutMs: this.o.requestTimeoutMs },
          );
          return;
        } catch {
          await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** attempt)));
        }
      }
    } finally {
      this.resyncing.delete(key);
    }
  }

  /** Primary side: a replica listed these cells to the end; it holds them in full from now on. */
  listedToEnd(replica: string, cells: readonly string[]): void {
    const back: string[] = [];
    for (const c of cells) {
      const s = this.outOfSync.get(c);
      if (s?.delete(replica) === true) back.push(c);
      if (s?.size === 0) this.outOfSync.delete(c);
    }
    if (back.length > 0) this.event({ event: 'in_sync', peer: replica, cells: back });
  }

  /** Drop state about cells and replicas the table no longer has (after a placement change). */
  prune(table: PlacementTable): void {
    for (const [c, s] of this.outOfSync) {
      const set = table.cells[c]?.replicas ?? [];
      if (set[0] !== this.o.nodeId) {
        this.outOfSync.delete(c);
        continue;
      }
      for (const r of s) if (!set.includes(r)) s.delete(r);
      if (s.size === 0) this.outOfSync.delete(c);
    }
    // A sync survives a table change only if the cell kept its replica set (same cell epoch, same
    // primary, this node still a replica): otherwise writes may have gone to others meanwhile.
    for (const [c, p] of this.inSync) {
      const cell = table.cells[c];
      if (
        cell === undefined ||
        cell.replicas[0] !== p ||
        cell.replicas.indexOf(this.o.nodeId) <= 0 ||
        this.inSyncEpoch.get(c) !== cell.epoch
      ) {
        this.dropSync(c);
      }
    }
  }

  /** Forget everything (the node was fenced: it re-joined as a new member). */
  reset(): void {
    this.outOfSync.clear();
    this.inSync.clear();
    this.inSyncEpoch.clear();
  }

  /** Cells of `blocks` (g, s) as ids; BAD_REQUEST when a block lacks s. */
  static cellsOf(blocks: readonly { g: number; s?: number | undefined }[]): string[] {
    return blocks.map((b, k) => {
      if (b.s === undefined) throw new KvfError('BAD_REQUEST', `blocks[${k}].s is required`);
      return cellId({ g: b.g, s: b.s });
    });
  }
}

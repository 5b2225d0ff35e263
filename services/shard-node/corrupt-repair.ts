/**
 * What a node does after dropping a block a reader reported corrupt (report_corrupt,
 * docs/replication.md "Corruption"): get an intact copy back instead of losing the chunk.
 *
 * - **Primary of the block's cell**: pull the block back from an in-sync replica (UCX GET from the
 *   replica's arena, verified against the checksum the primary had stored). The chunk's index
 *   entry is removed only when no replica holds an intact copy; a copy that exists but could not
 *   be pulled (transport trouble) keeps the entry, since readers fail over to it.
 * - **Replica**: pull the block back from the primary; when that fails, stop claiming the cell
 *   (not in sync, readers get NOT_IN_SYNC) and backfill it again. Never touches the index.
 * - **Hot-copy holder / not a member**: nothing (the primary's copy backs the index entry).
 *
 * A peer whose copy fails the checksum too is told so (report_corrupt, fire-and-forget), so two
 * bad copies do not keep pointing at each other.
 */
import { toKvfError } from '../../shared/errors.js';
import { cellId } from '../../shared/partition.js';
import { request } from '../../shared/protocol/codec.js';
import { shardSubject, type PlacementTable } from '../../shared/protocol/cluster.js';
import {
  locateReplySchema,
  releaseReplySchema,
  reportCorruptReplySchema,
} from '../../shared/protocol/shard.js';
import type { StoredBlock } from './block-store.js';
import type { ModelArena } from './model-arena.js';
import { pullBlocks } from './pull.js';
import type { ShardNode } from './shard-node.js';

/** Outcome of repairing one dropped block. */
export interface RepairOutcome {
  status:
    | 'repaired' // an intact copy is back in this node's arena (from `peer`)
    | 'copy_elsewhere' // not repaired, but a peer may hold an intact copy (index entry kept)
    | 'lost' // every source answered and none holds an intact copy (index entry goes)
    | 'not_member'; // hot copy or not in the cell: nothing to repair here
  peer?: string;
}

/** Attempts over the candidate sources before giving up on a block. */
const REPAIR_ROUNDS = 3;
/** Wait between rounds (a replica mid-reconnect, a busy peer). */
const REPAIR_RETRY_MS = 200;

type PeerResult = 'stored' | 'absent' | 'corrupt' | 'failed';

export class CorruptRepair {
  constructor(private readonly node: ShardNode) {}

  /**
   * Repair blocks just dropped as corrupt (snapshots taken before the drop). Returns one outcome
   * per block, in order.
   */
  async afterDrop(m: ModelArena, dropped: readonly StoredBlock[]): Promise<RepairOutcome[]> {
    return Promise.all(dropped.map((b) => this.repairOne(m, b)));
  }

  private async repairOne(m: ModelArena, b: StoredBlock): Promise<RepairOutcome> {
    const table = this.node.placement?.current();
    if (b.hot || b.s === undefined || table === undefined) return { status: 'not_member' };
    const cell = cellId({ g: b.g, s: b.s });
    const set = table.cells[cell]?.replicas ?? [];
    const pos = set.indexOf(this.node.nodeId);
    if (pos < 0) return { status: 'not_member' };
    const rep = this.node.replication();
    // Primary: any replica it believes in sync. Replica: the primary.
    const sources = pos === 0 ? set.slice(1).filter((r) => !rep.isOutOfSync(cell, r)) : [set[0] as string];
    let seenIntact = false;
    for (let round = 0; round < REPAIR_ROUNDS; round++) {
      if (round > 0) await new Promise((r) => setTimeout(r, REPAIR_RETRY_MS));
      let anyRetryable = false;
      for (const peer of sources) {
        const r = await this.pullFrom(m, table, peer, b);
        if (r === 'stored') return { status: 'repaired', peer };
        if (r === 'failed') {
          // Unknown whether the peer holds it (timeout, transport): assume it may, keep the entry.
          anyRetryable = true;
          seenIntact = true;
        }
      }
      if (!anyRetryable) break; // every source answered: absent or corrupt there too
    }
    if (pos > 0) {
      // Stop serving the cell until a backfill has copied it again from the primary.
      if (rep.inSync.get(cell) === set[0]) rep.dropSync(cell);
      this.node.backfiller().reconcile();
      return { status: 'copy_elsewhere', peer: set[0] as string };
    }
    return { status: seenIntact ? 'copy_elsewhere' : 'lost' };
  }

  /** Copy one block from `peer` (locate {hotCopy}: no ownership check, content-addressed). */
  private async pullFrom(
    m: ModelArena,
    table: PlacementTable,
    peer: string,
    b: StoredBlock,
  ): Promise<PeerResult> {
    const incarnation = table.members[peer]?.incarnation;
    if (incarnation === undefined) return 'failed';
    const nc = this.node.deps.nc;
    const timeoutMs = this.node.o.peerRequestTimeoutMs;
    const model = m.profile.id;
    let leaseId: string | undefined;
    try {
      const loc = await request(
        nc,
        shardSubject(peer, 'locate'),
        {
          model,
          epoch: table.epoch,
          blocks: [{ hash: b.hash, g: b.g, i: b.chunkIndex, ...(b.s !== undefined ? { s: b.s } : {}) }],
          hotCopy: true,
        },
        locateReplySchema,
        { timeoutMs },
      );
      leaseId = loc.leaseId;
      const found = loc.blocks[0];
      if (found?.found !== true || found.address === undefined) return 'absent';
      const source = await this.node.peers().member(peer, incarnation);
      // Verified against the checksum this node stored at commit, not the peer's word.
      const r = await pullBlocks(
        m,
        this.node.peers(),
        source,
        [
          {
            hash: b.hash,
            g: b.g,
            s: b.s,
            i: b.chunkIndex,
            parent: b.parent,
            address: found.address,
            checksum: b.checksum,
          },
        ],
        { hot: false },
      );
      const st = r.statuses[0];
      if (st === 'stored' || st === 'present') return 'stored';
      if (st === 'checksum_mismatch') {
        this.tellCorrupt(peer, model, b);
        return 'corrupt';
      }
      return 'failed';
    } catch (err) {
      this.node.log.warn('corrupt block repair: pull failed', {
        peer,
        hash: b.hash,
        g: b.g,
        err: toKvfError(err).message,
      });
      return 'failed';
    } finally {
      if (leaseId !== undefined) {
        request(nc, shardSubject(peer, 'release'), { leaseIds: [leaseId] }, releaseReplySchema, {
          timeoutMs,
        }).catch(() => undefined); // the lease expires on its own
      }
    }
  }

  private tellCorrupt(peer: string, model: string, b: StoredBlock): void {
    request(
      this.node.deps.nc,
      shardSubject(peer, 'report_corrupt'),
      { model, blocks: [{ hash: b.hash, g: b.g }] },
      reportCorruptReplySchema,
      { timeoutMs: this.node.o.peerRequestTimeoutMs },
    ).catch(() => undefined);
  }
}

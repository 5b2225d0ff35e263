/**
 * Handlers of the replication ops (schemas in shared/protocol/shard.ts, prose in
 * docs/replication.md): replicate, list_cell, resync, drop_copies, report_corrupt, debug_corrupt.
 */
import { checkOwnership, ownershipError } from '../../shared/cluster/epochs.js';
import { KvfError } from '../../shared/errors.js';
import { cellId } from '../../shared/partition.js';
import type { Infer } from '../../shared/protocol/schema.js';
import type {
  debugCorruptRequestSchema,
  dropCopiesRequestSchema,
  ListCellRequest,
  ReplicaBlock,
  ReplicateRequest,
  reportCorruptRequestSchema,
  resyncRequestSchema,
} from '../../shared/protocol/shard.js';
import type { StoredBlock } from './block-store.js';
import { CorruptRepair } from './corrupt-repair.js';
import { pullBlocks } from './pull.js';
import { recordPull } from '../../shared/metrics/sources.js';
import type { ShardNode } from './shard-node.js';

type Reply = Record<string, unknown>;

/** Env switch of the test hooks (debug_corrupt). */
export const TEST_HOOKS_ENV = 'KVFABRIC_TEST_HOOKS';

/** Most blocks in one list_cell reply. */
export const LIST_PAGE_BLOCKS_MAX = 1024;

export class ReplicaOps {
  private readonly repair: CorruptRepair;

  constructor(
    private readonly node: ShardNode,
    private readonly catchUp: (epoch: number) => Promise<void>,
  ) {
    this.repair = new CorruptRepair(node);
  }

  async replicate(req: ReplicateRequest): Promise<Reply> {
    const m = this.node.model(req.model);
    this.node.assertWritable();
    if (req.hot !== true) {
      // A replica copy is accepted when this node is in the block's cell (any position) in its
      // table, refreshed to the sender's epoch: copying content-addressed blocks is always safe,
      // so a sender one epoch behind is not refused.
      await this.catchUp(req.epoch);
      const table = this.node.placement?.current();
      for (const c of new Set(cellsOf(req.blocks))) {
        if (table?.cells[c]?.replicas.includes(this.node.nodeId) !== true) {
          throw new KvfError('NOT_OWNER', `node ${this.node.nodeId} is not a replica of cell ${c}`, {
            details: { cellId: c, nodeId: this.node.nodeId, tableEpoch: table?.epoch ?? 0 },
          });
        }
      }
    }
    const source = await this.node.peers().member(req.source, req.sourceIncarnation);
    const r = await pullBlocks(m, this.node.peers(), source, req.blocks, { hot: req.hot === true });
    recordPull(this.node.deps.metrics, r);
    if (req.hot === true) {
      r.statuses.forEach((st, k) => {
        const b = req.blocks[k] as ReplicaBlock;
        if (st === 'stored') this.node.hot().heldCopy(m.profile.id, b.hash, b.g);
      });
    } else {
      this.node.replication().counters.blocksIn += r.statuses.filter((s) => s === 'stored').length;
    }
    return { blocks: r.statuses.map((status) => ({ status })) };
  }

  async listCell(req: ListCellRequest): Promise<Reply> {
    const m = this.node.model(req.model);
    await this.catchUp(req.epoch);
    const table = this.node.placement?.current();
    const me = this.node.nodeId;
    let cells: Set<string>;
    if (req.cells !== undefined) {
      cells = new Set(req.cells);
      for (const c of cells) {
        const q = { cellId: c, epoch: req.epoch, nodeId: me, primaryOnly: true };
        const check = checkOwnership(table, q);
        if (!check.ok) throw ownershipError(check, q, table);
      }
    } else {
      cells = new Set(
        Object.entries(table?.cells ?? {})
          .filter(([, p]) => p.replicas[0] === me)
          .map(([c]) => c),
      );
    }
    // Pages stay well under the NATS payload limit (a listed block is ~270 bytes of JSON).
    const limit = Math.min(req.limit ?? LIST_PAGE_BLOCKS_MAX, LIST_PAGE_BLOCKS_MAX);
    const after = req.cursor ?? '';
    const matching: ReplicaBlock[] = [];
    for (const b of m.store.blocks()) {
      if (b.hot || b.s === undefined || !cells.has(cellId({ g: b.g, s: b.s }))) continue;
      const key = `${b.hash}:${b.g}`;
      if (key <= after) continue;
      matching.push({
        hash: b.hash,
        g: b.g,
        s: b.s,
        i: b.chunkIndex,
        parent: b.parent,
        address: m.arena.addressOf(b.slot),
        checksum: b.checksum,
      });
    }
    matching.sort((a, b) => (`${a.hash}:${a.g}` < `${b.hash}:${b.g}` ? -1 : 1));
    const page = matching.slice(0, limit);
    const more = matching.length > limit;
    const last = page[page.length - 1];
    if (!more && req.from !== undefined) this.node.replication().listedToEnd(req.from, [...cells]);
    return {
      groups: m.groupCount,
      incarnation: this.node.incarnation(),
      blocks: page.map((b) => ({ ...b, address: b.address.toString() })),
      ...(more && last ? { nextCursor: `${last.hash}:${last.g}` } : {}),
    };
  }

  resync(req: Infer<typeof resyncRequestSchema>): Reply {
    this.node.model(req.model);
    const rep = this.node.replication();
    let accepted = 0;
    for (const c of req.cells) {
      if (rep.inSync.get(c) === req.source) {
        rep.dropSync(c);
        accepted++;
      }
    }
    this.node.backfiller().reconcile();
    return { accepted };
  }

  dropCopies(req: Infer<typeof dropCopiesRequestSchema>): Reply {
    const m = this.node.model(req.model);
    return { dropped: this.node.hot().dropCopies(m, req.blocks) };
  }

  /**
   * Re-verify blocks a reader saw fail their crc32c; drop the corrupt ones and pull them back from
   * another copy (corrupt-repair.ts). A chunk's index entry goes only when no intact copy is left.
   */
  async reportCorrupt(req: Infer<typeof reportCorruptRequestSchema>): Promise<Reply> {
    const m = this.node.model(req.model);
    const statuses: string[] = [];
    const dropped: StoredBlock[] = [];
    for (const b of req.blocks) {
      const st = m.store.get(b.hash, b.g);
      if (st === undefined || b.g >= m.groupCount) {
        statuses.push('absent');
        continue;
      }
      const actual = m.arena.checksum(st.slot, 0, m.groupBytes(b.g)) >>> 0;
      if (actual === st.checksum >>> 0) {
        statuses.push('intact');
        continue;
      }
      m.store.drop(b.hash, b.g);
      dropped.push(st);
      statuses.push('dropped');
    }
    if (dropped.length > 0) {
      this.node.counters().checksumFailures += dropped.length;
      const outcomes = await this.repair.afterDrop(m, dropped);
      const lost = dropped.filter((_, k) => outcomes[k]?.status === 'lost').map((b) => b.hash);
      if (lost.length > 0) await this.node.deps.index.remove([...new Set(lost)]).catch(() => false);
      const repaired = outcomes.filter((o) => o.status === 'repaired').length;
      this.node.replication().event({
        event: 'corrupt_dropped',
        model: req.model,
        blocks: dropped.length,
        reason: `repaired ${repaired}, index entries removed ${lost.length}`,
      });
    }
    return { blocks: statuses.map((status) => ({ status })) };
  }

  debugCorrupt(req: Infer<typeof debugCorruptRequestSchema>): Reply {
    if (process.env[TEST_HOOKS_ENV] !== '1') {
      throw new KvfError('BAD_REQUEST', `debug_corrupt needs ${TEST_HOOKS_ENV}=1 on the node`);
    }
    const m = this.node.model(req.model);
    const st = m.store.get(req.hash, req.g);
    if (st === undefined)
      throw new KvfError('BLOCK_NOT_FOUND', `block ${req.hash}:${req.g} is not held here`);
    if (req.byteOffset >= m.groupBytes(req.g)) {
      throw new KvfError('OUT_OF_RANGE', `byteOffset ${req.byteOffset} outside the block`);
    }
    const one = Buffer.alloc(1);
    m.arena.read(st.slot, req.byteOffset, one);
    one[0] = (one[0] as number) ^ 0xff;
    m.arena.write(st.slot, req.byteOffset, one);
    return { flipped: true };
  }
}

function cellsOf(blocks: readonly ReplicaBlock[]): string[] {
  return blocks.map((b, k) => {
    if (b.s === undefined) throw new KvfError('BAD_REQUEST', `blocks[${k}].s is required for replica copies`);
    return cellId({ g: b.g, s: b.s });
  });
}

/**
 * The put flow: plan from the cached placement -> ONE allocate per primary node (refusals refresh
 * the table and retry, bounded) -> UCX puts into the allocated slots -> ONE commit per node with
 * every block's crc32c -> abort whatever was allocated and not committed -> re-check blocks that
 * another writer was writing -> index entries for the leading chunks whose every layer group is
 * committed or was already present (data before index, always).
 *
 * A chunk with a block that is 'full', refused or failed is not cached, and no chunk after it is
 * indexed (a prefix with a hole is unreachable), so blocks allocated past it are not even written.
 */
import { crc32cRanges } from '../../native/index.js';
import type { MemberRecord } from '../protocol/cluster.js';
import {
  abortReplySchema,
  allocateReplySchema,
  commitReplySchema,
  locateReplySchema,
  type AckMode,
} from '../protocol/shard.js';
import { currentTable, refreshedTable, type FlowContext } from './context.js';
import { buffersChunkCapacity, type KvBuffers, type ModelLayout } from './layout.js';
import { BlockGrid, groupByPrimary, planBlocks, type BlockRef } from './plan.js';
import { callShard } from './shard-rpc.js';

export interface PutResult {
  /** Leading chunks now cached and indexed that this call wrote at least one block of. */
  chunksStored: number;
  /** Leading chunks that were already cached in full (nothing written). */
  chunksPresent: number;
  /** (chunksStored + chunksPresent) x chunkTokens when the index write succeeded, else 0. */
  tokensIndexed: number;
  /** The index write failed (Redis unreachable): the data is stored but not findable yet. */
  indexDegraded: boolean;
  /** Bytes written over UCX and committed. */
  bytes: number;
  /** Refresh-and-retry rounds after STALE_EPOCH / NOT_OWNER. */
  staleRetries: number;
  /** The ack mode the commits ran under. */
  ack: AckMode;
  /**
   * Per primary written to, the replica nodes that confirmed every block of theirs (ack 'all') or
   * were sent them (ack 'primary'), as the commit reply counts them; this is the fewest over this
   * put's commits (0 when nothing was committed or the cluster has no replication). With ack
   * 'all' and `outOfSync` empty, every stored block reached every in-sync replica of its cell.
   */
  replicated: number;
  /** Replicas that did not confirm in time (now out of sync for those cells), across all commits. */
  outOfSync: string[];
}

export interface PutInput {
  model: string;
  layout: ModelLayout;
  hashes: readonly string[];
  kv: KvBuffers;
  ack: AckMode;
}

/** Replication outcome of the commits of one put. */
interface ReplicationTally {
  replicated: number | undefined;
  outOfSync: Set<string>;
}

type State = 'unplaced' | 'allocated' | 'present' | 'busy' | 'full' | 'failed' | 'committed';

interface AllocBlock {
  ref: BlockRef;
  address: bigint | undefined;
}

interface NodeAlloc {
  nodeId: string;
  epoch: number;
  allocId: string | undefined;
  allocated: AllocBlock[];
}

/** Per-block state of a put, and the plan's BlockRef of every (chunk, group). */
class States {
  private readonly s: State[];
  private readonly refs: BlockRef[];
  constructor(
    readonly chunks: number,
    readonly groups: number,
    planned: Iterable<BlockRef>,
  ) {
    this.s = new Array<State>(chunks * groups).fill('unplaced');
    this.refs = new Array<BlockRef>(chunks * groups);
    for (const b of planned) this.refs[b.i * groups + b.g] = b;
  }
  refOf(i: number, g: number): BlockRef {
    const r = this.refs[i * this.groups + g];
    if (r === undefined) throw new Error(`unreachable: block (${i}, ${g}) not planned`);
    return r;
  }
  get(ref: BlockRef): State {
    return this.s[ref.i * this.groups + ref.g] as State;
  }
  set(ref: BlockRef, st: State): void {
    this.s[ref.i * this.groups + ref.g] = st;
  }
  /** First chunk with a block outside `ok` (chunks when none). */
  firstChunkNotIn(ok: readonly State[]): number {
    for (let i = 0; i < this.chunks; i++) {
      for (let g = 0; g < this.groups; g++) {
        if (!ok.includes(this.s[i * this.groups + g] as State)) return i;
      }
    }
    return this.chunks;
  }
}

async function allocateAll(
  ctx: FlowContext,
  model: string,
  byNode: Map<string, BlockRef[]>,
  epoch: number,
  states: States,
): Promise<{ allocs: NodeAlloc[]; staleRetries: number }> {
  const allocs: NodeAlloc[] = [];
  let staleRetries = 0;
  let pending = byNode;
  for (let round = 0; pending.size > 0; round++) {
    const entries = [...pending].map(([nodeId, blocks]) => {
      const sent = blocks.slice(0, ctx.opts.blocksPerRequestMax);
      for (const b of blocks.slice(sent.length)) states.set(b, 'failed');
      return [nodeId, sent] as const;
    });
    const replies = await Promise.all(
      entries.map(([nodeId, blocks]) =>
        callShard(
          ctx.nc,
          nodeId,
          'allocate',
          {
            model,
            epoch,
            blocks: blocks.map((b) => ({ hash: b.hash, g: b.g, i: b.i, parent: b.parent, s: b.s })),
          },
          allocateReplySchema,
          ctx.opts.requestTimeoutMs,
        ),
      ),
    );
    const refused: BlockRef[] = [];
    replies.forEach((r, k) => {
      const [nodeId, blocks] = entries[k] as readonly [string, BlockRef[]];
      if (r.kind === 'refused') {
        refused.push(...blocks);
        return;
      }
      if (r.kind === 'failed' || r.reply.blocks.length !== blocks.length) {
        ctx.opts.logger?.debug('allocate failed', {
          nodeId,
          err: r.kind === 'failed' ? r.error : 'bad reply',
        });
        for (const b of blocks) states.set(b, 'failed');
        if (r.kind === 'ok' && r.reply.allocId !== undefined) void abort(ctx, model, nodeId, r.reply.allocId);
        return;
      }
      const alloc: NodeAlloc = { nodeId, epoch, allocId: r.reply.allocId, allocated: [] };
      r.reply.blocks.forEach((rb, j) => {
        const ref = blocks[j] as BlockRef;
        states.set(ref, rb.status);
        if (rb.status === 'allocated') alloc.allocated.push({ ref, address: rb.address });
      });
      allocs.push(alloc);
    });
    if (refused.length === 0) break;
    if (round >= ctx.opts.staleRetriesMax) {
      for (const b of refused) states.set(b, 'failed');
      break;
    }
    staleRetries++;
    const table = await refreshedTable(ctx);
    const regrouped = groupByPrimary(refused, table.cells);
    for (const b of regrouped.unplaced) states.set(b, 'unplaced');
    pending = regrouped.byNode;
    epoch = table.epoch;
  }
  return { allocs, staleRetries };
}

async function abort(ctx: FlowContext, model: string, nodeId: string, allocId: string): Promise<void> {
  const r = await callShard(
    ctx.nc,
    nodeId,
    'abort',
    { model, allocId },
    abortReplySchema,
    ctx.opts.requestTimeoutMs,
  );
  if (r.kind !== 'ok')
    ctx.opts.logger?.debug('abort failed (the node reclaims it later)', { nodeId, allocId });
}

/**
 * CRC-32C of every transfer's source range (transfers may read different buffers: one per layer
 * group), in transfer order, computed on the thread pool.
 */
async function sourceChecksums(
  transfers: readonly { local: Uint8Array; localOffset: number; length: number }[],
): Promise<number[]> {
  const byBuffer = new Map<Uint8Array, number[]>();
  transfers.forEach((t, k) => {
    const list = byBuffer.get(t.local);
    if (list === undefined) byBuffer.set(t.local, [k]);
    else list.push(k);
  });
  const crcs = new Array<number>(transfers.length).fill(0);
  await Promise.all(
    [...byBuffer].map(async ([buf, ks]) => {
      const got = await crc32cRanges(
        buf,
        ks.map((k) => ({
          offset: (transfers[k] as (typeof transfers)[number]).localOffset,
          length: (transfers[k] as (typeof transfers)[number]).length,
        })),
      );
      ks.forEach((k, j) => (crcs[k] = got[j] as number));
    }),
  );
  return crcs;
}

/** UCX-put one node's allocated blocks below `cut`, commit them, abort the rest. Returns bytes. */
async function writeNode(
  ctx: FlowContext,
  input: PutInput,
  alloc: NodeAlloc,
  member: MemberRecord | undefined,
  cut: number,
  states: States,
  repl: ReplicationTally,
): Promise<number> {
  const region = member && Object.hasOwn(member.models, input.model) ? member.models[input.model] : undefined;
  const bbOf = (b: AllocBlock): number => input.layout.blockBytes[b.ref.g] as number;
  const toWrite = alloc.allocated.filter(
    (b) => b.ref.i < cut && b.address !== undefined && region !== undefined && region.blockBytes >= bbOf(b),
  );
  let bytes = 0;
  if (toWrite.length > 0 && member !== undefined && alloc.allocId !== undefined) {
    const transfers = toWrite.map((b) => ({
      remoteAddress: b.address as bigint,
      local: input.kv.groups[b.ref.g] as Uint8Array,
      localOffset: b.ref.i * bbOf(b),
      length: bbOf(b),
    }));
    // The writer's CRCs are taken before any byte leaves (on the thread pool, off the event loop):
    // bytes that change after this point (in flight, or a caller reusing its buffer mid-put) then
    // fail the node's check at commit instead of being acknowledged. Computing them alongside the
    // transfer would be faster but could checksum the changed bytes (the chaos suite's
    // corrupt-in-flight scenario caught exactly that).
    const checksums = await sourceChecksums(transfers);
    let written: number[] = [];
    try {
      const results = await ctx.data.put(member, input.model, transfers);
      written = results.flatMap((r, k) => (r.ok ? [k] : []));
    } catch (err) {
      ctx.opts.logger?.debug('UCX put batch failed', { nodeId: alloc.nodeId, err });
    }
    if (written.length > 0) {
      const body = {
        model: input.model,
        epoch: alloc.epoch,
        allocId: alloc.allocId,
        ack: input.ack,
        blocks: written.map((k) => {
          const b = toWrite[k] as AllocBlock;
          return { hash: b.ref.hash, g: b.ref.g, checksum: checksums[k] as number };
        }),
      };
      const r = await callShard(
        ctx.nc,
        alloc.nodeId,
        'commit',
        body,
        commitReplySchema,
        ctx.opts.requestTimeoutMs,
      );
      if (r.kind === 'ok' && r.reply.blocks.length === written.length) {
        if (r.reply.blocks.some((cb) => cb.status === 'committed')) {
          const n = r.reply.replicated ?? 0;
          repl.replicated = Math.min(repl.replicated ?? n, n);
          for (const node of r.reply.outOfSync ?? []) repl.outOfSync.add(node);
        }
        r.reply.blocks.forEach((cb, j) => {
          if (cb.status !== 'committed') return;
          const k = written[j] as number;
          states.set((toWrite[k] as AllocBlock).ref, 'committed');
          bytes += (transfers[k] as { length: number }).length;
        });
      }
    }
  }
  const leftOver = alloc.allocated.some((b) => states.get(b.ref) !== 'committed');
  for (const b of alloc.allocated) if (states.get(b.ref) !== 'committed') states.set(b.ref, 'failed');
  if (leftOver && alloc.allocId !== undefined) await abort(ctx, input.model, alloc.nodeId, alloc.allocId);
  return bytes;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Blocks another writer had in flight: wait for them to become readable, bounded. Two workers
 * putting one prompt at once may each win some layer groups; the one that commits last sees the
 * other's blocks present here and indexes the chunk.
 */
async function recheckBusy(ctx: FlowContext, model: string, states: States): Promise<void> {
  let delay = ctx.opts.busyRecheckDelayMs;
  for (let attempt = 0; attempt < ctx.opts.busyRecheckMax; attempt++) {
    const cut = states.firstChunkNotIn(['committed', 'present', 'busy']);
    const busy: BlockRef[] = [];
    for (let i = 0; i < cut; i++) {
      for (let g = 0; g < states.groups; g++) {
        const ref = states.refOf(i, g);
        if (states.get(ref) === 'busy') busy.push(ref);
      }
    }
    if (busy.length === 0) return;
    await sleep(delay);
    delay *= 2;
    const table = await currentTable(ctx);
    const { byNode } = groupByPrimary(busy, table.cells);
    await Promise.all(
      [...byNode].map(async ([nodeId, blocks]) => {
        const body = {
          model,
          epoch: table.epoch,
          blocks: blocks.map((b) => ({ hash: b.hash, g: b.g, i: b.i, s: b.s })),
        };
        const r = await callShard(
          ctx.nc,
          nodeId,
          'locate',
          body,
          locateReplySchema,
          ctx.opts.requestTimeoutMs,
        );
        if (r.kind !== 'ok') return;
        if (r.reply.leaseId !== undefined) ctx.releaser.release(nodeId, [r.reply.leaseId]);
        r.reply.blocks.forEach((lb, k) => {
          if (lb.found && k < blocks.length) states.set(blocks[k] as BlockRef, 'present');
        });
      }),
    );
  }
}

export async function runPut(ctx: FlowContext, input: PutInput): Promise<PutResult> {
  const { layout, hashes } = input;
  const G = layout.groups.length;
  const want = Math.min(hashes.length, buffersChunkCapacity(layout, input.kv));
  const result: PutResult = {
    chunksStored: 0,
    chunksPresent: 0,
    tokensIndexed: 0,
    indexDegraded: false,
    bytes: 0,
    staleRetries: 0,
    ack: input.ack,
    replicated: 0,
    outOfSync: [],
  };
  if (want === 0) return result;
  const table = await currentTable(ctx);
  const plan = planBlocks({
    placement: table,
    hashes,
    chunks: want,
    groups: G,
    chunkTokens: layout.chunkTokens,
    blocksPerNodeMax: ctx.opts.blocksPerRequestMax,
  });
  const states = new States(plan.chunks, G, [...[...plan.byNode.values()].flat(), ...plan.unplaced]);
  const { allocs, staleRetries } = await allocateAll(ctx, input.model, plan.byNode, table.epoch, states);
  result.staleRetries = staleRetries;
  // Nothing at or after the first uncacheable chunk can be reached: do not write it.
  const cut = states.firstChunkNotIn(['allocated', 'present', 'busy']);
  const members = await Promise.all(allocs.map((a) => ctx.members.resolve(a.nodeId)));
  const repl: ReplicationTally = { replicated: undefined, outOfSync: new Set() };
  const bytes = await Promise.all(
    allocs.map((a, k) => writeNode(ctx, input, a, members[k], cut, states, repl)),
  );
  result.bytes = bytes.reduce((a, b) => a + b, 0);
  result.replicated = repl.replicated ?? 0;
  result.outOfSync = [...repl.outOfSync].sort();
  await recheckBusy(ctx, input.model, states);
  const grid = new BlockGrid(plan.chunks, G);
  const wrote = new Uint8Array(plan.chunks);
  for (let i = 0; i < plan.chunks; i++) {
    for (let g = 0; g < G; g++) {
      const st = states.get(states.refOf(i, g));
      grid.set(i, g, st === 'committed' || st === 'present');
      if (st === 'committed') wrote[i] = 1;
    }
  }
  const k = grid.leadingComplete();
  if (k === 0) return result;
  const entries = hashes.slice(0, k).map((hash, i) => ({ hash, meta: { m: input.model, i } }));
  if (!(await ctx.index.publish(entries))) {
    result.indexDegraded = true;
    return result;
  }
  result.chunksStored = wrote.subarray(0, k).reduce((a, b) => a + b, 0);
  result.chunksPresent = k - result.chunksStored;
  result.tokensIndexed = k * layout.chunkTokens;
  return result;
}

/**
 * The get flow: lookup result -> plan from the cached placement -> ONE locate per node (batched,
 * with the table epoch; refusals refresh the table and retry, bounded) -> UCX gets straight into
 * the caller's buffers, one batch per (node, layer group), group 0 first -> crc32c of every block
 * checked against the locate reply before anything is reported -> leases released in the
 * background -> hit = leading chunks whose every layer group arrived intact.
 *
 * A block that is missing, refused, unreachable, late (past its lease) or corrupt marks its chunk
 * bad: the hit stops before it. It never fails the call and its bytes are never counted as served.
 */
import { crc32cRange } from '../../native/index.js';
import type { Logger } from '../log.js';
import type { MemberRecord } from '../protocol/cluster.js';
import { locateReplySchema, type LocateReply } from '../protocol/shard.js';
import { currentTable, refreshedTable, type FlowContext } from './context.js';
import { buffersChunkCapacity, type KvBuffers, type ModelLayout } from './layout.js';
import { BlockGrid, groupByPrimary, planBlocks, type BlockRef } from './plan.js';
import { callShard } from './shard-rpc.js';

export interface LayerGroupReady {
  /** Layer group index. */
  group: number;
  /** Leading chunks of this group that arrived intact (the final hit may be shorter). */
  chunks: number;
  tokens: number;
}

export interface GetResult {
  /** Tokens filled: `chunks` x chunkTokens. Bytes past them in the target are unspecified. */
  tokens: number;
  chunks: number;
  /** Chunks the index claimed (what lookup said), before capping and transfer. */
  indexedChunks: number;
  /** The index was unreachable (the shards were asked directly when degradedShardLookup). */
  degraded: boolean;
  /** Bytes served: the hit chunks' blocks, all layer groups (= tokens x bytes per token). */
  bytes: number;
  /** Bytes transferred and verified, including blocks past a gap that the hit cannot use. */
  bytesMoved: number;
  /** Planned blocks that did not arrive intact. */
  failedBlocks: number;
  checksumFailures: number;
  /** Refresh-and-retry rounds after STALE_EPOCH / NOT_OWNER. */
  staleRetries: number;
}

export interface GetInput {
  model: string;
  layout: ModelLayout;
  hashes: readonly string[];
  lookup: { chunks: number; degraded: boolean };
  target: KvBuffers;
  onLayerGroup?: (ready: LayerGroupReady) => void;
}

interface LocatedBlock {
  ref: BlockRef;
  address: bigint;
  checksum: number;
}

interface NodeRead {
  nodeId: string;
  leaseId: string | undefined;
  /** Wall-clock ms after which the lease may have run out: bytes read later are not trusted. */
  deadlineMs: number;
  blocks: LocatedBlock[];
}

interface LocateOutcome {
  reads: NodeRead[];
  /** Blocks the owning node answered found: false for (vanished). */
  notFound: BlockRef[];
  staleRetries: number;
}

async function locateNode(
  ctx: FlowContext,
  model: string,
  nodeId: string,
  blocks: BlockRef[],
  epoch: number,
): Promise<{ kind: 'ok'; read: NodeRead; notFound: BlockRef[] } | { kind: 'refused' | 'failed' }> {
  const sentAt = Date.now();
  const body = { model, epoch, blocks: blocks.map((b) => ({ hash: b.hash, g: b.g, i: b.i, s: b.s })) };
  const r = await callShard(ctx.nc, nodeId, 'locate', body, locateReplySchema, ctx.opts.requestTimeoutMs);
  if (r.kind !== 'ok') {
    ctx.opts.logger?.debug('locate did not succeed', { nodeId, kind: r.kind, code: r.error.codeName });
    return { kind: r.kind };
  }
  const reply: LocateReply = r.reply;
  if (reply.blocks.length !== blocks.length) {
    ctx.opts.logger?.warn('locate reply has the wrong number of blocks', { nodeId });
    if (reply.leaseId !== undefined) ctx.releaser.release(nodeId, [reply.leaseId]);
    return { kind: 'failed' };
  }
  const read: NodeRead = {
    nodeId,
    leaseId: reply.leaseId,
    deadlineMs: sentAt + reply.leaseTtlMs,
    blocks: [],
  };
  const notFound: BlockRef[] = [];
  reply.blocks.forEach((b, k) => {
    const ref = blocks[k] as BlockRef;
    if (b.found && b.address !== undefined && b.checksum !== undefined) {
      read.blocks.push({ ref, address: b.address, checksum: b.checksum });
    } else if (!b.found) notFound.push(ref);
  });
  return { kind: 'ok', read, notFound };
}

/** One locate per node; refused blocks are re-planned on a refreshed table, bounded rounds. */
async function locateAll(
  ctx: FlowContext,
  model: string,
  byNode: Map<string, BlockRef[]>,
  epoch: number,
): Promise<LocateOutcome> {
  const out: LocateOutcome = { reads: [], notFound: [], staleRetries: 0 };
  let pending = byNode;
  for (let round = 0; pending.size > 0; round++) {
    const entries = [...pending];
    const results = await Promise.all(
      entries.map(([nodeId, blocks]) =>
        locateNode(ctx, model, nodeId, blocks.slice(0, ctx.opts.blocksPerRequestMax), epoch),
      ),
    );
    const refused: BlockRef[] = [];
    results.forEach((r, k) => {
      if (r.kind === 'ok') {
        out.reads.push(r.read);
        out.notFound.push(...r.notFound);
      } else if (r.kind === 'refused') refused.push(...(entries[k] as [string, BlockRef[]])[1]);
    });
    if (refused.length === 0 || round >= ctx.opts.staleRetriesMax) break;
    out.staleRetries++;
    const table = await refreshedTable(ctx);
    pending = groupByPrimary(refused, table.cells).byNode;
    epoch = table.epoch;
  }
  return out;
}

interface TransferTally {
  bytes: number;
  checksumFailures: number;
}

/** UCX-get one node's blocks of one layer group, then verify each against its checksum. */
async function readGroup(
  ctx: FlowContext,
  input: GetInput,
  read: NodeRead,
  member: MemberRecord | undefined,
  g: number,
  grid: BlockGrid,
  tally: TransferTally,
): Promise<void> {
  const blocks = read.blocks.filter((b) => b.ref.g === g);
  if (blocks.length === 0 || member === undefined) return;
  const bb = input.layout.blockBytes[g] as number;
  const region = Object.hasOwn(member.models, input.model) ? member.models[input.model] : undefined;
  if (region === undefined || region.blockBytes < bb) {
    ctx.opts.logger?.warn('node region does not fit the model layout', { nodeId: read.nodeId, g });
    return;
  }
  const local = input.target.groups[g] as Uint8Array;
  let results;
  try {
    results = await ctx.data.get(
      member,
      input.model,
      blocks.map((b) => ({ remoteAddress: b.address, local, localOffset: b.ref.i * bb, length: bb })),
    );
  } catch (err) {
    ctx.opts.logger?.debug('UCX get batch failed', { nodeId: read.nodeId, g, err });
    return;
  }
  const late = Date.now() > read.deadlineMs;
  results.forEach((res, k) => {
    const b = blocks[k] as LocatedBlock;
    if (!res.ok || late) return;
    if (crc32cRange(local, b.ref.i * bb, bb) !== b.checksum) {
      tally.checksumFailures++;
      return;
    }
    grid.set(b.ref.i, g, true);
    tally.bytes += bb;
  });
}

function notify(logger: Logger | undefined, cb: GetInput['onLayerGroup'], ready: LayerGroupReady): void {
  if (cb === undefined) return;
  try {
    cb(ready);
  } catch (err) {
    logger?.warn('onLayerGroup callback threw', { err });
  }
}

export async function runGet(ctx: FlowContext, input: GetInput): Promise<GetResult> {
  const { layout, hashes, lookup } = input;
  const G = layout.groups.length;
  const ct = layout.chunkTokens;
  const capacity = buffersChunkCapacity(layout, input.target);
  const claimed = lookup.degraded && ctx.opts.degradedShardLookup ? hashes.length : lookup.chunks;
  const want = Math.min(claimed, capacity, hashes.length);
  const empty: GetResult = {
    tokens: 0,
    chunks: 0,
    indexedChunks: lookup.chunks,
    degraded: lookup.degraded,
    bytes: 0,
    bytesMoved: 0,
    failedBlocks: 0,
    checksumFailures: 0,
    staleRetries: 0,
  };
  if (want === 0) {
    for (let g = 0; g < G; g++)
      notify(ctx.opts.logger, input.onLayerGroup, { group: g, chunks: 0, tokens: 0 });
    return empty;
  }
  const table = await currentTable(ctx);
  const plan = planBlocks({
    placement: table,
    hashes,
    chunks: want,
    groups: G,
    chunkTokens: ct,
    blocksPerNodeMax: ctx.opts.blocksPerRequestMax,
  });
  const grid = new BlockGrid(plan.chunks, G);
  const located = await locateAll(ctx, input.model, plan.byNode, table.epoch);
  const members = await Promise.all(located.reads.map((r) => ctx.members.resolve(r.nodeId)));
  const tally: TransferTally = { bytes: 0, checksumFailures: 0 };
  // Submit group by group so UCX moves group 0 first on every endpoint.
  const groupsDone: Promise<void>[] = [];
  for (let g = 0; g < G; g++) {
    const batches = located.reads.map((r, k) => readGroup(ctx, input, r, members[k], g, grid, tally));
    groupsDone.push(
      Promise.all(batches).then(() => {
        const chunks = grid.leadingInGroup(g);
        notify(ctx.opts.logger, input.onLayerGroup, { group: g, chunks, tokens: chunks * ct });
      }),
    );
  }
  await Promise.all(groupsDone);
  for (const r of located.reads) if (r.leaseId !== undefined) ctx.releaser.release(r.nodeId, [r.leaseId]);
  if (!lookup.degraded) dropVanished(ctx, located.notFound, lookup.chunks);
  const chunks = grid.leadingComplete();
  let okBlocks = 0;
  for (let i = 0; i < plan.chunks; i++) for (let g = 0; g < G; g++) if (grid.get(i, g)) okBlocks++;
  return {
    ...empty,
    tokens: chunks * ct,
    chunks,
    bytes: chunks * layout.blockBytes.reduce((a, b) => a + b, 0),
    bytesMoved: tally.bytes,
    failedBlocks: plan.chunks * G - okBlocks,
    checksumFailures: tally.checksumFailures,
    staleRetries: located.staleRetries,
  };
}

/**
 * The index claimed chunks whose owner no longer has a block: drop those entries so the next
 * lookup stops before them (and the next put re-stores them). Background, never throws.
 */
function dropVanished(ctx: FlowContext, notFound: readonly BlockRef[], indexedChunks: number): void {
  const hashes = [...new Set(notFound.filter((b) => b.i < indexedChunks).map((b) => b.hash))];
  if (hashes.length > 0) void ctx.index.remove(hashes);
}

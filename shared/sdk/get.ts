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
import type { Logger } from '../log.js';
import type { PlacementTable } from '../protocol/cluster.js';
import { currentTable, refreshedTable, type FlowContext } from './context.js';
import { type DownNodes, HotCopies, readCandidates, type SyncMemory } from './copies.js';
import { buffersChunkCapacity, type KvBuffers, type ModelLayout } from './layout.js';
import type { MonoClock } from './lease.js';
import { BlockGrid, planBlocks, type BlockRef } from './plan.js';
import { failOver, runRound, type ReadBlock, type RoundTally } from './read-round.js';

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
  /** Refresh-and-retry rounds after STALE_EPOCH / NO_PLACEMENT. */
  staleRetries: number;
  /** Times a block moved on to another copy (a node down, refusing, missing it, corrupt, late). */
  failovers: number;
  /** Blocks whose read and check finished after their lease (minus the margin): not served. */
  lateBlocks: number;
}

export interface GetInput {
  model: string;
  layout: ModelLayout;
  hashes: readonly string[];
  lookup: { chunks: number; degraded: boolean };
  target: KvBuffers;
  onLayerGroup?: (ready: LayerGroupReady) => void;
}

function notify(logger: Logger | undefined, cb: GetInput['onLayerGroup'], ready: LayerGroupReady): void {
  if (cb === undefined) return;
  try {
    cb(ready);
  } catch (err) {
    logger?.warn('onLayerGroup callback threw', { err });
  }
}

/** Everything a read needs that outlives one call: the hot-copy cache and the clock. */
export interface ReadState {
  hot: HotCopies;
  sync: SyncMemory;
  down: DownNodes;
  clock: MonoClock;
}

/** Candidate copies of a block, best first, on `table`, and which of them are hot copies. */
function candidatesFor(
  ctx: FlowContext,
  state: ReadState,
  model: string,
  ref: BlockRef,
  cells: PlacementTable['cells'],
  salt: number,
  avoid: ReadonlySet<string>,
): { candidates: string[]; hot: Set<string>; primary: string | undefined } {
  const cell = Object.hasOwn(cells, ref.cellId) ? cells[ref.cellId] : undefined;
  const candidates = readCandidates({
    cell,
    cellId: ref.cellId,
    hotExtras: state.hot.extras(HotCopies.key(model, ref.hash, ref.g)),
    blockKey: `${ref.hash}:${ref.g}`,
    salt,
    spread: ctx.opts.readSpread,
    avoid,
    outOfSync: (n) => state.sync.isOut(n, ref.cellId),
  });
  const replicas = cell?.replicas ?? [];
  return {
    candidates,
    hot: new Set(candidates.filter((n) => !replicas.includes(n))),
    primary: replicas[0],
  };
}

export async function runGet(ctx: FlowContext, state: ReadState, input: GetInput): Promise<GetResult> {
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
    failovers: 0,
    lateBlocks: 0,
  };
  if (want === 0) {
    for (let g = 0; g < G; g++)
      notify(ctx.opts.logger, input.onLayerGroup, { group: g, chunks: 0, tokens: 0 });
    return empty;
  }
  let table = await currentTable(ctx);
  const plan = planBlocks({
    placement: table,
    hashes,
    chunks: want,
    groups: G,
    chunkTokens: ct,
    blocksPerNodeMax: ctx.opts.blocksPerRequestMax,
  });
  const grid = new BlockGrid(plan.chunks, G);
  const salt = (Math.random() * 0x100000000) >>> 0;
  // Nodes that failed recent reads go last (a paused node not yet declared dead costs a timeout).
  const suspects = state.down.current();
  const blocks: ReadBlock[] = [...[...plan.byNode.values()].flat(), ...plan.unplaced].map((ref) => {
    const { candidates, hot, primary } = candidatesFor(
      ctx,
      state,
      input.model,
      ref,
      table.cells,
      salt,
      suspects,
    );
    return {
      ref,
      candidates,
      hot,
      primary,
      next: 0,
      final: candidates.length === 0 ? 'failed' : undefined,
      vanished: false,
      otherFailure: candidates.length === 0,
    };
  });
  const tally: RoundTally = {
    bytes: 0,
    checksumFailures: 0,
    lateBlocks: 0,
    failovers: 0,
    stale: [],
    down: new Set(),
    answered: new Set(),
    refresh: false,
  };
  const notified = new Set<number>();
  const settle = (g: number): void => {
    if (notified.has(g)) return;
    notified.add(g);
    const chunks = grid.leadingInGroup(g);
    notify(ctx.opts.logger, input.onLayerGroup, { group: g, chunks, tokens: chunks * ct });
  };
  let staleRetries = 0;
  for (let round = 0; round < ctx.opts.readRoundsMax; round++) {
    const pending = stillPending(blocks);
    if (pending.length === 0) break;
    tally.stale = [];
    tally.refresh = false;
    await runRound(
      ctx,
      {
        model: input.model,
        layout,
        target: input.target,
        epoch: table.epoch,
        grid,
        claimedChunks: lookup.degraded ? 0 : lookup.chunks,
        clock: state.clock,
        hot: state.hot,
        sync: state.sync,
        // A group none of whose blocks waits for another copy is settled: tell the engine now.
        onGroupSettled: (g) => {
          if (!blocks.some((b) => b.ref.g === g && b.final === undefined)) settle(g);
        },
      },
      pending,
      tally,
    );
    for (const n of tally.answered) if (!tally.down.has(n)) state.down.clear(n);
    for (const n of tally.down) state.down.mark(n);
    const stale = tally.stale.length > 0;
    if (stale) {
      if (staleRetries >= ctx.opts.staleRetriesMax) {
        for (const rb of tally.stale) failOver(rb, tally, 'failed');
      } else staleRetries++;
    }
    if (!stale && !tally.refresh) continue;
    // A node refused, failed or is gone: the table may have moved on (a failover). Re-plan.
    const fresh = await refreshedTable(ctx);
    if (fresh.epoch !== table.epoch || stale) {
      table = fresh;
      for (const rb of stillPending(blocks, true)) replan(ctx, state, input.model, rb, table, salt, tally);
    }
  }
  for (const rb of blocks) if (rb.final === undefined) rb.final = 'failed';
  for (let g = 0; g < G; g++) settle(g);
  if (!lookup.degraded) dropVanished(ctx, blocks, lookup.chunks);
  const chunks = grid.leadingComplete();
  const okBlocks = blocks.filter((b) => b.final === 'ok').length;
  return {
    ...empty,
    tokens: chunks * ct,
    chunks,
    bytes: chunks * layout.blockBytes.reduce((a, b) => a + b, 0),
    bytesMoved: tally.bytes,
    failedBlocks: plan.chunks * G - okBlocks,
    checksumFailures: tally.checksumFailures,
    staleRetries,
    failovers: tally.failovers,
    lateBlocks: tally.lateBlocks,
  };
}

/**
 * Blocks still worth reading: not final and before the first chunk that cannot be complete any
 * more (a prefix with a hole is unreachable, so reading past it is wasted work).
 */
function stillPending(blocks: readonly ReadBlock[], includeExhausted = false): ReadBlock[] {
  let limit = Number.POSITIVE_INFINITY;
  for (const b of blocks) if (b.final === 'failed' && b.ref.i < limit) limit = b.ref.i;
  return blocks.filter(
    (b) => b.final === undefined && b.ref.i < limit && (includeExhausted || b.next < b.candidates.length),
  );
}

/** New candidates on a newer table: copies that already failed this call go last. */
function replan(
  ctx: FlowContext,
  state: ReadState,
  model: string,
  rb: ReadBlock,
  table: PlacementTable,
  salt: number,
  tally: RoundTally,
): void {
  const done = rb.candidates.slice(0, rb.next);
  const fresh = candidatesFor(
    ctx,
    state,
    model,
    rb.ref,
    table.cells,
    salt,
    new Set([...done, ...tally.down]),
  );
  rb.candidates = [...done, ...fresh.candidates.filter((n) => !done.includes(n))];
  rb.hot = fresh.hot;
  rb.primary = fresh.primary;
  if (rb.next >= rb.candidates.length) rb.final = 'failed';
}

/**
 * The index claimed chunks that no copy has any more: drop those entries so the next lookup
 * stops before them (and the next put re-stores them). Background, never throws.
 */
function dropVanished(ctx: FlowContext, blocks: readonly ReadBlock[], indexedChunks: number): void {
  const gone = blocks.filter((b) => b.final === 'failed' && b.vanished && b.ref.i < indexedChunks);
  const hashes = [...new Set(gone.map((b) => b.ref.hash))];
  if (hashes.length > 0) void ctx.index.remove(hashes);
}

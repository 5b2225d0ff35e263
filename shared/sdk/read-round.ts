/**
 * One round of a get: ONE locate per node for the blocks whose current copy is on that node,
 * then UCX reads per (node, layer group), group 0 first, then every block judged (transfer,
 * lease window, crc32c). A block that fails on one copy moves on to its next copy for the next
 * round; get.ts runs the rounds.
 */
import { crc32cRanges } from '../../native/index.js';
import type { KvfError } from '../errors.js';
import type { MemberRecord } from '../protocol/cluster.js';
import { locateReplySchema, reportCorruptReplySchema, type LocateReply } from '../protocol/shard.js';
import { HotCopies, type SyncMemory } from './copies.js';
import type { FlowContext } from './context.js';
import type { ModelLayout, KvBuffers } from './layout.js';
import { judgeBatch, LeaseWindow, type MonoClock } from './lease.js';
import type { BlockGrid, BlockRef } from './plan.js';
import { callShard } from './shard-rpc.js';

/** A planned block and the copies it may still be read from. */
export interface ReadBlock {
  readonly ref: BlockRef;
  candidates: string[];
  /** Index in candidates of the copy to try next. */
  next: number;
  /** Candidates that hold only a hot (extra) copy: asked with `locate {hotCopy: true}`. */
  hot: ReadonlySet<string>;
  /** The cell's primary: its found: false is the answer; another copy's may only be lagging. */
  primary: string | undefined;
  /** Final: read intact ('ok') or out of copies ('failed'); undefined while it may still be read. */
  final: 'ok' | 'failed' | undefined;
  /** Every copy tried answered found: false (the index entry may be dropped). */
  vanished: boolean;
  /** A copy failed for a reason other than not-found. */
  otherFailure: boolean;
}

export interface RoundTally {
  bytes: number;
  checksumFailures: number;
  lateBlocks: number;
  /** Blocks that moved on to another copy. */
  failovers: number;
  /** Blocks refused with STALE_EPOCH / NO_PLACEMENT (re-planned on a refreshed table). */
  stale: ReadBlock[];
  /** Nodes that failed a request or a transfer this call (avoided when re-planning). */
  down: Set<string>;
  /** Nodes that answered a locate this call. */
  answered: Set<string>;
  /** A node refused with NOT_OWNER or failed: the placement table may have moved on. */
  refresh: boolean;
}

export interface RoundInput {
  model: string;
  layout: ModelLayout;
  target: KvBuffers;
  epoch: number;
  grid: BlockGrid;
  /** Fail over on found: false only for chunks below this (the index claimed them). */
  claimedChunks: number;
  clock: MonoClock;
  hot: HotCopies;
  sync: SyncMemory;
  /**
   * Called after each node's reads of a layer group were judged (and after a failed locate, for
   * every group); may be called many times per group: the callee checks whether the group is
   * settled.
   */
  onGroupSettled?: (g: number) => void;
}

interface NodeRead {
  nodeId: string;
  leaseId: string | undefined;
  window: LeaseWindow;
  located: { rb: ReadBlock; address: bigint; checksum: number }[];
}

/** Move a block on to its next copy after a failure; final 'failed' when none is left. */
export function failOver(rb: ReadBlock, tally: RoundTally, reason: 'not_found' | 'failed'): void {
  if (reason === 'failed') rb.otherFailure = true;
  else if (!rb.otherFailure) rb.vanished = true;
  rb.next++;
  if (rb.next >= rb.candidates.length) rb.final = 'failed';
  else tally.failovers++;
}

function refusalIsStale(err: KvfError): boolean {
  return err.codeName === 'STALE_EPOCH' || err.codeName === 'NO_PLACEMENT';
}

/** The cells a NOT_IN_SYNC refusal names (details.cellId / details.cells), else every cell asked. */
function refusedCells(err: KvfError, blocks: readonly ReadBlock[]): string[] {
  const d = err.details ?? {};
  const named = [d.cellId, ...(Array.isArray(d.cells) ? d.cells : [])].filter(
    (c): c is string => typeof c === 'string',
  );
  return named.length > 0 ? named : [...new Set(blocks.map((b) => b.ref.cellId))];
}

/** A failed or refused locate: every block asked moves on to its next copy. */
function locateFailed(
  input: RoundInput,
  nodeId: string,
  blocks: ReadBlock[],
  err: KvfError,
  tally: RoundTally,
): void {
  if (err.codeName === 'NOT_IN_SYNC') {
    for (const c of refusedCells(err, blocks)) input.sync.markOut(nodeId, c);
  } else if (err.codeName === 'NOT_OWNER') {
    tally.refresh = true;
  } else {
    // A timeout, no responders, FENCED, a transport error: the node is out for this call.
    tally.down.add(nodeId);
    tally.refresh = true;
  }
  for (const rb of blocks) failOver(rb, tally, 'failed');
}

async function locateNode(
  ctx: FlowContext,
  input: RoundInput,
  nodeId: string,
  hotCopy: boolean,
  blocks: ReadBlock[],
  tally: RoundTally,
): Promise<NodeRead | undefined> {
  const body: Record<string, unknown> = {
    model: input.model,
    epoch: input.epoch,
    blocks: blocks.map(({ ref }) => ({ hash: ref.hash, g: ref.g, i: ref.i, s: ref.s })),
  };
  if (hotCopy) body.hotCopy = true;
  const sentAt = input.clock();
  const r = await callShard(ctx.nc, nodeId, 'locate', body, locateReplySchema, ctx.opts.locateTimeoutMs);
  if (r.kind !== 'ok') {
    ctx.opts.logger?.debug('locate did not succeed', { nodeId, kind: r.kind, code: r.error.codeName });
    if (r.kind === 'refused' && refusalIsStale(r.error)) {
      tally.stale.push(...blocks);
      return undefined;
    }
    locateFailed(input, nodeId, blocks, r.error, tally);
    return undefined;
  }
  tally.answered.add(nodeId);
  const reply: LocateReply = r.reply;
  if (reply.blocks.length !== blocks.length) {
    ctx.opts.logger?.warn('locate reply has the wrong number of blocks', { nodeId });
    if (reply.leaseId !== undefined) ctx.releaser.release(nodeId, [reply.leaseId]);
    for (const rb of blocks) failOver(rb, tally, 'failed');
    return undefined;
  }
  const read: NodeRead = {
    nodeId,
    leaseId: reply.leaseId,
    window: new LeaseWindow(sentAt, reply.leaseTtlMs, ctx.opts.leaseSafetyMarginMs, input.clock),
    located: [],
  };
  reply.blocks.forEach((b, k) => {
    const rb = blocks[k] as ReadBlock;
    if (b.copies !== undefined) {
      input.hot.note(HotCopies.key(input.model, rb.ref.hash, rb.ref.g), b.copies);
    }
    if (b.found && b.address !== undefined && b.checksum !== undefined) {
      read.located.push({ rb, address: b.address, checksum: b.checksum });
    } else if (hotCopy)
      failOver(rb, tally, 'failed'); // the hot copy cooled: says nothing of the cell
    else if (rb.ref.i < input.claimedChunks || nodeId !== rb.primary) failOver(rb, tally, 'not_found');
    else rb.final = 'failed'; // past what the index claimed: a plain miss, no other copy asked
  });
  return read;
}

/** Tell a node it served a block whose bytes did not match its checksum. Fire-and-forget. */
function reportCorrupt(ctx: FlowContext, model: string, nodeId: string, blocks: BlockRef[]): void {
  if (blocks.length === 0) return;
  const body = { model, blocks: blocks.map((b) => ({ hash: b.hash, g: b.g })) };
  // The node re-verifies and drops the block (and its index entry): it stops being served.
  void callShard(
    ctx.nc,
    nodeId,
    'report_corrupt',
    body,
    reportCorruptReplySchema,
    ctx.opts.requestTimeoutMs,
  ).then((r) => {
    if (r.kind !== 'ok') ctx.opts.logger?.debug('report_corrupt not acknowledged', { nodeId });
  });
}

async function readGroup(
  ctx: FlowContext,
  input: RoundInput,
  read: NodeRead,
  member: MemberRecord | undefined,
  g: number,
  tally: RoundTally,
): Promise<void> {
  const items = read.located.filter((x) => x.rb.ref.g === g);
  if (items.length === 0) return;
  const bb = input.layout.blockBytes[g] as number;
  const region = member && Object.hasOwn(member.models, input.model) ? member.models[input.model] : undefined;
  if (member === undefined || region === undefined || region.blockBytes < bb) {
    ctx.opts.logger?.warn('node region unknown or does not fit the model layout', { nodeId: read.nodeId, g });
    for (const x of items) failOver(x.rb, tally, 'failed');
    return;
  }
  const local = input.target.groups[g] as Uint8Array;
  let oks: boolean[];
  // Each window's blocks are verified on the thread pool as soon as they land (while the bytes
  // are still in cache and later windows are moving): a GiB of CRC on the event loop would hold
  // it for ~0.1 s, and after the whole batch it would be a serial tail.
  const crcOf = new Map<number, number>();
  const checks: Promise<void>[] = [];
  const verify = (first: number, results: readonly { ok: boolean }[], given?: readonly number[]): void => {
    const arrived = results.flatMap((r, j) => (r.ok ? [first + j] : []));
    if (arrived.length === 0) return;
    if (given !== undefined) {
      for (const k of arrived) crcOf.set(k, given[k - first] as number);
      return;
    }
    const ranges = arrived.map((k) => ({
      offset: (items[k] as (typeof items)[number]).rb.ref.i * bb,
      length: bb,
    }));
    checks.push(
      crc32cRanges(local, ranges).then(
        (crcs) => arrived.forEach((k, j) => crcOf.set(k, crcs[j] as number)),
        // Unverified blocks count as not transferred below: they fail over, never get served.
        (err: unknown) => ctx.opts.logger?.warn('checksum of received blocks failed', { err }),
      ),
    );
  };
  try {
    const results = await ctx.data.get(
      member,
      input.model,
      items.map((x) => ({ remoteAddress: x.address, local, localOffset: x.rb.ref.i * bb, length: bb })),
      verify,
    );
    oks = results.map((res) => res.ok);
  } catch (err) {
    ctx.opts.logger?.debug('UCX get batch failed', { nodeId: read.nodeId, g, err });
    tally.down.add(read.nodeId);
    oks = items.map(() => false);
  }
  await Promise.all(checks);
  const verdicts = judgeBatch(
    read.window,
    items.map((x, k) => ({
      // A block whose CRC could not be computed is not evidence of corruption: it just failed.
      transferred: oks[k] === true && crcOf.has(k),
      checksum: crcOf.get(k),
      expected: x.checksum,
    })),
  );
  const corrupt: BlockRef[] = [];
  verdicts.forEach((v, k) => {
    const { rb } = items[k] as (typeof items)[number];
    if (v === 'ok') {
      rb.final = 'ok';
      input.grid.set(rb.ref.i, g, true);
      tally.bytes += bb;
      return;
    }
    if (v === 'corrupt') {
      tally.checksumFailures++;
      corrupt.push(rb.ref);
    } else if (v === 'late') tally.lateBlocks++;
    failOver(rb, tally, 'failed');
  });
  reportCorrupt(ctx, input.model, read.nodeId, corrupt);
}

/** Split a node's blocks into requests of at most `max` (one request unless a prompt is huge). */
function batches<T>(list: T[], max: number): T[][] {
  const out: T[][] = [];
  for (let k = 0; k < list.length; k += max) out.push(list.slice(k, k + max));
  return out;
}

/** Locate and read every block in `pending` from its current copy. */
export async function runRound(
  ctx: FlowContext,
  input: RoundInput,
  pending: readonly ReadBlock[],
  tally: RoundTally,
): Promise<void> {
  // One request per (node, kind): a node's replica-set blocks and its hot copies (if any) are
  // checked differently there, so a hot copy on a node the request also reads from costs one more.
  const byNode = new Map<string, { nodeId: string; hotCopy: boolean; blocks: ReadBlock[] }>();
  for (const rb of pending) {
    const nodeId = rb.candidates[rb.next] as string;
    const hotCopy = rb.hot.has(nodeId);
    const key = `${nodeId}\u0000${hotCopy ? 'hot' : ''}`;
    const entry = byNode.get(key);
    if (entry === undefined) byNode.set(key, { nodeId, hotCopy, blocks: [rb] });
    else entry.blocks.push(rb);
  }
  const requests = [...byNode.values()].flatMap(({ nodeId, hotCopy, blocks }) =>
    batches(
      blocks.sort((a, b) => a.ref.g - b.ref.g || a.ref.i - b.ref.i),
      ctx.opts.blocksPerRequestMax,
    ).map((part) => ({ nodeId, hotCopy, part })),
  );
  const G = input.layout.groups.length;
  // Each node's reads start as soon as ITS locate answers: a lease runs from the locate, so
  // waiting for every node first would let a slow or silent node (locate timeout) expire the
  // leases the others granted, and their bytes would arrive late and be thrown away. Per node,
  // groups are submitted in order, so UCX moves group 0 first on every endpoint.
  await Promise.all(
    requests.map(async ({ nodeId, hotCopy, part }) => {
      const read = await locateNode(ctx, input, nodeId, hotCopy, part, tally);
      if (read === undefined) {
        for (let g = 0; g < G; g++) input.onGroupSettled?.(g);
        return;
      }
      const member = await ctx.members.resolve(read.nodeId);
      const groups: Promise<void>[] = [];
      for (let g = 0; g < G; g++) {
        groups.push(readGroup(ctx, input, read, member, g, tally).then(() => input.onGroupSettled?.(g)));
      }
      await Promise.all(groups);
      if (read.leaseId !== undefined) ctx.releaser.release(read.nodeId, [read.leaseId]);
    }),
  );
}

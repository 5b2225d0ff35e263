/**
 * Pure request planning for get and put: which blocks a prompt has, which node is each block's
 * primary under a placement table, how they batch into one request per node, and how many
 * leading chunks are complete once per-block outcomes are known. No I/O: unit-tested directly.
 */
import { cellFor, cellId, rotation, type PartitionSpec } from '../partition.js';
import type { CellPlacement } from '../protocol/cluster.js';

/** One block of a prompt: chunk i, layer group g. */
export interface BlockRef {
  readonly i: number;
  readonly g: number;
  /** The chunk's hash h[i] (64 hex chars). */
  readonly hash: string;
  /** Previous chunk's hash, '' for chunk 0 (put only needs it; harmless elsewhere). */
  readonly parent: string;
  readonly cellId: string;
  /** Sequence bucket of the block's cell (g, s): shard requests name it for the ownership check. */
  readonly s: number;
}

export interface PlacementView {
  readonly epoch: number;
  readonly spec: PartitionSpec;
  readonly cells: Readonly<Record<string, CellPlacement>>;
}

export interface BlockPlan {
  /** Chunks covered: a prefix of the requested ones (see planBlocks' per-node cap). */
  readonly chunks: number;
  /** Primary node id -> its blocks, group-major (g ascending, then i ascending). */
  readonly byNode: Map<string, BlockRef[]>;
  /** Blocks whose cell has no primary in this table: they count as missing. */
  readonly unplaced: BlockRef[];
}

export interface PlanInput {
  readonly placement: PlacementView;
  /** Chunk hashes h[0..n-1] of the prompt (at least `chunks` of them). */
  readonly hashes: readonly string[];
  /** Leading chunks to plan (<= hashes.length). */
  readonly chunks: number;
  /** Layer groups of the model (<= spec.layerGroups). */
  readonly groups: number;
  readonly chunkTokens: number;
  /** Most blocks one request to one node may carry (SHARD_LIMITS.blocksPerRequestMax). */
  readonly blocksPerNodeMax: number;
}

/** The primary of a cell, or undefined when the table has no live node for it. */
export function primaryOf(cells: Readonly<Record<string, CellPlacement>>, id: string): string | undefined {
  const c = Object.hasOwn(cells, id) ? cells[id] : undefined;
  return c?.replicas[0];
}

function sortGroupMajor(list: BlockRef[]): BlockRef[] {
  return list.sort((a, b) => a.g - b.g || a.i - b.i);
}

/**
 * Group blocks by their cell's primary. Used for the first plan and again, against a refreshed
 * table, for the blocks a node refused with STALE_EPOCH / NOT_OWNER.
 */
export function groupByPrimary(
  blocks: readonly BlockRef[],
  cells: Readonly<Record<string, CellPlacement>>,
): { byNode: Map<string, BlockRef[]>; unplaced: BlockRef[] } {
  const byNode = new Map<string, BlockRef[]>();
  const unplaced: BlockRef[] = [];
  for (const b of blocks) {
    const node = primaryOf(cells, b.cellId);
    if (node === undefined) {
      unplaced.push(b);
      continue;
    }
    const list = byNode.get(node);
    if (list === undefined) byNode.set(node, [b]);
    else list.push(b);
  }
  for (const list of byNode.values()) sortGroupMajor(list);
  return { byNode, unplaced };
}

/**
 * Every block of the first `chunks` chunks, grouped by primary node. Chunks are taken in order
 * and planning stops before the first chunk that would push any node past blocksPerNodeMax, so
 * each node still gets exactly one request; the result's `chunks` says how many were planned
 * (a shorter plan only shortens a hit or a put, it is never wrong).
 */
export function planBlocks(input: PlanInput): BlockPlan {
  const { placement, hashes, groups, chunkTokens, blocksPerNodeMax } = input;
  const requested = Math.min(input.chunks, hashes.length);
  const blocks: BlockRef[] = [];
  const counts = new Map<string, number>();
  let chunks = 0;
  const first = hashes[0];
  if (requested > 0 && first !== undefined) {
    const { spec } = placement;
    rotation(first, spec.seqBuckets); // validates h[0] once, before the loop
    for (let i = 0; i < requested; i++) {
      const hash = hashes[i] as string;
      const parent = i === 0 ? '' : (hashes[i - 1] as string);
      const chunkBlocks: BlockRef[] = [];
      const adds = new Map<string, number>();
      for (let g = 0; g < groups; g++) {
        const cell = cellFor(spec, { chunkIndex: i, chunkTokens, firstChunkHash: first, layerGroup: g });
        const id = cellId(cell);
        chunkBlocks.push({ i, g, hash, parent, cellId: id, s: cell.s });
        const node = primaryOf(placement.cells, id);
        if (node !== undefined) adds.set(node, (adds.get(node) ?? 0) + 1);
      }
      const fits = [...adds].every(([node, n]) => (counts.get(node) ?? 0) + n <= blocksPerNodeMax);
      if (!fits) break;
      for (const [node, n] of adds) counts.set(node, (counts.get(node) ?? 0) + n);
      blocks.push(...chunkBlocks);
      chunks = i + 1;
    }
  }
  return { chunks, ...groupByPrimary(blocks, placement.cells) };
}

/**
 * Per-block outcome grid for `chunks` x `groups` blocks. A block starts not-ok; the flows mark the
 * ones that arrived intact (get) or are safely stored (put).
 */
export class BlockGrid {
  private readonly ok: Uint8Array;

  constructor(
    readonly chunks: number,
    readonly groups: number,
  ) {
    this.ok = new Uint8Array(chunks * groups);
  }

  set(i: number, g: number, value: boolean): void {
    if (i < 0 || i >= this.chunks || g < 0 || g >= this.groups) {
      throw new RangeError(`block (${i}, ${g}) outside a ${this.chunks} x ${this.groups} grid`);
    }
    this.ok[i * this.groups + g] = value ? 1 : 0;
  }

  get(i: number, g: number): boolean {
    return this.ok[i * this.groups + g] === 1;
  }

  /** Leading chunks whose block of group g is ok. */
  leadingInGroup(g: number): number {
    let i = 0;
    while (i < this.chunks && this.get(i, g)) i++;
    return i;
  }

  /**
   * Leading chunks for which every group is ok: the hit length of a get, the indexable prefix of
   * a put. One bad block at chunk k makes every chunk >= k unusable (a prefix with a hole is
   * unreachable), even when its other blocks are fine.
   */
  leadingComplete(): number {
    let i = 0;
    for (; i < this.chunks; i++) {
      for (let g = 0; g < this.groups; g++) if (!this.get(i, g)) return i;
    }
    return i;
  }
}

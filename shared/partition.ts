/**
 * Hybrid layer x sequence partitions. The block of chunk i of a prompt for layer group g lands in
 * cell (g, s) with
 *
 *   s = (floor(i * chunkTokens / seqBucketTokens) + rot(h[0])) mod S
 *   rot(h[0]) = (first 4 bytes of h[0] as a big-endian u32) mod S
 *
 * Layer groups let a worker start on group 0 while the rest arrive and spread one prompt over
 * nodes; sequence buckets keep a prompt's consecutive chunks together (one batched request per
 * node); the rotation by the first chunk's hash keeps every prompt's first bucket from landing
 * on the same node. The placement table maps each cell to its replica set.
 */
import { KvfError } from './errors.js';
import { s } from './protocol/schema.js';

export interface PartitionSpec {
  /** Layer groups G per model; must not exceed the profile's layer count. */
  layerGroups: number;
  /** Sequence buckets S. */
  seqBuckets: number;
  /**
   * Tokens per sequence bucket window. Should be a multiple of the profiles' chunkTokens: then a
   * window holds whole chunks and a chunk never straddles two windows in a way that surprises.
   * Any positive value is accepted (a chunk belongs to the window its first token falls in).
   */
  seqBucketTokens: number;
}

/** Bounds against unit mistakes: the placement table holds G x S cells. */
export const PARTITION_LIMITS = {
  /** As many groups as a profile may have layers (profiles.ts layersMax). */
  layerGroupsMax: 512,
  /** 4096 buckets x 512 groups is already 2M cells, far past any cluster's node count. */
  seqBucketsMax: 4096,
  /** 2^31 tokens: no context is longer, and the bucket arithmetic stays exact. */
  seqBucketTokensMax: 2 ** 31,
} as const;

const specSchema = s.object({
  layerGroups: s.int({ min: 1, max: PARTITION_LIMITS.layerGroupsMax }),
  seqBuckets: s.int({ min: 1, max: PARTITION_LIMITS.seqBucketsMax }),
  seqBucketTokens: s.int({ min: 1, max: PARTITION_LIMITS.seqBucketTokensMax }),
});

/** Parse an untrusted value into a PartitionSpec; throws KvfError('CONFIG_INVALID'). */
export function validatePartitionSpec(x: unknown): PartitionSpec {
  try {
    const p = specSchema.parse(x);
    return { layerGroups: p.layerGroups, seqBuckets: p.seqBuckets, seqBucketTokens: p.seqBucketTokens };
  } catch (err) {
    if (err instanceof KvfError) {
      throw new KvfError('CONFIG_INVALID', `invalid partition spec: ${err.message}`, {
        details: err.details,
        cause: err,
      });
    }
    throw err;
  }
}

export interface Cell {
  g: number;
  s: number;
}

/** "g.s", e.g. "0.3": used as a map key and in placement records. */
export function cellId(c: Cell): string {
  return `${c.g}.${c.s}`;
}

const CELL_ID = /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$/;

/** Inverse of cellId; throws KvfError('BAD_REQUEST') on anything cellId would not produce. */
export function parseCellId(id: string): Cell {
  const m = typeof id === 'string' ? CELL_ID.exec(id) : null;
  if (m === null || m[1] === undefined || m[2] === undefined) {
    throw new KvfError('BAD_REQUEST', `cell id: expected "<g>.<s>" with non-negative integers, got ${id}`);
  }
  return { g: Number(m[1]), s: Number(m[2]) };
}

/** Every cell of the spec, group-major: (0,0), (0,1), ..., (G-1, S-1). */
export function allCells(spec: PartitionSpec): Cell[] {
  const cells: Cell[] = [];
  for (let g = 0; g < spec.layerGroups; g++) {
    for (let sb = 0; sb < spec.seqBuckets; sb++) cells.push({ g, s: sb });
  }
  return cells;
}

const HASH_HEX = /^[0-9a-f]{64}$/;

function assertHashHex(h: string): void {
  if (typeof h !== 'string' || !HASH_HEX.test(h)) {
    throw new KvfError('BAD_REQUEST', `chunk hash: expected 64 lowercase hex chars, got ${String(h)}`);
  }
}

function assertIndex(name: string, v: number, maxExclusive: number): void {
  if (!Number.isSafeInteger(v) || v < 0 || v >= maxExclusive) {
    throw new KvfError('BAD_REQUEST', `${name}: expected an integer in [0, ${maxExclusive}), got ${v}`);
  }
}

/** (first 4 bytes of h[0], big-endian) mod seqBuckets. */
export function rotation(firstChunkHashHex: string, seqBuckets: number): number {
  assertHashHex(firstChunkHashHex);
  if (!Number.isSafeInteger(seqBuckets) || seqBuckets < 1) {
    throw new KvfError('BAD_REQUEST', `seqBuckets: expected a positive integer, got ${seqBuckets}`);
  }
  // 8 hex chars are exactly 4 bytes in big-endian order.
  return Number.parseInt(firstChunkHashHex.slice(0, 8), 16) % seqBuckets;
}

function bucketWithRotation(
  spec: PartitionSpec,
  chunkIndex: number,
  chunkTokens: number,
  rot: number,
): number {
  assertIndex('chunkIndex', chunkIndex, Number.MAX_SAFE_INTEGER);
  if (!Number.isSafeInteger(chunkTokens) || chunkTokens < 1) {
    throw new KvfError('BAD_REQUEST', `chunkTokens: expected a positive integer, got ${chunkTokens}`);
  }
  const window = Math.floor((chunkIndex * chunkTokens) / spec.seqBucketTokens);
  return (window + rot) % spec.seqBuckets;
}

/** Sequence bucket of chunk `chunkIndex` of the prompt whose first chunk hash is given. */
export function seqBucketOf(
  spec: PartitionSpec,
  chunkIndex: number,
  chunkTokens: number,
  firstChunkHashHex: string,
): number {
  return bucketWithRotation(spec, chunkIndex, chunkTokens, rotation(firstChunkHashHex, spec.seqBuckets));
}

export interface CellQuery {
  chunkIndex: number;
  chunkTokens: number;
  /** h[0] of the prompt, 64 lowercase hex chars. */
  firstChunkHash: string;
  layerGroup: number;
}

/** The cell that holds the block of (prompt, chunk index, layer group). */
export function cellFor(spec: PartitionSpec, q: CellQuery): Cell {
  assertIndex('layerGroup', q.layerGroup, spec.layerGroups);
  return { g: q.layerGroup, s: seqBucketOf(spec, q.chunkIndex, q.chunkTokens, q.firstChunkHash) };
}

/**
 * For each layer group g (result[g]), a map cellId -> the prompt's chunk indices in that cell,
 * ascending, in order of first appearance. This is what a client batches: one request per node
 * covering all its cells. `hashes` are the prompt's chunk hashes h[0..n-1]; only h[0] decides
 * the rotation, the rest only count chunks. An empty prompt gives G empty maps.
 */
export function groupChunksByCell(
  spec: PartitionSpec,
  hashes: readonly string[],
  chunkTokens: number,
): Map<string, number[]>[] {
  const result: Map<string, number[]>[] = [];
  for (let g = 0; g < spec.layerGroups; g++) result.push(new Map());
  const first = hashes[0];
  if (first === undefined) return result;
  const rot = rotation(first, spec.seqBuckets);
  // The bucket does not depend on g: compute each chunk's bucket once, then fan out per group.
  const buckets = hashes.map((_, i) => bucketWithRotation(spec, i, chunkTokens, rot));
  for (let g = 0; g < spec.layerGroups; g++) {
    const byCell = result[g] as Map<string, number[]>;
    buckets.forEach((sb, i) => {
      const id = cellId({ g, s: sb });
      const list = byCell.get(id);
      if (list === undefined) byCell.set(id, [i]);
      else list.push(i);
    });
  }
  return result;
}

/**
 * Shard-node endpoints: `kvf.v1.shard.<nodeId>.<op>` (subject helper in ./cluster.ts).
 *
 * Every request is batched (many blocks per request; at most SHARD_LIMITS.blocksPerRequestMax)
 * and every data request carries `epoch`: the placement-table epoch the caller resolved its
 * cells with. A node refuses (STALE_EPOCH) when any block's cell changed after that epoch
 * (cell.epoch > epoch), refreshes its own table first when the caller's is newer than its own,
 * and refuses (NOT_OWNER) a block whose cell does not list it. The whole request is refused on
 * the first such block, so a refused request changed nothing; the SDK refreshes and retries.
 *
 * Block identity is (model, chunk hash, layer group). Addresses are u64 decimal strings; the
 * rkey for a model's region is in the node's member record (kvf_members), not repeated here.
 */
import { s, type Infer } from './schema.js';

export const SHARD_LIMITS = {
  /** Blocks per allocate/commit/locate request: one request per node per get/put. */
  blocksPerRequestMax: 4096,
} as const;

const hash = s.hex(32);
const modelId = s.string({ minLength: 1, maxLength: 128, pattern: /^[A-Za-z0-9._:/-]{1,128}$/ });
const layerGroup = s.int({ min: 0, max: 511 });
const chunkIndex = s.int({ min: 0, max: 2 ** 31 - 1 });
const u32 = s.int({ min: 0, max: 0xffffffff });
const epoch = s.int({ min: 0 });
/**
 * Sequence bucket of the block's cell (g, s), as partition.cellFor computes it. The node cannot
 * derive it (the rotation needs the prompt's h[0]), so the client names the cell it resolved and
 * the node checks its ownership of that cell at the request's epoch. Optional in the schema only
 * for compatibility with early clients: shard nodes refuse a block without it (BAD_REQUEST).
 */
const seqBucket = s.optional(s.int({ min: 0, max: 4095 }));
const blocks = <T>(item: import('./schema.js').Schema<T>) =>
  s.array(item, { minItems: 1, maxItems: SHARD_LIMITS.blocksPerRequestMax });

// ---- allocate: reserve slots for a put. Idempotent by content (present/busy, never a 2nd copy).
// Errors: BAD_REQUEST, BATCH_TOO_LARGE, UNKNOWN_MODEL, STALE_EPOCH, NOT_OWNER, FENCED.
export const allocateRequestSchema = s.object({
  model: modelId,
  epoch,
  blocks: blocks(
    s.object({
      hash,
      g: layerGroup,
      i: chunkIndex,
      /** Previous chunk's hash, '' for chunk 0. */
      parent: s.string({ maxLength: 64, pattern: /^([0-9a-f]{64})?$/ }),
      s: seqBucket,
    }),
  ),
});
export type AllocateRequest = Infer<typeof allocateRequestSchema>;
export const ALLOCATE_STATUSES = ['allocated', 'present', 'busy', 'full'] as const;
export const allocateReplySchema = s.object({
  /** Present when at least one block was allocated; commit or abort it before allocDeadlineMs. */
  allocId: s.optional(s.string({ minLength: 1, maxLength: 64 })),
  /** Milliseconds the allocation stays reserved; after that the node reclaims it. */
  allocTtlMs: s.int({ min: 0 }),
  blocks: blocks(
    s.object({
      status: s.enum(ALLOCATE_STATUSES),
      /** Remote address to UCX-put the block's bytes to (allocated only). */
      address: s.optional(s.u64()),
    }),
  ),
});
export type AllocateReply = Infer<typeof allocateReplySchema>;

// ---- commit: make written blocks readable after checking the writer's crc32c.
// Errors: BAD_REQUEST, ALLOCATION_NOT_FOUND (expired: the writer must redo the put), STALE_EPOCH, FENCED.
export const commitRequestSchema = s.object({
  model: modelId,
  epoch,
  allocId: s.string({ minLength: 1, maxLength: 64 }),
  blocks: blocks(s.object({ hash, g: layerGroup, checksum: u32 })),
});
export type CommitRequest = Infer<typeof commitRequestSchema>;
export const COMMIT_STATUSES = ['committed', 'checksum_mismatch', 'unknown'] as const;
export const commitReplySchema = s.object({
  blocks: blocks(s.object({ status: s.enum(COMMIT_STATUSES) })),
});
export type CommitReply = Infer<typeof commitReplySchema>;

// ---- abort: give back an allocation's uncommitted slots. Idempotent.
export const abortRequestSchema = s.object({
  model: modelId,
  allocId: s.string({ minLength: 1, maxLength: 64 }),
});
export const abortReplySchema = s.object({ freed: s.int({ min: 0 }) });

// ---- locate: addresses and checksums of committed blocks, under a read lease. Missing blocks are
// null (the reader's hit is shortened). Errors: BAD_REQUEST, UNKNOWN_MODEL, STALE_EPOCH, NOT_OWNER.
export const locateRequestSchema = s.object({
  model: modelId,
  epoch,
  blocks: blocks(s.object({ hash, g: layerGroup, i: chunkIndex, s: seqBucket })),
});
export type LocateRequest = Infer<typeof locateRequestSchema>;
export const locateReplySchema = s.object({
  /** Present when at least one block was found; release it when the reads are done. */
  leaseId: s.optional(s.string({ minLength: 1, maxLength: 64 })),
  /** The lease protects the blocks for this long; a reader past it must not trust its bytes. */
  leaseTtlMs: s.int({ min: 0 }),
  blocks: blocks(
    s.object({
      found: s.bool(),
      address: s.optional(s.u64()),
      checksum: s.optional(u32),
    }),
  ),
});
export type LocateReply = Infer<typeof locateReplySchema>;

// ---- release: end read leases early. Idempotent (an expired lease is fine).
export const releaseRequestSchema = s.object({
  leaseIds: s.array(s.string({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems: 256 }),
});
export const releaseReplySchema = s.object({ released: s.int({ min: 0 }) });

// ---- stats: fill, leases, evictions; `chunks: true` adds the committed blocks' (hash, parent, g)
// for stranded-bytes accounting (capped at SHARD_LIMITS.blocksPerRequestMax entries per model).
export const statsRequestSchema = s.object({ chunks: s.optional(s.bool()) });
export const modelStatsSchema = s.object({
  blockBytes: s.int({ min: 0 }),
  capacityBlocks: s.int({ min: 0 }),
  usedBlocks: s.int({ min: 0 }),
  committedBlocks: s.int({ min: 0 }),
  writingBlocks: s.int({ min: 0 }),
  leasedBlocks: s.int({ min: 0 }),
  evictedTotal: s.int({ min: 0 }),
  chunks: s.optional(
    s.array(
      s.object({ hash, parent: s.string({ maxLength: 64 }), g: layerGroup, bytes: s.int({ min: 0 }) }),
      {
        maxItems: SHARD_LIMITS.blocksPerRequestMax,
      },
    ),
  ),
  chunksTruncated: s.optional(s.bool()),
});
export const statsReplySchema = s.object({
  nodeId: s.string({ minLength: 1, maxLength: 64 }),
  incarnation: s.string({ minLength: 1, maxLength: 64 }),
  arenaKind: s.enum(['host', 'cuda'] as const),
  epoch: s.int({ min: 0 }),
  models: s.array(s.object({ model: modelId, stats: modelStatsSchema }), { maxItems: 64 }),
  requests: s.object({
    allocate: s.int({ min: 0 }),
    commit: s.int({ min: 0 }),
    locate: s.int({ min: 0 }),
    errors: s.int({ min: 0 }),
  }),
  checksumFailures: s.int({ min: 0 }),
});
export type StatsReply = Infer<typeof statsReplySchema>;

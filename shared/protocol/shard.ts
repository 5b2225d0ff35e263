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
const nodeIdSchema = s.string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]{1,64}$/ });
const cellIdSchema = s.string({ pattern: /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$/ });
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
export const ACK_MODES = ['primary', 'all'] as const;
export type AckMode = (typeof ACK_MODES)[number];
export const commitRequestSchema = s.object({
  model: modelId,
  epoch,
  allocId: s.string({ minLength: 1, maxLength: 64 }),
  blocks: blocks(s.object({ hash, g: layerGroup, checksum: u32 })),
  /**
   * 'primary': reply once the primary committed. 'all' (the default when absent): reply once every
   * in-sync replica of the blocks' cells confirmed its copy (bounded by the node's
   * replicationAckTimeoutMs; a replica that misses it is marked out of sync, listed in
   * `outOfSync`, and the commit still succeeds on the primary).
   */
  ack: s.optional(s.enum(ACK_MODES)),
});
export type CommitRequest = Infer<typeof commitRequestSchema>;
export const COMMIT_STATUSES = ['committed', 'checksum_mismatch', 'unknown'] as const;
export const commitReplySchema = s.object({
  blocks: blocks(s.object({ status: s.enum(COMMIT_STATUSES) })),
  /**
   * Replicas (node ids) that confirmed every committed block of theirs before the reply (ack 'all');
   * with ack 'primary' the count of replicas the blocks were sent to. Absent on nodes without
   * replication (rf 1).
   */
  replicated: s.optional(s.int({ min: 0 })),
  /** Replicas that did not confirm in time (now out of sync for the cells concerned). */
  outOfSync: s.optional(s.array(nodeIdSchema, { maxItems: 64 })),
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
  /**
   * true: read this node's hot copies (it is not in the cells' replica sets; a primary's locate
   * reply named it in `copies`). The ownership check is skipped and only blocks held here are
   * found; content addressing and checksums make any copy safe to read.
   */
  hotCopy: s.optional(s.bool()),
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
      /**
       * Other nodes holding a hot (extra, cached) copy of this block, readable with
       * `locate {hotCopy: true}`; only on found blocks that are hot, at most shard.hotCopiesMax.
       */
      copies: s.optional(s.array(nodeIdSchema, { maxItems: 64 })),
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
export const replicationStatsSchema = s.object({
  role: s.enum(['shard', 'replica'] as const),
  /** Cells this node is primary of / a (non-primary) replica of, in the node's current table. */
  primaryCells: s.int({ min: 0 }),
  replicaCells: s.int({ min: 0 }),
  /** Replica cells this node holds in full (backfilled and kept up); reads of others: NOT_IN_SYNC. */
  inSyncCells: s.int({ min: 0 }),
  /** As primary: replicas it considers out of sync, per cell (at most 256 cells listed). */
  outOfSync: s.array(s.object({ cell: cellIdSchema, nodes: s.array(nodeIdSchema, { maxItems: 8 }) }), {
    maxItems: 256,
  }),
  blocksReplicatedOut: s.int({ min: 0 }),
  blocksReplicatedIn: s.int({ min: 0 }),
  backfills: s.int({ min: 0 }),
  backfillBlocks: s.int({ min: 0 }),
  /** Blocks this node holds as hot copies for other primaries / its blocks with hot copies elsewhere. */
  hotCopiesHeld: s.int({ min: 0 }),
  hotBlocks: s.int({ min: 0 }),
  /** The node refuses writes until it has re-joined and refreshed placement (see FENCED). */
  fenced: s.bool(),
});
export type ReplicationStats = Infer<typeof replicationStatsSchema>;

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
  /** Replication state (issue 5); absent on nodes that predate it. */
  replication: s.optional(replicationStatsSchema),
});
export type StatsReply = Infer<typeof statsReplySchema>;

// ---------------------------------------------------------------------------------------------
// Replication (issue 5; docs/replication.md). Node-to-node ops, plus report_corrupt from the SDK.

/** A block as a peer reads it: where it lies in the source node's arena, and its crc32c. */
const replicaBlock = s.object({
  hash,
  g: layerGroup,
  /** Sequence bucket of the block's cell; required for replica copies, optional for hot copies. */
  s: seqBucket,
  i: chunkIndex,
  parent: s.string({ maxLength: 64, pattern: /^([0-9a-f]{64})?$/ }),
  /** Address in the source node's arena (rkey: the source's member record for `model`). */
  address: s.u64(),
  checksum: u32,
});
export type ReplicaBlock = Infer<typeof replicaBlock>;

// ---- replicate: the source (a cell's primary) tells a peer to copy blocks. The peer allocates
// locally, UCX-GETs the bytes from the source's arena, verifies each crc32c and commits.
// `hot: true`: the peer keeps them as evictable hot copies (not replicas; no ownership check).
// Errors: BAD_REQUEST, UNKNOWN_MODEL, STALE_EPOCH, NOT_OWNER (the peer is not a replica of a
// block's cell at `epoch`), FENCED, PEER_UNREACHABLE (the source's member record is unknown).
export const replicateRequestSchema = s.object({
  model: modelId,
  epoch,
  /** The node whose arena holds the bytes (the cell's primary). */
  source: nodeIdSchema,
  /** The source's member incarnation: a restarted source's addresses are not trusted. */
  sourceIncarnation: s.string({ minLength: 1, maxLength: 64 }),
  blocks: blocks(replicaBlock),
  hot: s.optional(s.bool()),
});
export type ReplicateRequest = Infer<typeof replicateRequestSchema>;
export const REPLICATE_STATUSES = ['stored', 'present', 'full', 'checksum_mismatch', 'failed'] as const;
export const replicateReplySchema = s.object({
  blocks: blocks(s.object({ status: s.enum(REPLICATE_STATUSES) })),
});
export type ReplicateReply = Infer<typeof replicateReplySchema>;

// ---- list_cell: a primary's committed blocks of some cells, paginated (backfill, index rebuild).
// `from`: the asking replica; when the last page (no nextCursor) is served to a replica of those
// cells, the primary counts it in sync for them from then on. Errors: BAD_REQUEST, UNKNOWN_MODEL,
// STALE_EPOCH, NOT_OWNER (not the primary of a listed cell at `epoch`).
export const LIST_CELL_LIMITS = { cellsMax: 8192, pageBlocksMax: 4096 } as const;
export const listCellRequestSchema = s.object({
  model: modelId,
  epoch,
  /** Cell ids `g.s`; the node must be the primary of each. Absent: every cell it is primary of. */
  cells: s.optional(s.array(cellIdSchema, { maxItems: LIST_CELL_LIMITS.cellsMax })),
  /** Opaque, from the previous page's nextCursor. */
  cursor: s.optional(s.string({ maxLength: 256 })),
  /** @default 1024 */
  limit: s.optional(s.int({ min: 1, max: LIST_CELL_LIMITS.pageBlocksMax })),
  from: s.optional(nodeIdSchema),
});
export type ListCellRequest = Infer<typeof listCellRequestSchema>;
export const listCellReplySchema = s.object({
  /** Layer groups of the model on this node (a chunk is complete with one block per group). */
  groups: s.int({ min: 1 }),
  incarnation: s.string({ minLength: 1, maxLength: 64 }),
  blocks: s.array(replicaBlock, { maxItems: LIST_CELL_LIMITS.pageBlocksMax }),
  nextCursor: s.optional(s.string({ maxLength: 256 })),
});
export type ListCellReply = Infer<typeof listCellReplySchema>;

// ---- resync: a primary tells a replica it missed blocks of some cells (a replicate timed out);
// the replica marks them not in sync (its locates answer NOT_IN_SYNC) and backfills them.
export const resyncRequestSchema = s.object({
  model: modelId,
  epoch,
  source: nodeIdSchema,
  cells: s.array(cellIdSchema, { minItems: 1, maxItems: LIST_CELL_LIMITS.cellsMax }),
});
export const resyncReplySchema = s.object({ accepted: s.int({ min: 0 }) });

// ---- drop_copies: a primary tells a hot-copy holder that blocks cooled down. Idempotent.
export const dropCopiesRequestSchema = s.object({
  model: modelId,
  blocks: blocks(s.object({ hash, g: layerGroup })),
});
export const dropCopiesReplySchema = s.object({ dropped: s.int({ min: 0 }) });

// ---- report_corrupt: a reader (the SDK) saw a checksum mismatch reading these blocks from this
// node. The node re-verifies each against its stored checksum; a corrupt block is dropped (and
// its chunk's index entry removed) so it stops being served and gets re-put. Idempotent.
export const reportCorruptRequestSchema = s.object({
  model: modelId,
  blocks: blocks(s.object({ hash, g: layerGroup })),
});
export const REPORT_CORRUPT_STATUSES = ['dropped', 'intact', 'absent'] as const;
export const reportCorruptReplySchema = s.object({
  blocks: blocks(s.object({ status: s.enum(REPORT_CORRUPT_STATUSES) })),
});
export type ReportCorruptReply = Infer<typeof reportCorruptReplySchema>;

// ---- debug_corrupt: test hook (only when the node runs with KVFABRIC_TEST_HOOKS=1, else
// BAD_REQUEST): flip one byte of a stored block in memory. BLOCK_NOT_FOUND when not held.
export const debugCorruptRequestSchema = s.object({
  model: modelId,
  hash,
  g: layerGroup,
  byteOffset: s.int({ min: 0 }),
});
export const debugCorruptReplySchema = s.object({ flipped: s.bool() });

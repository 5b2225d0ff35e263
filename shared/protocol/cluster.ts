/**
 * Cluster metadata contracts: bucket and stream names, the records stored in them, the
 * coordinator's subjects and schemas, the shard-node subject tree and the event subjects.
 *
 * Every actor and the SDK read these records from JetStream KV; every record read from a bucket
 * is validated with the schemas below (a record that does not parse is ignored and logged, never
 * trusted). See docs/coordinator.md for the prose version.
 *
 * Compatibility rule: record schemas are closed (unknown fields are rejected) so a typo never
 * passes silently; new fields are added as optional fields, and readers are upgraded before
 * writers start filling them.
 */
import type { PartitionSpec } from '../partition.js';
import { KvfError } from '../errors.js';
import { s, type Infer, type Schema } from './schema.js';

// ---------------------------------------------------------------------------------------------
// Buckets, keys and the event stream

/** JetStream KV bucket: key = nodeId, value = MemberRecord; re-put every heartbeat. */
export const MEMBERS_BUCKET = 'kvf_members';
/** JetStream KV bucket holding one key, PLACEMENT_KEY = the whole PlacementTable. */
export const PLACEMENT_BUCKET = 'kvf_placement';
export const PLACEMENT_KEY = 'table';
/** JetStream KV bucket holding one key, LEADER_KEY = the coordinator leader's LeaderLease. */
export const LEADER_BUCKET = 'kvf_leader';
export const LEADER_KEY = 'leader';
/** JetStream KV bucket: key = modelKey(modelId), value = ModelProfile JSON. */
export const MODELS_BUCKET = 'kvf_models';

/** JetStream stream recording placement, membership and leadership changes (an audit log). */
export const EVENTS_STREAM = 'KVF_EVENTS';
export const EVENTS_SUBJECTS = 'kvf.events.>';
export const EVENT_SUBJECTS = {
  placement: 'kvf.events.placement',
  member: 'kvf.events.member',
  leader: 'kvf.events.leader',
  /** Replication steps (backfill, promotion, out-of-sync, hot copies, index rebuild): ReplicationEvent. */
  replication: 'kvf.events.replication',
} as const;

/**
 * Node ids are KV keys and NATS subject tokens (`kvf.v1.shard.<nodeId>.<op>`): no dots, no
 * wildcards, no spaces.
 */
export const NODE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export function assertNodeId(nodeId: string): void {
  if (typeof nodeId !== 'string' || !NODE_ID_PATTERN.test(nodeId)) {
    throw new KvfError('CONFIG_INVALID', `node id must match ${NODE_ID_PATTERN}, got ${String(nodeId)}`);
  }
}

/**
 * Model ids may contain characters a KV key may not (':') or in positions it may not (a leading
 * '.'), so the key is an escape of the id: every character outside [A-Za-z0-9_/-] becomes
 * `=XX` (hex of its char code). Reversible and readable: `qwen2.5-7b` -> `qwen2=2E5-7b`.
 */
export function modelKey(modelId: string): string {
  return modelId.replace(
    /[^A-Za-z0-9_/-]/g,
    (c) => `=${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`,
  );
}

export function modelIdFromKey(key: string): string {
  return key.replace(/=([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

// ---------------------------------------------------------------------------------------------
// Subjects

/** Coordinator endpoints. Only the leader subscribes; before a leader exists: no responders. */
export const COORD_SUBJECTS = {
  registerModel: 'kvf.v1.coord.register_model',
  placement: 'kvf.v1.coord.placement',
  status: 'kvf.v1.coord.status',
} as const;
/** Queue group for coordinator endpoints, so an overlap during a handover answers once. */
export const COORD_QUEUE = 'kvf-coord';

/** Operations each shard node serves on `kvf.v1.shard.<nodeId>.<op>` (schemas: protocol/shard.ts). */
export const SHARD_OPS = [
  'allocate',
  'commit',
  'abort',
  'locate',
  'release',
  'stats',
  // Replication (issue 5, docs/replication.md): node to node, plus report_corrupt from readers.
  'replicate',
  'list_cell',
  'resync',
  'drop_copies',
  'report_corrupt',
  // Test hook: refused (BAD_REQUEST) unless the node runs with KVFABRIC_TEST_HOOKS=1.
  'debug_corrupt',
] as const;
export type ShardOp = (typeof SHARD_OPS)[number];

export function shardSubject(nodeId: string, op: ShardOp): string {
  assertNodeId(nodeId);
  return `kvf.v1.shard.${nodeId}.${op}`;
}

// ---------------------------------------------------------------------------------------------
// Local schema helpers (the shared schema library has no map or keep-as-string variants)

/** A JSON object used as a map, with a key pattern and a cap on the number of keys. */
function mapOf<T>(
  value: Schema<T>,
  opts: { keyPattern: RegExp; maxKeys: number },
): Schema<Record<string, T>> {
  const description = `map(${opts.keyPattern} -> ${value.description}, at most ${opts.maxKeys})`;
  return {
    description,
    parse(v: unknown, path = ''): Record<string, T> {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        throw new KvfError('BAD_REQUEST', `${path || '<root>'}: expected ${description}`);
      }
      const entries = Object.entries(v as Record<string, unknown>);
      if (entries.length > opts.maxKeys) {
        throw new KvfError(
          'BATCH_TOO_LARGE',
          `${path || '<root>'}: ${entries.length} keys, at most ${opts.maxKeys}`,
        );
      }
      const out: Record<string, T> = {};
      for (const [k, x] of entries) {
        if (!opts.keyPattern.test(k)) {
          throw new KvfError(
            'BAD_REQUEST',
            `${path || '<root>'}: key "${k.slice(0, 40)}" must match ${opts.keyPattern}`,
          );
        }
        out[k] = value.parse(x, `${path}[${k}]`);
      }
      return out;
    },
  };
}

/** Base64 kept as a string (records are re-serialised as they are). */
function base64String(maxBytes: number): Schema<string> {
  const inner = s.base64({ maxBytes });
  return { description: inner.description, parse: (v, p = '') => (inner.parse(v, p), v as string) };
}

/** u64 as a decimal string, kept as a string. */
function u64String(): Schema<string> {
  const inner = s.u64();
  return { description: inner.description, parse: (v, p = '') => (inner.parse(v, p), v as string) };
}

/** Any JSON object (validated further by its consumer, e.g. validateProfile). */
export const anyObject: Schema<Record<string, unknown>> = {
  description: 'object',
  parse(v: unknown, path = ''): Record<string, unknown> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      throw new KvfError('BAD_REQUEST', `${path || '<root>'}: expected an object`);
    }
    return v as Record<string, unknown>;
  },
};

const nodeId = s.string({ minLength: 1, maxLength: 64, pattern: NODE_ID_PATTERN });
const CELL_ID_PATTERN = /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$/;
const MODEL_ID_PATTERN = /^[A-Za-z0-9._:/-]{1,128}$/;
const wallMs = s.int({ min: 0 });

/** Limits that keep every record well under NATS' 1 MiB payload. */
export const CLUSTER_LIMITS = {
  /** Models one node may serve at once (one arena region per model). */
  modelsPerNodeMax: 64,
  /** Members the placement table may hold. */
  membersMax: 1024,
  /** Cells of the placement table: the whole table is one KV value (see PLACEMENT_TABLE_BYTES_MAX). */
  cellsMax: 8192,
  /** Replication factor upper bound. */
  replicationFactorMax: 8,
  /** Encoded placement table size cap: under the 512 KiB control-message limit. */
  placementTableBytesMax: 480 * 1024,
  /** A UCX worker address is a few hundred bytes; 4 KiB leaves room for multi-rail. */
  ucxAddressBytesMax: 4096,
  /** A packed rkey is tens to hundreds of bytes. */
  rkeyBytesMax: 4096,
  labelsMax: 16,
} as const;

// ---------------------------------------------------------------------------------------------
// Member records (bucket kvf_members)

/** One registered arena region for one model on one node: what a peer needs for UCX get/put. */
export const memberModelSchema = s.object({
  /** Remote virtual address of the region's first block (u64 as a decimal string). */
  baseAddress: u64String(),
  /** Packed UCX rkey for the region, base64. */
  rkey: base64String(CLUSTER_LIMITS.rkeyBytesMax),
  /** Bytes per block slot (maxBlockBytes of the profile for the cluster's layer groups). */
  blockBytes: s.int({ min: 1 }),
  blockCount: s.int({ min: 0 }),
});
export type MemberModel = Infer<typeof memberModelSchema>;

export const MEMBER_ROLES = ['shard', 'replica'] as const;
export type MemberRole = (typeof MEMBER_ROLES)[number];

export const memberRecordSchema = s.object({
  nodeId,
  /** Random per process start: a node that restarts is a different member with the same id. */
  incarnation: s.string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]+$/ }),
  /** 'shard' may be primary; 'replica' (e.g. a host-memory copy holder) only holds copies. */
  role: s.enum(MEMBER_ROLES),
  /** The node's UCX worker address, base64. */
  ucxAddress: base64String(CLUSTER_LIMITS.ucxAddressBytesMax),
  /** Arena bytes this node offers; its placement weight. 0 = takes no cells. */
  capacityBytes: s.int({ min: 0 }),
  usedBytes: s.int({ min: 0 }),
  models: mapOf(memberModelSchema, {
    keyPattern: MODEL_ID_PATTERN,
    maxKeys: CLUSTER_LIMITS.modelsPerNodeMax,
  }),
  /** Heartbeat counter, +1 on every put; a changed revision is what proves liveness. */
  seq: s.int({ min: 0 }),
  /** Wall-clock ms at process start: informational only, never compared across hosts. */
  startedAt: wallMs,
  /** Free-form labels (host, zone, version) for status output and future placement rules. */
  labels: s.optional(
    mapOf(s.string({ maxLength: 256 }), {
      keyPattern: /^[A-Za-z0-9_.-]{1,64}$/,
      maxKeys: CLUSTER_LIMITS.labelsMax,
    }),
  ),
});
/** `labels` is optional (the schema's inferred type would make the key required). */
export type MemberRecord = Omit<Infer<typeof memberRecordSchema>, 'labels'> & {
  labels?: Record<string, string>;
};

// ---------------------------------------------------------------------------------------------
// Placement table (bucket kvf_placement, key 'table')

export const partitionSpecSchema = s.object({
  layerGroups: s.int({ min: 1 }),
  seqBuckets: s.int({ min: 1 }),
  seqBucketTokens: s.int({ min: 1 }),
});

export const cellPlacementSchema = s.object({
  /** Ordered replica set: [primary, replica...], distinct node ids. Empty when no node is live. */
  replicas: s.array(nodeId, { maxItems: CLUSTER_LIMITS.replicationFactorMax }),
  /** The table epoch at which this cell's replica set (or a member's incarnation in it) last changed. */
  epoch: s.int({ min: 0 }),
});
export type CellPlacement = Infer<typeof cellPlacementSchema>;

export const placementMemberSchema = s.object({
  incarnation: s.string({ minLength: 1, maxLength: 64 }),
  role: s.enum(MEMBER_ROLES),
  /** Placement weight (capacityBytes when the table was computed). */
  weight: s.number({ min: 0 }),
});
export type PlacementMember = Infer<typeof placementMemberSchema>;

export const placementTableSchema = s.object({
  /** +1 on every write of the table. */
  epoch: s.int({ min: 1 }),
  /** Leadership term of the coordinator that wrote this version (a fencing token). */
  term: s.int({ min: 1 }),
  /** Id of the coordinator that wrote this version. */
  leaderId: s.string({ minLength: 1, maxLength: 128 }),
  spec: partitionSpecSchema,
  replicationFactor: s.int({ min: 1, max: CLUSTER_LIMITS.replicationFactorMax }),
  cells: mapOf(cellPlacementSchema, { keyPattern: CELL_ID_PATTERN, maxKeys: CLUSTER_LIMITS.cellsMax }),
  /** The live members the table was computed from. */
  members: mapOf(placementMemberSchema, { keyPattern: NODE_ID_PATTERN, maxKeys: CLUSTER_LIMITS.membersMax }),
  /** Why this version was written (e.g. 'member joined: n1'); informational. */
  reason: s.string({ maxLength: 1024 }),
  /** Wall-clock ms of the write: informational only. */
  updatedAt: wallMs,
});
export interface PlacementTable {
  epoch: number;
  term: number;
  leaderId: string;
  spec: PartitionSpec;
  replicationFactor: number;
  cells: Record<string, CellPlacement>;
  members: Record<string, PlacementMember>;
  reason: string;
  updatedAt: number;
}

// ---------------------------------------------------------------------------------------------
// Leader lease (bucket kvf_leader, key 'leader')

export const leaderLeaseSchema = s.object({
  /** Coordinator id. */
  id: s.string({ minLength: 1, maxLength: 128 }),
  /** Leadership term: greater than every term before it (see docs/coordinator.md). */
  term: s.int({ min: 1 }),
  /** Wall-clock ms of the last renewal: informational only; liveness is the revision changing. */
  renewedAt: wallMs,
  /** The holder's lease TTL, informational (each standby uses its own configured TTL). */
  ttlMs: s.int({ min: 1 }),
});
export type LeaderLease = Infer<typeof leaderLeaseSchema>;

// ---------------------------------------------------------------------------------------------
// Events (stream KVF_EVENTS)

export const cellMoveSchema = s.object({
  cell: s.string({ pattern: CELL_ID_PATTERN }),
  from: s.array(nodeId, { maxItems: CLUSTER_LIMITS.replicationFactorMax }),
  to: s.array(nodeId, { maxItems: CLUSTER_LIMITS.replicationFactorMax }),
});
export type CellMove = Infer<typeof cellMoveSchema>;

export const placementEventSchema = s.object({
  epoch: s.int({ min: 1 }),
  term: s.int({ min: 1 }),
  leaderId: s.string({ minLength: 1, maxLength: 128 }),
  /** Cells whose replica set or cell epoch changed (from === to: a member in it restarted). */
  moves: s.array(cellMoveSchema, { maxItems: CLUSTER_LIMITS.cellsMax }),
  reason: s.string({ maxLength: 1024 }),
  at: wallMs,
});
export type PlacementEvent = Infer<typeof placementEventSchema>;

export const MEMBER_EVENT_KINDS = ['joined', 'left', 'dead', 'restarted'] as const;
export const memberEventSchema = s.object({
  event: s.enum(MEMBER_EVENT_KINDS),
  nodeId,
  incarnation: s.string({ minLength: 1, maxLength: 64 }),
  role: s.enum(MEMBER_ROLES),
  term: s.int({ min: 1 }),
  at: wallMs,
});
export type MemberEvent = Infer<typeof memberEventSchema>;

export const LEADER_EVENT_KINDS = ['elected', 'resigned', 'deposed'] as const;
export const leaderEventSchema = s.object({
  event: s.enum(LEADER_EVENT_KINDS),
  id: s.string({ minLength: 1, maxLength: 128 }),
  term: s.int({ min: 1 }),
  at: wallMs,
});
export type LeaderEvent = Infer<typeof leaderEventSchema>;

export const REPLICATION_EVENT_KINDS = [
  /** A replica started / finished copying a cell set from its primary (restores the rf). */
  'backfill_started',
  'backfill_finished',
  'backfill_failed',
  /** A node became primary of cells it was a replica of (its previous primary left). */
  'promoted',
  /** A primary marked a replica out of sync (a replicate was not confirmed in time) / in sync again. */
  'out_of_sync',
  'in_sync',
  /** The node noticed it had been declared dead (fenced) and re-joined as a fresh member. */
  'fenced',
  /** Hot-chunk read copies pushed / withdrawn. */
  'hot_copies_added',
  'hot_copies_dropped',
  /** A reader reported a corrupt block; the node verified it and dropped it. */
  'corrupt_dropped',
  /** The Redis index was found empty and rebuilt from the shards. */
  'index_rebuilt',
] as const;
export type ReplicationEventKind = (typeof REPLICATION_EVENT_KINDS)[number];
export const replicationEventSchema = s.object({
  event: s.enum(REPLICATION_EVENT_KINDS),
  /** The node (or coordinator, for index_rebuilt) that did the step. */
  nodeId: s.string({ minLength: 1, maxLength: 128 }),
  /** The other side: the primary copied from, the replica marked, the previous primary. */
  peer: s.optional(nodeId),
  model: s.optional(s.string({ pattern: MODEL_ID_PATTERN })),
  cells: s.optional(s.array(s.string({ pattern: CELL_ID_PATTERN }), { maxItems: CLUSTER_LIMITS.cellsMax })),
  /** Placement table epoch the node acted at. */
  epoch: s.int({ min: 0 }),
  blocks: s.optional(s.int({ min: 0 })),
  bytes: s.optional(s.int({ min: 0 })),
  ms: s.optional(s.number({ min: 0 })),
  reason: s.optional(s.string({ maxLength: 1024 })),
  at: wallMs,
});
type ReplicationEventFields = Infer<typeof replicationEventSchema>;
/** Optional fields may be left out (the schema's inferred type would make every key required). */
export type ReplicationEvent = Pick<ReplicationEventFields, 'event' | 'nodeId' | 'epoch' | 'at'> &
  Partial<Omit<ReplicationEventFields, 'event' | 'nodeId' | 'epoch' | 'at'>>;

// ---------------------------------------------------------------------------------------------
// Coordinator requests and replies

/** register_model: idempotent. Errors: INVALID_PROFILE, PROFILE_CONFLICT, NOT_LEADER, INTERNAL. */
export const registerModelRequestSchema = s.object({ profile: anyObject });
export const registerModelReplySchema = s.object({
  modelId: s.string({ minLength: 1, maxLength: 128 }),
  /** false when the same profile was already registered. */
  created: s.bool(),
});
export type RegisterModelReply = Infer<typeof registerModelReplySchema>;

/** placement: read-only. Errors: NO_PLACEMENT (no table written yet), NOT_LEADER. */
export const placementRequestSchema = s.object({});
export const placementReplySchema = s.object({
  revision: s.int({ min: 1 }),
  table: placementTableSchema,
});
export type PlacementReply = { revision: number; table: PlacementTable };

export const memberStatusSchema = s.object({
  nodeId,
  incarnation: s.string({ minLength: 1, maxLength: 64 }),
  role: s.enum(MEMBER_ROLES),
  capacityBytes: s.int({ min: 0 }),
  usedBytes: s.int({ min: 0 }),
  /** Milliseconds since the leader last observed a new revision of this member's record. */
  silentMs: s.number({ min: 0 }),
  /** Cells for which this node is primary / any replica in the current table. */
  primaryCells: s.int({ min: 0 }),
  cells: s.int({ min: 0 }),
  models: s.array(s.string({ pattern: MODEL_ID_PATTERN }), { maxItems: CLUSTER_LIMITS.modelsPerNodeMax }),
});
export type MemberStatus = Infer<typeof memberStatusSchema>;

/** status: read-only summary for `kvfabric status`. */
export const statusRequestSchema = s.object({});
export const statusReplySchema = s.object({
  leader: s.object({ id: s.string({ minLength: 1, maxLength: 128 }), term: s.int({ min: 1 }) }),
  /** 0 when no placement table has been written yet. */
  epoch: s.int({ min: 0 }),
  replicationFactor: s.int({ min: 1 }),
  spec: partitionSpecSchema,
  members: s.array(memberStatusSchema, { maxItems: CLUSTER_LIMITS.membersMax }),
  models: s.array(s.string({ pattern: MODEL_ID_PATTERN }), { maxItems: 4096 }),
});
export type StatusReply = Infer<typeof statusReplySchema>;

// ---------------------------------------------------------------------------------------------
// Decoding records read from KV

const textDecoder = new TextDecoder('utf-8', { fatal: true });

/** JSON-decode and validate a KV value; throws KvfError(MALFORMED | BAD_REQUEST). */
export function decodeRecord<T>(bytes: Uint8Array, schema: Schema<T>, what: string): T {
  let obj: unknown;
  try {
    obj = JSON.parse(textDecoder.decode(bytes));
  } catch (err) {
    throw new KvfError('MALFORMED', `${what}: not valid UTF-8 JSON`, { cause: err });
  }
  return schema.parse(obj, what);
}

export const decodeMemberRecord = (b: Uint8Array): MemberRecord =>
  decodeRecord(b, memberRecordSchema, 'member');
export const decodePlacementTable = (b: Uint8Array): PlacementTable =>
  decodeRecord(b, placementTableSchema, 'placement');
export const decodeLeaderLease = (b: Uint8Array): LeaderLease => decodeRecord(b, leaderLeaseSchema, 'lease');

export function encodeRecord(value: unknown): string {
  return JSON.stringify(value);
}

/**
 * Gathers what `kvfabric status` shows, from the running cluster only (never from local guesses):
 * the coordinator leader's `status` and `placement` replies, every member's shard `stats` with
 * `chunks: true`, registered profiles from kvf_models, and which chunk hashes the Redis prefix
 * index holds (for stranded bytes).
 */
import { Kvm } from '@nats-io/kv';
import { connect, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';
import type { RedisOptions } from 'ioredis';
import { CoordinatorClient } from '../../../shared/cluster/coordinator-client.js';
import { readModel } from '../../../shared/cluster/models.js';
import { KvfError, toKvfError } from '../../../shared/errors.js';
import { PrefixIndex } from '../../../shared/index/prefix-index.js';
import { cellId } from '../../../shared/partition.js';
import { BUILTIN_PROFILES, type ModelProfile } from '../../../shared/profiles.js';
import { request } from '../../../shared/protocol/codec.js';
import {
  MODELS_BUCKET,
  shardSubject,
  type MemberStatus,
  type PlacementTable,
  type StatusReply,
} from '../../../shared/protocol/cluster.js';
import { statsReplySchema, type StatsReply } from '../../../shared/protocol/shard.js';
import { effectiveLayerGroups } from '../../../shared/sdk/layout.js';
import { computeStranded, type StoredBlock, type StrandedReport } from './stranded.js';

export interface GatherOptions {
  natsUrl: string;
  redisUrl: string;
  /** Prefix of the index's Redis keys. @default 'kvf' */
  keyPrefix?: string;
  /** NATS connect timeout. @default 3000 */
  connectTimeoutMs?: number;
  /** Per-request timeout (coordinator, shard stats). @default 3000 */
  requestTimeoutMs?: number;
  /** How long to keep asking for a coordinator leader (one may be mid-election). @default 5000 */
  leaderWaitMs?: number;
  /** Hashes per Redis EXISTS pipeline. @default 4096 */
  indexBatchMax?: number;
  /** NATS authentication and TLS (natsSecurityOptions of the deployment config). @default none */
  natsSecurity?: Partial<ConnectionOptions>;
  /** Redis ACL user, password and TLS (redisOptions of the deployment config). @default none */
  redisSecurity?: RedisOptions;
}

export const GATHER_DEFAULTS = {
  keyPrefix: 'kvf',
  connectTimeoutMs: 3000,
  requestTimeoutMs: 3000,
  leaderWaitMs: 5000,
  indexBatchMax: 4096,
  natsSecurity: {},
  redisSecurity: {},
} as const;

export interface ModelFill {
  model: string;
  blockBytes: number;
  capacityBlocks: number;
  usedBlocks: number;
  committedBlocks: number;
  evictedTotal: number;
}

export interface MemberView extends MemberStatus {
  /** usedBytes / capacityBytes (0 for no capacity). */
  fill: number;
  /** Per model, from the node's own stats; absent when the node did not answer. */
  modelFill?: ModelFill[];
  requests?: StatsReply['requests'];
  arenaKind?: StatsReply['arenaKind'];
  statsError?: string;
}

export interface PlacementGrid {
  layerGroups: number;
  seqBuckets: number;
  seqBucketTokens: number;
  /** grid[g][s]: primary node id of cell (g, s), null when the cell has none. */
  grid: (string | null)[][];
  /** Cells each node is primary for. */
  primaryCells: Record<string, number>;
}

export interface StrandedView extends StrandedReport {
  /** False when a node's stats were missing or truncated, or the index was unreachable: a lower bound. */
  complete: boolean;
  notes: string[];
}

export interface ClusterStatus {
  natsUrl: string;
  redisUrl: string;
  leader: StatusReply['leader'];
  epoch: number;
  replicationFactor: number;
  models: string[];
  members: MemberView[];
  placement: PlacementGrid;
  /** Shard request counters summed over the nodes that answered. */
  shardRequests: StatsReply['requests'];
  index: 'ready' | 'unreachable';
  stranded: StrandedView;
}

export function placementGrid(table: PlacementTable): PlacementGrid {
  const { layerGroups, seqBuckets, seqBucketTokens } = table.spec;
  const primaryCells: Record<string, number> = {};
  const grid: (string | null)[][] = [];
  for (let g = 0; g < layerGroups; g++) {
    const row: (string | null)[] = [];
    for (let s = 0; s < seqBuckets; s++) {
      const p = table.cells[cellId({ g, s })]?.replicas[0] ?? null;
      if (p !== null) primaryCells[p] = (primaryCells[p] ?? 0) + 1;
      row.push(p);
    }
    grid.push(row);
  }
  return { layerGroups, seqBuckets, seqBucketTokens, grid, primaryCells };
}

async function openNats(o: Required<GatherOptions>): Promise<NatsConnection> {
  try {
    return await connect({
      ...o.natsSecurity,
      servers: o.natsUrl,
      name: 'kvfabric-status',
      timeout: o.connectTimeoutMs,
      maxReconnectAttempts: 0,
    });
  } catch (err) {
    throw new KvfError('PEER_UNREACHABLE', `cannot reach NATS at ${o.natsUrl}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

async function profiles(nc: NatsConnection, ids: readonly string[]): Promise<Map<string, ModelProfile>> {
  const out = new Map<string, ModelProfile>();
  const kv = await new Kvm(nc).open(MODELS_BUCKET).catch(() => undefined);
  for (const id of ids) {
    const p = (kv ? await readModel(kv, id).catch(() => undefined) : undefined) ?? BUILTIN_PROFILES[id];
    if (p !== undefined) out.set(id, p);
  }
  return out;
}

async function nodeStats(
  nc: NatsConnection,
  nodeId: string,
  timeoutMs: number,
): Promise<StatsReply | KvfError> {
  try {
    return await request(nc, shardSubject(nodeId, 'stats'), { chunks: true }, statsReplySchema, {
      timeoutMs,
    });
  } catch (err) {
    return toKvfError(err);
  }
}

/** Chunk hashes present in the index; undefined when Redis cannot be reached. */
async function indexedHashes(
  o: Required<GatherOptions>,
  hashes: readonly string[],
): Promise<Set<string> | undefined> {
  const index = new PrefixIndex({
    url: o.redisUrl,
    keyPrefix: o.keyPrefix,
    redis: o.redisSecurity,
    commandTimeoutMs: o.requestTimeoutMs,
  });
  try {
    if (!(await index.ready(o.connectTimeoutMs))) return undefined;
    const out = new Set<string>();
    for (let i = 0; i < hashes.length; i += o.indexBatchMax) {
      const batch = hashes.slice(i, i + o.indexBatchMax);
      const present = await index.present(batch);
      batch.forEach((h, k) => {
        if (present[k] === true) out.add(h);
      });
    }
    return out;
  } catch {
    return undefined;
  } finally {
    await index.close();
  }
}

function memberView(m: MemberStatus, st: StatsReply | KvfError | undefined): MemberView {
  const v: MemberView = { ...m, fill: m.capacityBytes === 0 ? 0 : m.usedBytes / m.capacityBytes };
  if (st instanceof KvfError) v.statsError = `${st.codeName}: ${st.message}`;
  else if (st !== undefined) {
    v.arenaKind = st.arenaKind;
    v.requests = st.requests;
    v.modelFill = st.models.map(({ model, stats }) => ({
      model,
      blockBytes: stats.blockBytes,
      capacityBlocks: stats.capacityBlocks,
      usedBlocks: stats.usedBlocks,
      committedBlocks: stats.committedBlocks,
      evictedTotal: stats.evictedTotal,
    }));
  }
  return v;
}

/** Connects, gathers, disconnects. Throws PEER_UNREACHABLE / TIMEOUT when NATS or the leader is not there. */
export async function gatherStatus(opts: GatherOptions): Promise<ClusterStatus> {
  const o: Required<GatherOptions> = { ...GATHER_DEFAULTS, ...opts };
  const nc = await openNats(o);
  try {
    const coord = new CoordinatorClient(nc, {
      requestTimeoutMs: o.requestTimeoutMs,
      retryForMs: o.leaderWaitMs,
    });
    const status = await coord.status().catch((err: unknown) => {
      const e = toKvfError(err);
      throw new KvfError(e.codeName, `no coordinator leader answered on ${o.natsUrl}: ${e.message}`, {
        cause: err,
      });
    });
    const { table } = await coord.placement();
    const stats = new Map<string, StatsReply | KvfError>();
    await Promise.all(
      status.members.map(async (m) => stats.set(m.nodeId, await nodeStats(nc, m.nodeId, o.requestTimeoutMs))),
    );
    const notes: string[] = [];
    const blocks: StoredBlock[] = [];
    const shardRequests = { allocate: 0, commit: 0, locate: 0, errors: 0 };
    for (const [nodeId, st] of stats) {
      if (st instanceof KvfError) {
        notes.push(`${nodeId} did not answer stats (${st.codeName})`);
        continue;
      }
      for (const k of Object.keys(shardRequests) as (keyof typeof shardRequests)[])
        shardRequests[k] += st.requests[k];
      for (const { model, stats: ms } of st.models) {
        if (ms.chunksTruncated === true) notes.push(`${nodeId}/${model}: chunk list truncated`);
        for (const c of ms.chunks ?? []) blocks.push({ nodeId, model, ...c });
      }
    }
    const profs = await profiles(nc, [...new Set(blocks.map((b) => b.model))]);
    const indexed = await indexedHashes(o, [...new Set(blocks.map((b) => b.hash))]);
    if (indexed === undefined)
      notes.push(`prefix index (Redis ${o.redisUrl}) unreachable: every block counts as unindexed`);
    const report = computeStranded({
      blocks,
      indexed: indexed ?? new Set(),
      groupsOf: (id) => {
        const p = profs.get(id);
        return p === undefined ? undefined : effectiveLayerGroups(p, table.spec);
      },
    });
    return {
      natsUrl: o.natsUrl,
      redisUrl: o.redisUrl,
      leader: status.leader,
      epoch: status.epoch,
      replicationFactor: status.replicationFactor,
      models: status.models,
      members: status.members.map((m) => memberView(m, stats.get(m.nodeId))),
      placement: placementGrid(table),
      shardRequests,
      index: indexed === undefined ? 'unreachable' : 'ready',
      stranded: { ...report, complete: notes.length === 0, notes },
    };
  } finally {
    await nc.close().catch(() => undefined);
  }
}

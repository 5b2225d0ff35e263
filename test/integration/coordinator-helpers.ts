/**
 * Helpers shared by the coordinator integration tests: fake members (real MemberAgents writing
 * real KV records), polling, and readers for the placement history and the event stream.
 */
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { ensureBuckets, type ClusterBuckets } from '../../shared/cluster/buckets.js';
import { MemberAgent } from '../../shared/cluster/member-agent.js';
import {
  decodeLeaderLease,
  decodePlacementTable,
  EVENTS_STREAM,
  LEADER_BUCKET,
  MEMBERS_BUCKET,
  MODELS_BUCKET,
  PLACEMENT_BUCKET,
  PLACEMENT_KEY,
  type PlacementTable,
} from '../../shared/protocol/cluster.js';
import { Coordinator, type CoordinatorOptions } from '../../services/coordinator/coordinator.js';

/** Short timings so a file runs in seconds. */
export const FAST = {
  heartbeatIntervalMs: 100,
  nodeDeadAfterMs: 1000,
  leaderLeaseTtlMs: 1000,
} as const;

export const SPEC = { layerGroups: 4, seqBuckets: 8, seqBucketTokens: 1024 };

export const GiB = 1024 ** 3;

export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000,
  intervalMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function startMember(
  buckets: ClusterBuckets,
  nodeId: string,
  capacityBytes: number,
  opts: {
    role?: 'shard' | 'replica';
    onFenced?: (e: { previousIncarnation: string; incarnation: string }) => void;
  } = {},
): Promise<MemberAgent> {
  const agent = new MemberAgent(buckets.members, {
    heartbeatIntervalMs: FAST.heartbeatIntervalMs,
    onFenced: opts.onFenced,
  });
  await agent.start({
    nodeId,
    role: opts.role ?? 'shard',
    ucxAddress: Buffer.from(`ucx-${nodeId}`).toString('base64'),
    capacityBytes,
    usedBytes: 0,
    models: {},
  });
  return agent;
}

export async function startCoordinator(
  url: string,
  id: string,
  over: Partial<CoordinatorOptions> = {},
): Promise<{ coord: Coordinator; nc: NatsConnection }> {
  const nc = await connect({ servers: url, name: id });
  const coord = await Coordinator.start(nc, { id, spec: SPEC, ...FAST, ...over });
  return { coord, nc };
}

export async function readTable(
  b: ClusterBuckets,
): Promise<{ table: PlacementTable; revision: number } | undefined> {
  const e = await b.placement.get(PLACEMENT_KEY);
  if (e === null || e.operation !== 'PUT') return undefined;
  return { table: decodePlacementTable(e.value), revision: e.revision };
}

export async function placementHistory(
  b: ClusterBuckets,
): Promise<{ table: PlacementTable; revision: number }[]> {
  const out: { table: PlacementTable; revision: number }[] = [];
  const it = await b.placement.history({ key: PLACEMENT_KEY });
  for await (const e of it) {
    if (e.operation === 'PUT') out.push({ table: decodePlacementTable(e.value), revision: e.revision });
  }
  return out.sort((a, b) => a.revision - b.revision);
}

export async function leaseHistory(b: ClusterBuckets): Promise<{ id: string; term: number }[]> {
  const out: { id: string; term: number; revision: number }[] = [];
  const it = await b.leader.history({ key: 'leader' });
  for await (const e of it) {
    if (e.operation === 'PUT') out.push({ ...decodeLeaderLease(e.value), revision: e.revision });
  }
  return out.sort((a, b) => a.revision - b.revision);
}

export interface StoredEvent {
  subject: string;
  body: Record<string, unknown>;
}

/** Every message currently in KVF_EVENTS, in order. */
export async function readEvents(b: ClusterBuckets): Promise<StoredEvent[]> {
  const info = await b.jsm.streams.info(EVENTS_STREAM);
  const out: StoredEvent[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await b.jsm.streams.getMessage(EVENTS_STREAM, { seq }).catch(() => null);
    if (m !== null) out.push({ subject: m.subject, body: m.json<Record<string, unknown>>() });
  }
  return out;
}

/** Remove every bucket and the event stream, so the next test starts from an empty cluster. */
export async function resetCluster(nc: NatsConnection): Promise<ClusterBuckets> {
  const b = await ensureBuckets(nc);
  for (const name of [MEMBERS_BUCKET, PLACEMENT_BUCKET, LEADER_BUCKET, MODELS_BUCKET]) {
    await b.jsm.streams.delete(`KV_${name}`);
  }
  await b.jsm.streams.delete(EVENTS_STREAM);
  return ensureBuckets(nc);
}

/** Cells whose replica set includes nodeId. */
export function cellsOf(t: PlacementTable, nodeId: string): string[] {
  return Object.entries(t.cells)
    .filter(([, c]) => c.replicas.includes(nodeId))
    .map(([id]) => id)
    .sort();
}

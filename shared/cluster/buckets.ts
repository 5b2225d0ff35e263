/**
 * Idempotent creation of the cluster's JetStream KV buckets and event stream. Every actor (the
 * coordinator, shard nodes, replicas, the SDK) calls ensureBuckets at start, so start order does
 * not matter: the first caller creates, later callers bind.
 *
 * nats-server 2.9 has no per-stream `sync_interval`: durability of acknowledged metadata writes
 * relies on the server's default fsync policy there. Production pins a newer server with
 * `sync_interval: always` and replicas 3 (see docs/coordinator.md).
 */
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { KvfError } from '../errors.js';
import {
  EVENTS_STREAM,
  EVENTS_SUBJECTS,
  LEADER_BUCKET,
  MEMBERS_BUCKET,
  MODELS_BUCKET,
  PLACEMENT_BUCKET,
} from '../protocol/cluster.js';

export interface BucketOptions {
  /** JetStream replicas for every bucket and the stream. @default 1 (3 in production clusters) */
  replicas?: number;
  /** History kept per key in kvf_placement and kvf_leader (audit and CAS debugging). @default 16 */
  metadataHistory?: number;
  /** Events older than this are dropped from KVF_EVENTS. @default 7 days */
  eventsMaxAgeMs?: number;
  /** At most this many events are kept. @default 100_000 */
  eventsMaxMsgs?: number;
  /** At most this many bytes of events are kept. @default 256 MiB */
  eventsMaxBytes?: number;
}

export const BUCKET_DEFAULTS = {
  replicas: 1,
  metadataHistory: 16,
  eventsMaxAgeMs: 7 * 24 * 3600 * 1000,
  eventsMaxMsgs: 100_000,
  eventsMaxBytes: 256 * 1024 * 1024,
} as const;

/** History floor on placement and leader: enough versions to audit a handover. */
const METADATA_HISTORY_MIN = 5;

export interface ClusterBuckets {
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly members: KV;
  readonly placement: KV;
  readonly leader: KV;
  readonly models: KV;
}

async function retryOnce<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (first) {
    // Two actors creating the same bucket at once: the loser's add fails, then the info succeeds.
    try {
      return await fn();
    } catch (err) {
      throw new KvfError('INTERNAL', `cannot create or bind ${what}: ${(err as Error).message}`, {
        cause: err,
        details: { first: (first as Error).message },
      });
    }
  }
}

async function ensureEventsStream(jsm: JetStreamManager, o: Required<BucketOptions>): Promise<void> {
  const config = {
    name: EVENTS_STREAM,
    subjects: [EVENTS_SUBJECTS],
    max_age: o.eventsMaxAgeMs * 1_000_000,
    max_msgs: o.eventsMaxMsgs,
    max_bytes: o.eventsMaxBytes,
    num_replicas: o.replicas,
  };
  await retryOnce(EVENTS_STREAM, async () => {
    try {
      await jsm.streams.info(EVENTS_STREAM);
    } catch (err) {
      if (!/stream not found/i.test((err as Error).message)) throw err;
      await jsm.streams.add(config);
    }
  });
}

export async function ensureBuckets(nc: NatsConnection, opts: BucketOptions = {}): Promise<ClusterBuckets> {
  const o: Required<BucketOptions> = { ...BUCKET_DEFAULTS, ...opts };
  if (o.metadataHistory < METADATA_HISTORY_MIN) {
    throw new KvfError('CONFIG_INVALID', `metadataHistory must be >= ${METADATA_HISTORY_MIN}`);
  }
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const kvm = new Kvm(js);
  // allow_direct off: a direct get may be answered by any replica, and a replica that is catching
  // up (a restarted nats-server) answers with an old revision. The readers of these buckets act on
  // what they read (a member recovering from a lost heartbeat CAS, a standby reading the leader
  // lease, the coordinator re-reading a silent member), so every get goes to the stream leader.
  const open = (name: string, history: number): Promise<KV> =>
    retryOnce(name, () => kvm.create(name, { history, replicas: o.replicas, allow_direct: false }));
  // Members: only the latest heartbeat matters. Models: one version per id, rewritten never.
  const [members, placement, leader, models] = await Promise.all([
    open(MEMBERS_BUCKET, 1),
    open(PLACEMENT_BUCKET, o.metadataHistory),
    open(LEADER_BUCKET, o.metadataHistory),
    open(MODELS_BUCKET, 1),
  ]);
  await ensureEventsStream(jsm, o);
  return { js, jsm, members, placement, leader, models };
}

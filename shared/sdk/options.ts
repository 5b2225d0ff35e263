/**
 * Connect options in three stages (public ConnectOptions with documented defaults ->
 * compileOptions() validating and normalising -> the values the flows use).
 */
import { KvfError } from '../errors.js';
import type { KvfConfig } from '../config.js';
import type { Logger } from '../log.js';
import { ACK_MODES, SHARD_LIMITS, type AckMode } from '../protocol/shard.js';
import type { UcxClientOptions } from './dataplane.js';
import { monoNow, type MonoClock } from './lease.js';

export interface ConnectOptions {
  /** A loaded deployment config; the explicit options below override its fields. */
  config?: KvfConfig;
  /** NATS servers. @default config.nats.servers, else 'nats://127.0.0.1:4222' */
  natsServers?: string | string[];
  natsUser?: string;
  natsPass?: string;
  natsToken?: string;
  /** Redis holding the prefix index. @default config.redis.url, else 'redis://127.0.0.1:6379' */
  redisUrl?: string;
  redisPassword?: string;
  /** Prefix of the index's Redis keys. @default config.redis.keyPrefix, else 'kvf' */
  keyPrefix?: string;
  /** Sliding TTL of index entries. @default config.redis.indexTtlSeconds, else 86400 */
  indexTtlSeconds?: number;
  /** Tenant namespace used when a call names none. @default 'default' */
  namespace?: string;
  /** Model id used when a call names none (the convenience API needs one). */
  model?: string;
  /** Timeout of one shard request (locate, allocate, commit...). @default config.nats.requestTimeoutMs, else 5000 */
  requestTimeoutMs?: number;
  /** Timeout of one Redis command; past it the lookup degrades to a miss. @default 1000 */
  indexCommandTimeoutMs?: number;
  /** How long connect waits for Redis before running degraded. @default 2000 */
  indexConnectWaitMs?: number;
  /** How long connect (and a get or put) waits for the first placement table. @default 10000 */
  placementWaitMs?: number;
  /**
   * Keep the placement table fresh with a JetStream watch. false: read it at connect and again
   * only after a shard refuses a request (no background traffic). @default true
   */
  placementWatch?: boolean;
  /** Refresh-and-retry rounds after a shard refuses with STALE_EPOCH / NOT_OWNER. @default 1 */
  staleRetriesMax?: number;
  /** Blocks in one request to one node (a longer prompt is served in part). @default 4096 */
  blocksPerRequestMax?: number;
  /** Lease-release requests in flight at once (they are fire-and-forget). @default 4 */
  releaseConcurrencyMax?: number;
  /** Queued releases beyond this are dropped (leases expire on their own). @default 1024 */
  releaseQueueMax?: number;
  /** Re-checks of blocks another writer was writing ('busy') before giving up on indexing them. @default 3 */
  busyRecheckMax?: number;
  /** Delay before the first busy re-check; doubles each time. @default 20 */
  busyRecheckDelayMs?: number;
  /** Default put ack mode: 'all' (every in-sync replica confirmed) or 'primary'. @default 'all' */
  putAck?: AckMode;
  /** When Redis is unreachable, ask the shards directly (slower) instead of missing. @default true */
  degradedShardLookup?: boolean;
  /** Latency samples kept per operation for percentiles. @default 4096 */
  latencySamplesMax?: number;
  /**
   * Timeout of one locate (the read path's request; a node answers it from memory). Past it the
   * node counts as a failed copy for this read and its blocks move to another copy.
   * @default min(requestTimeoutMs, 1000)
   */
  locateTimeoutMs?: number;
  /**
   * Bytes read under a read lease count only when the read and its checksum check complete
   * before (locate send time + leaseTtlMs - this margin), on the local monotonic clock. @default 100
   */
  leaseSafetyMarginMs?: number;
  /** Rounds of a get (each: one locate per node, then reads); later rounds fail over. @default 3 */
  readRoundsMax?: number;
  /**
   * Spread reads over every copy known to be in sync (and over hot blocks' extra copies).
   * false: read the primary, other copies only on failover. @default true
   */
  readSpread?: boolean;
  /** Hot blocks whose extra read copies are remembered (oldest dropped). @default 4096 */
  hotCopiesMax?: number;
  /** How long a hot block's extra copies are remembered. @default 30000 */
  hotCopyTtlMs?: number;
  /** How long a replica that refused a cell with NOT_IN_SYNC is not spread to. @default 2000 */
  notInSyncTtlMs?: number;
  /**
   * How long a node that failed a read (locate timeout, no responders, a transport error) is
   * tried last by later reads: while a paused or dying node is not yet declared dead, each read
   * would otherwise wait out a locate timeout on it. 0 = only within one read. @default 3000
   */
  downNodeTtlMs?: number;
  /** Delay between NATS reconnect attempts (plus jitter); reconnects never stop. @default 250 */
  natsReconnectWaitMs?: number;
  /** Random extra delay added to each reconnect attempt. @default 250 */
  natsReconnectJitterMs?: number;
  /** UCX options. @default config.ucx */
  ucx?: UcxClientOptions;
  logger?: Logger;
  /** Monotonic clock in ms for read-lease deadlines (a testing hook). @default performance.now */
  clock?: MonoClock;
}

export interface CompiledOptions {
  natsServers: string[];
  natsUser: string | undefined;
  natsPass: string | undefined;
  natsToken: string | undefined;
  redisUrl: string;
  redisPassword: string | undefined;
  keyPrefix: string;
  indexTtlSeconds: number;
  namespace: string;
  model: string | undefined;
  requestTimeoutMs: number;
  indexCommandTimeoutMs: number;
  indexConnectWaitMs: number;
  placementWaitMs: number;
  placementWatch: boolean;
  staleRetriesMax: number;
  blocksPerRequestMax: number;
  releaseConcurrencyMax: number;
  releaseQueueMax: number;
  busyRecheckMax: number;
  busyRecheckDelayMs: number;
  degradedShardLookup: boolean;
  putAck: AckMode;
  latencySamplesMax: number;
  locateTimeoutMs: number;
  leaseSafetyMarginMs: number;
  readRoundsMax: number;
  readSpread: boolean;
  hotCopiesMax: number;
  hotCopyTtlMs: number;
  notInSyncTtlMs: number;
  downNodeTtlMs: number;
  natsReconnectWaitMs: number;
  natsReconnectJitterMs: number;
  ucx: UcxClientOptions;
  logger: Logger | undefined;
  clock: MonoClock;
}

export const CONNECT_DEFAULTS = {
  natsServers: ['nats://127.0.0.1:4222'],
  redisUrl: 'redis://127.0.0.1:6379',
  keyPrefix: 'kvf',
  indexTtlSeconds: 86_400,
  namespace: 'default',
  requestTimeoutMs: 5000,
  indexCommandTimeoutMs: 1000,
  indexConnectWaitMs: 2000,
  placementWaitMs: 10_000,
  placementWatch: true,
  staleRetriesMax: 1,
  blocksPerRequestMax: SHARD_LIMITS.blocksPerRequestMax,
  releaseConcurrencyMax: 4,
  releaseQueueMax: 1024,
  busyRecheckMax: 3,
  busyRecheckDelayMs: 20,
  degradedShardLookup: true,
  putAck: 'all' as AckMode,
  latencySamplesMax: 4096,
  locateTimeoutMsMax: 1000,
  leaseSafetyMarginMs: 100,
  readRoundsMax: 3,
  readSpread: true,
  hotCopiesMax: 4096,
  hotCopyTtlMs: 30_000,
  notInSyncTtlMs: 2000,
  downNodeTtlMs: 3000,
  natsReconnectWaitMs: 250,
  natsReconnectJitterMs: 250,
} as const;

function int(name: string, v: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new KvfError(
      'CONFIG_INVALID',
      `${name}: expected an integer in [${min}, ${max}], got ${String(v)}`,
      {
        details: { option: name },
      },
    );
  }
  return v;
}

function ackMode(v: unknown): AckMode {
  if (!ACK_MODES.includes(v as AckMode)) {
    throw new KvfError('CONFIG_INVALID', `putAck: expected 'primary' or 'all', got ${String(v)}`);
  }
  return v as AckMode;
}

const NAMESPACE = /^[^\s]{1,256}$/;

/** Validates a namespace (any non-blank string up to 256 chars; it is hashed, never a key part). */
export function checkNamespace(ns: unknown): string {
  if (typeof ns !== 'string' || !NAMESPACE.test(ns)) {
    throw new KvfError('BAD_REQUEST', `namespace: expected 1-256 non-space characters, got ${String(ns)}`);
  }
  return ns;
}

export function compileOptions(o: ConnectOptions): CompiledOptions {
  const c = o.config;
  const d = CONNECT_DEFAULTS;
  const servers = o.natsServers ?? c?.nats.servers ?? d.natsServers;
  const natsServers = typeof servers === 'string' ? servers.split(',').map((x) => x.trim()) : [...servers];
  if (natsServers.length === 0 || natsServers.some((x) => x.length === 0)) {
    throw new KvfError('CONFIG_INVALID', 'natsServers: expected at least one server URL');
  }
  const requestTimeoutMs = int(
    'requestTimeoutMs',
    o.requestTimeoutMs ?? c?.nats.requestTimeoutMs ?? d.requestTimeoutMs,
    1,
  );
  const ucx: UcxClientOptions = { ...o.ucx };
  ucx.transports ??= c?.ucx.transports;
  ucx.opTimeoutMs ??= c?.ucx.opTimeoutMs;
  ucx.syncWaitUs ??= c?.ucx.syncWaitUs;
  return {
    natsServers,
    natsUser: o.natsUser ?? c?.nats.user,
    natsPass: o.natsPass ?? c?.nats.pass,
    natsToken: o.natsToken ?? c?.nats.token,
    redisUrl: o.redisUrl ?? c?.redis.url ?? d.redisUrl,
    redisPassword: o.redisPassword ?? c?.redis.password,
    keyPrefix: o.keyPrefix ?? c?.redis.keyPrefix ?? d.keyPrefix,
    indexTtlSeconds: int(
      'indexTtlSeconds',
      o.indexTtlSeconds ?? c?.redis.indexTtlSeconds ?? d.indexTtlSeconds,
      1,
    ),
    namespace: checkNamespace(o.namespace ?? d.namespace),
    model: o.model,
    requestTimeoutMs,
    indexCommandTimeoutMs: int(
      'indexCommandTimeoutMs',
      o.indexCommandTimeoutMs ?? d.indexCommandTimeoutMs,
      1,
    ),
    indexConnectWaitMs: int('indexConnectWaitMs', o.indexConnectWaitMs ?? d.indexConnectWaitMs, 0),
    placementWaitMs: int('placementWaitMs', o.placementWaitMs ?? d.placementWaitMs, 0),
    placementWatch: o.placementWatch ?? d.placementWatch,
    staleRetriesMax: int('staleRetriesMax', o.staleRetriesMax ?? d.staleRetriesMax, 0, 8),
    blocksPerRequestMax: int(
      'blocksPerRequestMax',
      o.blocksPerRequestMax ?? d.blocksPerRequestMax,
      1,
      SHARD_LIMITS.blocksPerRequestMax,
    ),
    releaseConcurrencyMax: int(
      'releaseConcurrencyMax',
      o.releaseConcurrencyMax ?? d.releaseConcurrencyMax,
      1,
    ),
    releaseQueueMax: int('releaseQueueMax', o.releaseQueueMax ?? d.releaseQueueMax, 0),
    busyRecheckMax: int('busyRecheckMax', o.busyRecheckMax ?? d.busyRecheckMax, 0, 16),
    busyRecheckDelayMs: int('busyRecheckDelayMs', o.busyRecheckDelayMs ?? d.busyRecheckDelayMs, 0),
    degradedShardLookup: o.degradedShardLookup ?? d.degradedShardLookup,
    putAck: ackMode(o.putAck ?? d.putAck),
    latencySamplesMax: int('latencySamplesMax', o.latencySamplesMax ?? d.latencySamplesMax, 1, 1 << 20),
    locateTimeoutMs: int(
      'locateTimeoutMs',
      o.locateTimeoutMs ?? Math.min(requestTimeoutMs, d.locateTimeoutMsMax),
      1,
    ),
    leaseSafetyMarginMs: int('leaseSafetyMarginMs', o.leaseSafetyMarginMs ?? d.leaseSafetyMarginMs, 0),
    readRoundsMax: int('readRoundsMax', o.readRoundsMax ?? d.readRoundsMax, 1, 16),
    readSpread: o.readSpread ?? d.readSpread,
    hotCopiesMax: int('hotCopiesMax', o.hotCopiesMax ?? d.hotCopiesMax, 0, 1 << 20),
    hotCopyTtlMs: int('hotCopyTtlMs', o.hotCopyTtlMs ?? d.hotCopyTtlMs, 1),
    notInSyncTtlMs: int('notInSyncTtlMs', o.notInSyncTtlMs ?? d.notInSyncTtlMs, 0),
    downNodeTtlMs: int('downNodeTtlMs', o.downNodeTtlMs ?? d.downNodeTtlMs, 0),
    natsReconnectWaitMs: int('natsReconnectWaitMs', o.natsReconnectWaitMs ?? d.natsReconnectWaitMs, 1),
    natsReconnectJitterMs: int(
      'natsReconnectJitterMs',
      o.natsReconnectJitterMs ?? d.natsReconnectJitterMs,
      0,
    ),
    ucx,
    logger: o.logger,
    clock: o.clock ?? monoNow,
  };
}

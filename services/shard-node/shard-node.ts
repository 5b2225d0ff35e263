/**
 * The shard-node actor: owns one arena per served model, serves the batched, epoch-checked
 * allocate/commit/abort/locate/release/stats endpoints (handlers in ./handlers.ts), publishes its
 * UCX address and rkeys in its member record, registers as a NATS micro service, sweeps expired
 * allocations, leases and blocks on a timer, and removes evicted chunks from the prefix index.
 *
 * Transports (NATS connection, UCX worker, index), the clock and id sources are injected: main.ts
 * wires the real ones, tests may share one UCX worker between the node and a client.
 *
 * Lifecycle: new -> start() -> running -> stop() -> stopped. stop() refuses new requests, waits
 * (bounded) for in-flight ones, deletes the member record and closes the arenas; the injected
 * transports stay open (their owner closes them).
 */
import { randomBytes } from 'node:crypto';
import type { KvEntry } from '@nats-io/kv';
import type { NatsConnection, QueuedIterator, Subscription } from '@nats-io/transport-node';
import type { JetStreamClient } from '@nats-io/jetstream';
import { Arena } from '../../native/index.js';
import { ensureBuckets, type ClusterBuckets } from '../../shared/cluster/buckets.js';
import { systemClock, type Clock } from '../../shared/cluster/clock.js';
import { MemberAgent } from '../../shared/cluster/member-agent.js';
import { MembersCache } from '../../shared/cluster/members-cache.js';
import { decodeProfile } from '../../shared/cluster/models.js';
import { PlacementCache } from '../../shared/cluster/placement-cache.js';
import type { KvfConfig } from '../../shared/config.js';
import { KvfError, toKvfError } from '../../shared/errors.js';
import { createLogger, type Logger } from '../../shared/log.js';
import type { PartitionSpec } from '../../shared/partition.js';
import { getBuiltinProfile, type ModelProfile } from '../../shared/profiles.js';
import { serveEndpoint } from '../../shared/protocol/codec.js';
import {
  assertNodeId,
  CLUSTER_LIMITS,
  SHARD_OPS,
  shardSubject,
  type MemberModel,
  type MemberRole,
  type ShardOp,
} from '../../shared/protocol/cluster.js';
import type { ReplicationStats } from '../../shared/protocol/shard.js';
import { cellId } from '../../shared/partition.js';
import type { KvfMetrics } from '../../shared/metrics/registry.js';
import { recordEvictions } from '../../shared/metrics/sources.js';
import { scopeForSubject, tenantSubjectsOf } from '../../shared/tenancy.js';
import { Backfiller } from './backfill.js';
import { HotManager } from './hot-manager.js';
import { PeerLinks, type UcxConnector } from './peers.js';
import { Replication } from './replication.js';
import type { Schema } from '../../shared/protocol/schema.js';
import type { EvictedBlock } from './block-store.js';
import { ShardHandlers, SHARD_REQUEST_SCHEMAS } from './handlers.js';
import { EndpointStats, MicroService } from './micro-service.js';
import { ModelArena, type OpenArena, type UcxRegistrar } from './model-arena.js';

/** What eviction needs of the prefix index (shared/index/prefix-index.ts PrefixIndex satisfies it). */
export interface EvictionIndex {
  remove(hashes: readonly string[]): Promise<boolean>;
}

export interface ShardNodeOptions {
  /** Node id: NATS subject token and members key. */
  nodeId: string;
  partition: PartitionSpec;
  /**
   * Arena budget for the models served at start, split evenly between them; every model
   * registered later (kvf_models) gets one more share of the same size. @default 256 MiB
   */
  arenaBytes?: number;
  /** @default 'auto' (CUDA when usable, else host memory with one log line) */
  arenaKind?: 'auto' | 'host' | 'cuda';
  /** Prefault host arenas in the background after opening them (Arena.prefault). @default false */
  prefault?: boolean;
  /** Built-in profile ids served from start (config models.builtin). */
  models: readonly string[];
  /** Extra profiles served from start (tests, embedded use). */
  profiles?: readonly ModelProfile[];
  /** Serve models registered in kvf_models as they appear. @default true */
  watchModels?: boolean;
  /** @default 30000 */
  allocTimeoutMs?: number;
  /** @default 10000 */
  readLeaseMs?: number;
  /** Sliding TTL of a committed block. @default 24 h */
  blockTtlMs?: number;
  /** Most blocks in one request (the wire schema caps it at 4096 too). @default 4096 */
  batchBlocksMax?: number;
  /** Member record heartbeat. @default 1000 */
  heartbeatIntervalMs?: number;
  /** Period of the allocation/lease/TTL sweep and of usedBytes updates. @default 1000 */
  sweepIntervalMs?: number;
  /** How long stop() waits for in-flight requests. @default 5000 */
  drainTimeoutMs?: number;
  /** Micro-service version (semver). @default '0.0.0' */
  serviceVersion?: string;
  labels?: Record<string, string>;
  /** 'replica': never a primary, holds copies (kvfabric replica). @default 'shard' */
  role?: MemberRole;
  /** A commit with ack 'all' waits this long for each replica. @default 2000 */
  replicationAckTimeoutMs?: number;
  /** Refuse writes (FENCED) while the last heartbeat is older than this. @default 3000 */
  selfFenceAfterMs?: number;
  /** Locates per second that make a block hot. @default 200 */
  hotReadsPerSec?: number;
  /** Extra read copies of a hot block (0 = off). @default 2 */
  hotCopiesMax?: number;
  /** Unread hot copies are dropped after this; a block cool this long loses its copies. @default 10000 */
  hotCopyTtlMs?: number;
  /** Bound of node-to-node requests sent without a caller waiting. @default 5000 */
  peerRequestTimeoutMs?: number;
  /**
   * JetStream replicas of the buckets and the event stream when this node creates them first
   * (config nats.jetstreamReplicas). @default 1
   */
  jetstreamReplicas?: number;
}

export interface ShardNodeDeps {
  nc: NatsConnection;
  ucx: UcxRegistrar & UcxConnector;
  index: EvictionIndex;
  /** @default ensureBuckets(nc, {replicas: options.jetstreamReplicas}) */
  buckets?: ClusterBuckets;
  /** @default Arena.open */
  openArena?: OpenArena;
  clock?: Clock;
  /** Source of member incarnations and the wire-id prefix. @default 12 random bytes, base64url */
  newId?: () => string;
  logger?: Logger;
  /** Process metrics (shared/metrics): evictions, replication pulls, checksum failures. */
  metrics?: Pick<KvfMetrics, 'tally'>;
}

export const SHARD_NODE_DEFAULTS = {
  arenaBytes: 256 * 1024 ** 2,
  arenaKind: 'auto',
  prefault: false,
  allocTimeoutMs: 30_000,
  readLeaseMs: 10_000,
  blockTtlMs: 24 * 3600 * 1000,
  batchBlocksMax: 4096,
  heartbeatIntervalMs: 1000,
  sweepIntervalMs: 1000,
  drainTimeoutMs: 5000,
  serviceVersion: '0.0.0',
  role: 'shard',
  replicationAckTimeoutMs: 2000,
  selfFenceAfterMs: 3000,
  hotReadsPerSec: 200,
  hotCopiesMax: 2,
  hotCopyTtlMs: 10_000,
  peerRequestTimeoutMs: 5000,
} as const;

export const MICRO_SERVICE_NAME = 'kvfabric-shard';

type Resolved = Required<Omit<ShardNodeOptions, 'profiles' | 'labels'>> &
  Pick<ShardNodeOptions, 'profiles' | 'labels'>;

type State = 'new' | 'starting' | 'running' | 'stopping' | 'stopped';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class ShardNode {
  readonly nodeId: string;
  readonly o: Resolved;
  readonly clock: Clock;
  readonly log: Logger;
  /** Prefix of allocation and lease ids: ids of another process are recognised and refused. */
  readonly instanceId: string;
  readonly models = new Map<string, ModelArena>();
  placement: PlacementCache | undefined;
  agent: MemberAgent | undefined;
  private state: State = 'new';
  private buckets: ClusterBuckets | undefined;
  private readonly handlers: ShardHandlers;
  private readonly stats = new Map<ShardOp, EndpointStats>();
  private readonly subs: Subscription[] = [];
  private micro: MicroService | undefined;
  private modelWatch: QueuedIterator<KvEntry> | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private inFlight = 0;
  private lastUsedBytes = -1;
  /** Index removals of evicted chunks, chained: allocate replies wait for it (see evictionBarrier). */
  private removals: Promise<void> = Promise.resolve();
  private modelChain: Promise<void> = Promise.resolve();
  private specWarned = false;
  /** Share of arenaBytes each model gets. */
  private readonly modelShareBytes: number;
  private members: MembersCache | undefined;
  private links: PeerLinks | undefined;
  private readonly rep: Replication;
  private readonly hotMgr: HotManager;
  private filler: Backfiller | undefined;
  /**
   * Set when the member agent found it had been declared dead (fenced) and re-joined: writes are
   * refused until the placement table lists the new incarnation (the coordinator re-placed it).
   */
  private fencedIncarnation: string | undefined;
  private liveness: Promise<void> | undefined;

  constructor(
    opts: ShardNodeOptions,
    readonly deps: ShardNodeDeps,
  ) {
    assertNodeId(opts.nodeId);
    this.o = { ...SHARD_NODE_DEFAULTS, watchModels: true, ...opts } as Resolved;
    this.nodeId = opts.nodeId;
    this.clock = deps.clock ?? systemClock;
    this.log = deps.logger ?? createLogger('shard-node');
    this.instanceId = (deps.newId ?? defaultId)();
    const startModels = this.o.models.length + (this.o.profiles?.length ?? 0);
    this.modelShareBytes = Math.floor(this.o.arenaBytes / Math.max(1, startModels));
    this.handlers = new ShardHandlers(this);
    this.rep = new Replication(
      {
        nodeId: this.nodeId,
        replicationAckTimeoutMs: this.o.replicationAckTimeoutMs,
        requestTimeoutMs: this.o.peerRequestTimeoutMs,
      },
      {
        nc: deps.nc,
        log: this.log,
        js: (): JetStreamClient | undefined => this.buckets?.js,
        table: () => this.placement?.current(),
        incarnation: () => this.incarnation(),
      },
    );
    this.hotMgr = new HotManager(this, this.rep, {
      hotReadsPerSec: this.o.hotReadsPerSec,
      hotCopiesMax: this.o.hotCopiesMax,
      hotCopyTtlMs: this.o.hotCopyTtlMs,
      requestTimeoutMs: this.o.peerRequestTimeoutMs,
    });
    for (const op of SHARD_OPS) this.stats.set(op, new EndpointStats(op, shardSubject(this.nodeId, op)));
  }

  /** Build options from the deployment config (main.ts and local clusters). */
  static optionsFromConfig(config: KvfConfig, nodeId: string, serviceVersion?: string): ShardNodeOptions {
    return {
      nodeId,
      partition: { ...config.partition },
      arenaBytes: config.shard.arenaBytes,
      arenaKind: config.shard.arenaKind,
      prefault: config.shard.prefault,
      models: config.models.builtin,
      allocTimeoutMs: config.shard.allocTimeoutMs,
      readLeaseMs: config.shard.readLeaseMs,
      blockTtlMs: config.shard.blockTtlSeconds * 1000,
      batchBlocksMax: config.shard.batchBlocksMax,
      heartbeatIntervalMs: config.coordinator.heartbeatIntervalMs,
      replicationAckTimeoutMs: config.shard.replicationAckTimeoutMs,
      // Refuse writes before the coordinator could have declared the node dead.
      selfFenceAfterMs: Math.min(
        config.shard.selfFenceAfterMs,
        Math.floor(config.coordinator.nodeDeadAfterMs / 2),
      ),
      hotReadsPerSec: config.shard.hotReadsPerSec,
      hotCopiesMax: config.shard.hotCopiesMax,
      hotCopyTtlMs: config.shard.hotCopyTtlMs,
      peerRequestTimeoutMs: config.nats.requestTimeoutMs,
      ...(config.nats.jetstreamReplicas !== undefined
        ? { jetstreamReplicas: config.nats.jetstreamReplicas }
        : {}),
      ...(serviceVersion ? { serviceVersion } : {}),
    };
  }

  get fenced(): boolean {
    return this.fencedIncarnation !== undefined;
  }

  /** The member incarnation (the instance id before joining). */
  incarnation(): string {
    return this.agent?.incarnation ?? this.instanceId;
  }

  peers(): PeerLinks {
    if (this.links === undefined) throw new KvfError('CLOSED', `node ${this.nodeId} is not started`);
    return this.links;
  }

  replication(): Replication {
    return this.rep;
  }

  hot(): HotManager {
    return this.hotMgr;
  }

  backfiller(): Backfiller {
    if (this.filler === undefined) throw new KvfError('CLOSED', `node ${this.nodeId} is not started`);
    return this.filler;
  }

  counters(): ShardHandlers['counters'] {
    return this.handlers.counters;
  }

  /** FENCED while the node knows it was declared dead and has not been re-placed yet. */
  assertWritable(): void {
    if (this.fencedIncarnation !== undefined) {
      throw new KvfError(
        'FENCED',
        `node ${this.nodeId} was fenced and is re-joining; retry on the new placement`,
        {
          details: { nodeId: this.nodeId, incarnation: this.fencedIncarnation },
        },
      );
    }
  }

  /**
   * A node silent for longer than selfFenceAfterMs (paused, cut off) may have been declared dead:
   * before answering it heartbeats (which re-joins it if it was fenced) and refreshes placement.
   * Writes still unconfirmed afterwards: FENCED. Reads (`mode` 'read') wait for that at most
   * selfFenceAfterMs and are never refused: content-addressed blocks verified by the reader's
   * crc32c are right whichever node serves them, so a node that cannot reach JetStream (a NATS
   * server died, the meta leader is being re-elected) keeps serving reads from its current table.
   */
  async checkLiveness(mode: 'write' | 'read' = 'write'): Promise<void> {
    const agent = this.agent;
    if (agent === undefined || !agent.running || agent.silentMs() <= this.o.selfFenceAfterMs) return;
    this.liveness ??= (async () => {
      await Promise.race([agent.beatNow(), sleep(this.o.selfFenceAfterMs)]).catch(() => undefined);
      await this.placement?.refresh().catch(() => undefined);
    })().finally(() => {
      this.liveness = undefined;
    });
    if (mode === 'read') {
      await Promise.race([this.liveness, sleep(this.o.selfFenceAfterMs)]);
      return;
    }
    await this.liveness;
    if (agent.silentMs() > this.o.selfFenceAfterMs) {
      throw new KvfError('FENCED', `node ${this.nodeId} cannot confirm its membership`, {
        details: { nodeId: this.nodeId, silentMs: Math.round(agent.silentMs()) },
      });
    }
  }

  replicationStats(): ReplicationStats {
    const table = this.placement?.current();
    let primaryCells = 0;
    let replicaCells = 0;
    let inSyncCells = 0;
    for (const [c, p] of Object.entries(table?.cells ?? {})) {
      const pos = p.replicas.indexOf(this.nodeId);
      if (pos === 0) primaryCells++;
      if (pos > 0) {
        replicaCells++;
        if (this.rep.syncedWith(c, p.replicas[0] as string, p.epoch)) inSyncCells++;
      }
    }
    return {
      role: this.o.role,
      primaryCells,
      replicaCells,
      inSyncCells,
      outOfSync: [...this.rep.outOfSync]
        .slice(0, 256)
        .map(([cell, nodes]) => ({ cell, nodes: [...nodes].slice(0, 8) })),
      blocksReplicatedOut: this.rep.counters.blocksOut,
      blocksReplicatedIn: this.rep.counters.blocksIn,
      backfills: this.rep.counters.backfills,
      backfillBlocks: this.rep.counters.backfillBlocks,
      hotCopiesHeld: this.hotMgr.heldCount,
      hotBlocks: this.hotMgr.tracker.hotBlocks,
      fenced: this.fenced,
    };
  }

  get running(): boolean {
    return this.state === 'running';
  }

  /** Open arenas, serve endpoints, join the members bucket, start watching models and sweeping. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`ShardNode.start in state ${this.state}`);
    this.state = 'starting';
    try {
      this.buckets =
        this.deps.buckets ?? (await ensureBuckets(this.deps.nc, { replicas: this.o.jetstreamReplicas ?? 1 }));
      this.placement = await PlacementCache.open(this.buckets.placement, { logger: this.log });
      this.members = await MembersCache.open(this.buckets.members, this.log);
      this.links = new PeerLinks(this.deps.ucx, this.members, this.log);
      this.filler = new Backfiller(this, this.rep, this.links);
      this.placement.onChange((table) => {
        this.checkSpec(table.spec);
        this.onTable();
      });
      const first = this.placement.current();
      if (first) this.checkSpec(first.spec);
      for (const id of this.o.models) this.addModel(getBuiltinProfile(id));
      for (const p of this.o.profiles ?? []) this.addModel(p);
      this.serveEndpoints();
      this.agent = new MemberAgent(this.buckets.members, {
        heartbeatIntervalMs: this.o.heartbeatIntervalMs,
        ...(this.deps.newId ? { newIncarnation: this.deps.newId } : {}),
        logger: this.log,
        onFenced: (e) => this.onFenced(e),
        onError: (err) => this.log.error('member agent stopped', { err }),
      });
      this.lastUsedBytes = this.usedBytes();
      await this.agent.start({
        nodeId: this.nodeId,
        role: this.o.role,
        ucxAddress: Buffer.from(this.deps.ucx.address()).toString('base64'),
        capacityBytes: this.capacityBytes(),
        usedBytes: this.lastUsedBytes,
        models: this.memberModels(),
        labels: this.o.labels,
      });
      if (this.o.watchModels) await this.watchModels(this.buckets);
      this.sweepTimer = setInterval(() => this.sweep(), this.o.sweepIntervalMs);
      this.sweepTimer.unref();
      this.state = 'running';
      this.onTable();
      this.log.info('shard node running', {
        nodeId: this.nodeId,
        models: [...this.models.keys()],
        capacityBytes: this.capacityBytes(),
      });
    } catch (err) {
      await this.stop().catch(() => undefined);
      throw err;
    }
  }

  /** Stop taking requests, let in-flight ones finish (bounded), leave the cluster, free arenas. */
  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.modelWatch?.stop();
    this.micro?.stop();
    for (const s of this.subs.splice(0)) s.unsubscribe();
    const deadline = this.clock.nowMs() + this.o.drainTimeoutMs;
    while (this.inFlight > 0 && this.clock.nowMs() < deadline) await sleep(10);
    if (this.inFlight > 0) this.log.warn('stopping with requests in flight', { inFlight: this.inFlight });
    try {
      await this.agent?.stop();
    } catch (err) {
      this.log.warn('could not delete member record', { err });
    }
    this.placement?.close();
    this.members?.close();
    await this.filler?.settle();
    await this.links?.close();
    await this.modelChain;
    await Promise.race([this.removals, sleep(this.o.drainTimeoutMs)]);
    for (const m of this.models.values()) {
      try {
        m.close();
      } catch (err) {
        this.log.warn('arena close failed', { model: m.profile.id, err });
      }
    }
    this.models.clear();
    this.state = 'stopped';
    this.log.info('shard node stopped', { nodeId: this.nodeId });
  }

  /** The served model; UNKNOWN_MODEL otherwise. */
  model(id: string): ModelArena {
    const m = this.models.get(id);
    if (m === undefined) {
      throw new KvfError('UNKNOWN_MODEL', `node ${this.nodeId} does not serve model ${id}`, {
        details: { model: id, nodeId: this.nodeId },
      });
    }
    return m;
  }

  modelBySlot(slot: number): ModelArena | undefined {
    for (const m of this.models.values()) if (m.slot === slot) return m;
    return undefined;
  }

  capacityBytes(): number {
    let n = 0;
    for (const m of this.models.values()) n += m.capacityBytes();
    return n;
  }

  usedBytes(): number {
    let n = 0;
    for (const m of this.models.values()) n += m.usedBytes();
    return n;
  }

  /** Resolves once every index removal queued so far has finished (or failed: the index degrades). */
  evictionBarrier(): Promise<void> {
    return this.removals;
  }

  /** Run one sweep now (the timer does this every sweepIntervalMs). */
  sweep(): void {
    for (const m of this.models.values()) m.store.sweep();
    this.handlers.sweep();
    if (this.state === 'running') {
      this.hotMgr.sweep();
      this.filler?.reconcile();
    }
    const used = this.usedBytes();
    if (used !== this.lastUsedBytes && this.agent?.running) {
      this.lastUsedBytes = used;
      this.agent.update({ usedBytes: used }).catch((err: unknown) => {
        this.log.warn('member record update failed', { err });
      });
    }
  }

  /** Serve a model (idempotent per id). Throws when the arena cannot be opened. */
  addModel(profile: ModelProfile): ModelArena {
    const have = this.models.get(profile.id);
    if (have) return have;
    if (this.models.size >= CLUSTER_LIMITS.modelsPerNodeMax) {
      throw new KvfError('CONFIG_INVALID', `a node serves at most ${CLUSTER_LIMITS.modelsPerNodeMax} models`);
    }
    const m = ModelArena.open({
      profile,
      slot: this.models.size,
      layerGroups: this.o.partition.layerGroups,
      arenaBytes: this.modelShareBytes,
      arenaKind: this.o.arenaKind,
      openArena: this.deps.openArena ?? ((opts) => Arena.open(opts)),
      ucx: this.deps.ucx,
      log: (line) => this.log.info(line, { model: profile.id }),
      store: {
        clock: () => this.clock.nowMs(),
        blockTtlMs: this.o.blockTtlMs,
        allocTimeoutMs: this.o.allocTimeoutMs,
        readLeaseMs: this.o.readLeaseMs,
        onEvict: (blocks) => this.onEvict(profile.id, blocks),
      },
    });
    this.models.set(profile.id, m);
    this.log.info('serving model', {
      model: profile.id,
      arenaKind: m.arena.kind,
      blockBytes: m.slotBytes,
      blockCount: m.arena.blockCount,
      layerGroups: m.groupCount,
    });
    if (this.o.prefault) this.prefault(m);
    return m;
  }

  /**
   * Fault the arena's pages in on a thread-pool thread while the node already serves: the first
   * transfer into a fresh page otherwise pays a fault (tens of microseconds per 4 KiB on a VM,
   * seconds per GiB), which is what made the first multi-GiB puts into a new node slow.
   */
  private prefault(m: ModelArena): void {
    m.arena.prefault().then(
      (r) => {
        const gib = (m.arena.bytes / 1024 ** 3).toFixed(2);
        if (r.method === 'populate') {
          this.log.info('arena prefaulted', { model: m.profile.id, gib, ms: Math.round(r.ms) });
        } else if (r.method === 'unsupported') {
          this.log.warn(
            'arena not prefaulted: the kernel lacks MADV_POPULATE_WRITE (Linux >= 5.14); first writes fault pages in',
            { model: m.profile.id },
          );
        }
      },
      (err: unknown) => {
        // A closed arena (model removed, node stopping) ends the prefault; nothing is lost.
        if (!m.arena.closed) this.log.warn('arena prefault failed', { model: m.profile.id, err });
      },
    );
  }

  endpointStats(op: ShardOp): EndpointStats {
    const s = this.stats.get(op);
    if (s === undefined) throw new Error(`no stats for ${op}`);
    return s;
  }

  memberModels(): Record<string, MemberModel> {
    const out: Record<string, MemberModel> = {};
    for (const [id, m] of this.models) out[id] = m.memberModel();
    return out;
  }

  /**
   * Evicted blocks leave the index before their slot is handed to a writer: the removal is queued
   * here synchronously (BlockStore calls onEvict inside allocate/sweep) and allocate's reply,
   * which carries the slot's address, waits for the queue (evictionBarrier). A chunk loses its
   * entry when any of its layer groups goes: the entry means "all groups present".
   */
  private onEvict(model: string, blocks: EvictedBlock[]): void {
    recordEvictions(this.deps.metrics, blocks);
    // Only the primary's copy backs the index entry: a replica or a hot-copy holder evicting its
    // copy leaves the chunk readable from the primary.
    const table = this.placement?.current();
    const mine = blocks.filter(
      (b) =>
        !b.hot &&
        (b.s === undefined || table?.cells[cellId({ g: b.g, s: b.s })]?.replicas[0] === this.nodeId),
    );
    if (mine.length === 0) return;
    const hashes = [...new Set(mine.map((b) => b.hash))];
    this.log.debug('evicted', { model, blocks: blocks.length, chunks: hashes.length });
    this.removals = this.removals.then(async () => {
      const ok = await this.deps.index.remove(hashes).catch(() => false);
      if (!ok) this.log.warn('index removal failed (index degraded)', { model, chunks: hashes.length });
    });
  }

  private serveEndpoints(): void {
    const nc = this.deps.nc;
    for (const op of SHARD_OPS) {
      const stat = this.endpointStats(op);
      const schema = SHARD_REQUEST_SCHEMAS[op] as Schema<unknown>;
      const handle = this.handlers.handlerFor(op);
      // Tenant-qualified subjects too (shared/tenancy.ts): hashes scoped to the sender's tenant.
      for (const subject of [stat.subject, ...tenantSubjectsOf(this.nodeId, op)])
        this.subs.push(
          serveEndpoint(nc, {
            subject,
            schema,
            handler: async (req, msg) => {
              const t0 = process.hrtime.bigint();
              this.inFlight++;
              try {
                if (this.state !== 'running') {
                  throw new KvfError('CLOSED', `node ${this.nodeId} is ${this.state}`);
                }
                const reply = await handle(scopeForSubject(op, msg.subject, req));
                stat.recordOk();
                this.handlers.countOk(op);
                return reply;
              } finally {
                this.inFlight--;
                stat.recordTime(Number(process.hrtime.bigint() - t0));
              }
            },
            onError: (err) => {
              stat.recordError(err.code, err.message);
              this.handlers.countError(err);
            },
          }),
        );
    }
    this.micro = new MicroService(nc, {
      name: MICRO_SERVICE_NAME,
      id: this.nodeId,
      version: this.o.serviceVersion,
      description: 'kvfabric shard node: KV-cache block arenas (allocate/commit/abort/locate/release/stats)',
      metadata: { nodeId: this.nodeId, instance: this.instanceId },
      endpoints: SHARD_OPS.map((op) => this.endpointStats(op)),
      wallMs: () => this.clock.wallMs(),
    });
    this.micro.start();
  }

  /** A new placement table: fencing ends once it lists our incarnation; replicas reconcile. */
  private onTable(): void {
    const table = this.placement?.current();
    if (table === undefined || this.state !== 'running') return;
    if (this.fencedIncarnation !== undefined) {
      if (table.members[this.nodeId]?.incarnation !== this.fencedIncarnation) return;
      this.log.info('re-placed after fencing; accepting writes again', {
        incarnation: this.fencedIncarnation,
      });
      this.fencedIncarnation = undefined;
    }
    this.filler?.reconcile();
  }

  /** Declared dead while silent: forget what we believed about our cells until re-placed. */
  private onFenced(e: { previousIncarnation: string; incarnation: string; reason: string }): void {
    this.log.warn('fenced by the coordinator; re-joined as a new member', e);
    this.fencedIncarnation = e.incarnation;
    this.rep.reset();
    this.rep.event({ event: 'fenced', reason: `${e.reason}; now ${e.incarnation}` });
    this.placement?.refresh().then(
      () => this.onTable(),
      () => undefined,
    );
  }

  /**
   * Block sizes and cell ids come from this node's partition config; a table computed for another
   * spec means the deployment's configs disagree. Requests still fail safe (cells are checked
   * against the table), but the operator must hear about it.
   */
  private checkSpec(spec: PartitionSpec): void {
    const mine = this.o.partition;
    const same =
      spec.layerGroups === mine.layerGroups &&
      spec.seqBuckets === mine.seqBuckets &&
      spec.seqBucketTokens === mine.seqBucketTokens;
    if (!same && !this.specWarned) {
      this.specWarned = true;
      this.log.error('placement table partition spec differs from this node config', {
        table: spec,
        node: mine,
      });
    }
  }

  /** Serve models registered in kvf_models (existing ones first, then new ones as they come). */
  private async watchModels(b: ClusterBuckets): Promise<void> {
    const w = await b.models.watch();
    this.modelWatch = w;
    void (async () => {
      try {
        for await (const e of w) {
          if (e.operation !== 'PUT') continue;
          this.modelChain = this.modelChain.then(() => this.onModelEntry(e));
        }
      } catch (err) {
        if (this.state === 'running') this.log.error('model watch ended', { err });
      }
    })();
  }

  private async onModelEntry(e: KvEntry): Promise<void> {
    if (this.state !== 'running' && this.state !== 'starting') return;
    let profile: ModelProfile;
    try {
      profile = decodeProfile(e.value);
    } catch (err) {
      this.log.error('invalid profile in kvf_models skipped', { key: e.key, err: toKvfError(err) });
      return;
    }
    if (this.models.has(profile.id)) return;
    try {
      this.addModel(profile);
    } catch (err) {
      this.log.error('cannot serve registered model', { model: profile.id, err: toKvfError(err) });
      return;
    }
    if (this.agent?.running) {
      await this.agent
        .update({ models: this.memberModels(), capacityBytes: this.capacityBytes() })
        .catch((err: unknown) => this.log.warn('member record update failed', { err }));
    }
  }
}

function defaultId(): string {
  return randomBytes(12).toString('base64url');
}

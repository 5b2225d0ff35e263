/**
 * KvfClient: the worker SDK. One NATS connection (control plane, JetStream watches of placement
 * and members), one Redis connection (prefix index), the process's UCX worker (bulk bytes).
 * See docs/sdk.md for the API, the flows and their round-trip counts.
 */
import { connect as natsConnect, type ConnectionOptions } from '@nats-io/transport-node';
import type { KV } from '@nats-io/kv';
import { ensureBuckets } from '../cluster/buckets.js';
import { CoordinatorClient } from '../cluster/coordinator-client.js';
import { readModel } from '../cluster/models.js';
import { PlacementCache } from '../cluster/placement-cache.js';
import { KvfError, toKvfError } from '../errors.js';
import { chunkHashes } from '../hashing.js';
import { PrefixIndex } from '../index/prefix-index.js';
import { natsSecurityOptions } from '../nats-connect.js';
import { redisOptions } from '../redis-options.js';
import { setConnectionTenant } from '../tenancy.js';
import { BUILTIN_PROFILES, validateProfile, type ModelProfile } from '../profiles.js';
import type { RegisterModelReply } from '../protocol/cluster.js';
import { ACK_MODES, releaseReplySchema, type AckMode } from '../protocol/shard.js';
import { currentTable, type FlowContext } from './context.js';
import { cacheKv, getCachedKv, type CachedKv, type KvTypedArray } from './convenience.js';
import { DataPlane } from './dataplane.js';
import { DownNodes, HotCopies, SyncMemory } from './copies.js';
import { runGet, type GetResult, type LayerGroupReady, type ReadState } from './get.js';
import { bufferBytesFor, modelLayout, type KvBuffers, type ModelLayout } from './layout.js';
import { MembersCache } from './members.js';
import { watchLink } from './nats-link.js';
import { PolledPlacement, type PlacementSource } from './placement-source.js';
import { checkNamespace, compileOptions, type CompiledOptions, type ConnectOptions } from './options.js';
import { runPut, type PutResult } from './put.js';
import { callShard, LeaseReleaser } from './shard-rpc.js';
import { StatsRecorder, type ClientStats } from './stats.js';

export type Tokens = readonly number[] | Uint32Array;

export interface CallOptions {
  /** Tenant namespace. @default the client's namespace */
  namespace?: string;
  /** Model id. @default the client's model */
  model?: string;
}

export interface GetOptions extends CallOptions {
  /** Called once per layer group as soon as that group's blocks have landed and been verified. */
  onLayerGroup?: (ready: LayerGroupReady) => void;
}

export interface PutOptions extends CallOptions {
  /**
   * When a commit counts: 'primary' once the primary committed (replicas copy in the background),
   * 'all' once every in-sync replica confirmed its copy too. @default the client's putAck ('all')
   */
  ack?: AckMode;
}

export interface RegisterOptions {
  /**
   * After the coordinator accepted the profile, wait up to this long for every shard node in the
   * placement table to serve the model (a put before that is not cached). 0: do not wait.
   * @default 10000
   */
  shardsReadyWaitMs?: number;
}

export interface LookupDetailed {
  /** Cached prefix length in tokens (whole chunks only). */
  tokens: number;
  chunks: number;
  /** Hashes of every full chunk of the prompt, h[0..n-1]. */
  hashes: string[];
  /** Redis was unreachable: the answer is a miss, not the truth. */
  degraded: boolean;
  model: string;
  namespace: string;
  chunkTokens: number;
}

const REGISTER_SHARDS_WAIT_MS = 10_000;

/** How long close() waits for operations in flight and lease releases. */
const CLOSE_DRAIN_MS = 5000;

export class KvfClient {
  private closed = false;
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly profiles = new Map<string, ModelProfile>();
  private readonly layerModelsRegistered = new Set<string>();
  private readonly readState: ReadState;

  private constructor(
    private readonly ctx: FlowContext,
    private readonly models: KV,
    private readonly coordinator: CoordinatorClient,
  ) {
    this.readState = {
      hot: new HotCopies(ctx.opts.hotCopiesMax, ctx.opts.hotCopyTtlMs),
      sync: new SyncMemory(ctx.opts.notInSyncTtlMs),
      down: new DownNodes(ctx.opts.downNodeTtlMs),
      clock: ctx.opts.clock,
    };
  }

  /** Connect to NATS and Redis and load the placement table. See ConnectOptions for defaults. */
  static async connect(options: ConnectOptions = {}): Promise<KvfClient> {
    const opts = compileOptions(options);
    const cleanup: (() => Promise<unknown> | void)[] = [];
    try {
      // Auth and TLS from the config (nkey, TLS files); explicit natsUser/natsPass/natsToken win.
      const sec = options.config ? natsSecurityOptions(options.config) : {};
      const nc = await natsConnect({ ...sec, ...natsOptions(opts) });
      setConnectionTenant(nc, options.config?.tenant.id); // shard subjects of this tenant
      cleanup.push(() => nc.close());
      watchLink(nc);
      // Replicas matter only when this client creates the buckets first (production: 3).
      const buckets = await ensureBuckets(nc, { replicas: options.config?.nats.jetstreamReplicas ?? 1 });
      const placement: PlacementSource = opts.placementWatch
        ? await PlacementCache.open(buckets.placement, opts.logger ? { logger: opts.logger } : {})
        : new PolledPlacement(buckets.placement, opts.logger);
      cleanup.push(() => placement.close());
      const members = await MembersCache.open(buckets.members, opts.logger);
      cleanup.push(() => members.close());
      const index = new PrefixIndex({
        url: opts.redisUrl,
        keyPrefix: opts.keyPrefix,
        ttlSeconds: opts.indexTtlSeconds,
        commandTimeoutMs: opts.indexCommandTimeoutMs,
        ...(opts.redisPassword !== undefined ? { password: opts.redisPassword } : {}),
        ...(options.config ? { redis: redisOptions(options.config), tenant: options.config.tenant.id } : {}),
      });
      cleanup.push(() => index.close());
      await index.ready(opts.indexConnectWaitMs);
      await placement.ready(opts.placementWaitMs).catch((err: unknown) => {
        throw new KvfError('NO_PLACEMENT', `no placement table within ${opts.placementWaitMs} ms`, {
          cause: err,
        });
      });
      const releaser = new LeaseReleaser(
        (nodeId, leaseIds) =>
          callShard(nc, nodeId, 'release', { leaseIds }, releaseReplySchema, opts.requestTimeoutMs),
        opts.releaseConcurrencyMax,
        opts.releaseQueueMax,
      );
      const data = new DataPlane(opts.ucx, opts.logger);
      const stats = new StatsRecorder(opts.latencySamplesMax);
      const ctx: FlowContext = { nc, placement, members, index, data, stats, releaser, opts };
      return new KvfClient(
        ctx,
        buckets.models,
        new CoordinatorClient(nc, { requestTimeoutMs: opts.requestTimeoutMs }),
      );
    } catch (err) {
      for (const c of cleanup.reverse()) await Promise.resolve(c()).catch(() => undefined);
      throw toKvfError(err);
    }
  }

  /** The client's effective options (defaults applied). */
  get options(): Readonly<CompiledOptions> {
    return this.ctx.opts;
  }

  /** Current placement epoch (0 before any table). */
  get epoch(): number {
    return this.ctx.placement.epoch();
  }

  /**
   * Register a model profile with the coordinator. Idempotent: the same profile again answers
   * created=false. Throws INVALID_PROFILE, or PROFILE_CONFLICT for a different profile under an
   * existing id.
   */
  registerModel(profile: ModelProfile, opts: RegisterOptions = {}): Promise<RegisterModelReply> {
    return this.op(async () => {
      const p = validateProfile(profile);
      const reply = await this.coordinator.registerModel(p);
      this.profiles.set(p.id, p);
      await this.waitForShards(p.id, opts.shardsReadyWaitMs ?? REGISTER_SHARDS_WAIT_MS);
      return reply;
    });
  }

  /**
   * Wait (bounded) until every node of the placement table publishes a region for the model in
   * its member record: shard nodes open arenas for new models asynchronously, and a put before
   * that is refused (UNKNOWN_MODEL) and not cached. Returns whether they all did.
   */
  private async waitForShards(model: string, waitMs: number): Promise<boolean> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const table = this.ctx.placement.current();
      const nodes = table === undefined ? [] : Object.keys(table.members);
      const ready = nodes.every((n) => {
        const m = this.ctx.members.get(n);
        return m !== undefined && Object.hasOwn(m.models, model);
      });
      if (ready || Date.now() >= deadline) return ready;
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** A registered profile (cached; profiles never change once registered). Throws UNKNOWN_MODEL. */
  profile(model?: string): Promise<ModelProfile> {
    return this.op(() => this.resolveProfile(this.modelOf({ model })));
  }

  /** How the model's KV is cut into blocks under the current partition spec. */
  layout(model?: string): Promise<ModelLayout> {
    return this.op(() => this.resolveLayout(this.modelOf({ model })));
  }

  /** Cached prefix length of `tokens` in tokens: one Redis round trip. */
  async lookup(tokens: Tokens, opts: CallOptions = {}): Promise<number> {
    return (await this.lookupDetailed(tokens, opts)).tokens;
  }

  lookupDetailed(tokens: Tokens, opts: CallOptions = {}): Promise<LookupDetailed> {
    return this.op(async () => {
      const r = await this.lookupDetailedInner(tokens, opts);
      const s = this.ctx.stats;
      s.lookupCount++;
      s.lookupRequestedTokens += tokens.length;
      s.lookupHitTokens += r.tokens;
      if (r.degraded) s.lookupDegraded++;
      return r;
    });
  }

  /**
   * Fill `target` (per layer group, chunk-major; see allocKv) with the longest cached prefix of
   * `tokens` and return the tokens filled. Vanished or corrupt blocks shorten the hit; they never
   * fail the call. Bytes past the returned length are unspecified.
   */
  async get(tokens: Tokens, target: KvBuffers, opts: GetOptions = {}): Promise<number> {
    return (await this.getDetailed(tokens, target, opts)).tokens;
  }

  getDetailed(tokens: Tokens, target: KvBuffers, opts: GetOptions = {}): Promise<GetResult> {
    return this.op(async () => {
      const started = performance.now();
      const lookup = await this.lookupDetailedInner(tokens, opts);
      const layout = await this.resolveLayout(lookup.model);
      const r = await runGet(this.ctx, this.readState, {
        model: lookup.model,
        layout,
        hashes: lookup.hashes,
        lookup,
        target,
        ...(opts.onLayerGroup ? { onLayerGroup: opts.onLayerGroup } : {}),
      });
      const s = this.ctx.stats;
      s.getCount++;
      s.getRequestedTokens += tokens.length;
      s.getIndexedTokens += lookup.tokens;
      s.getHitTokens += r.tokens;
      s.getBytes += r.bytes;
      s.getShortenedBlocks += r.failedBlocks;
      s.checksumFailures += r.checksumFailures;
      s.failovers += r.failovers;
      s.lateBlocks += r.lateBlocks;
      if (r.degraded) s.getDegraded++;
      s.staleRetries += r.staleRetries;
      s.getLatency.record(performance.now() - started);
      return r;
    });
  }

  /**
   * Store the KV of the full chunks of `tokens` (a partial last chunk is ignored). Idempotent:
   * blocks already cached are skipped. Index entries are written only for the leading chunks
   * whose every layer group is stored.
   */
  put(tokens: Tokens, kv: KvBuffers, opts: PutOptions = {}): Promise<PutResult> {
    return this.op(async () => {
      const started = performance.now();
      const model = this.modelOf(opts);
      const namespace = this.namespaceOf(opts);
      const layout = await this.resolveLayout(model);
      const hashes = chunkHashes(tokens, { modelId: model, namespace, chunkTokens: layout.chunkTokens });
      const ack = opts.ack ?? this.ctx.opts.putAck;
      if (!ACK_MODES.includes(ack)) throw new KvfError('BAD_REQUEST', `ack must be 'primary' or 'all'`);
      const r = await runPut(this.ctx, { model, layout, hashes, kv, ack });
      const s = this.ctx.stats;
      s.putCount++;
      s.chunksStored += r.chunksStored;
      s.chunksPresent += r.chunksPresent;
      s.tokensIndexed += r.tokensIndexed;
      s.putBytes += r.bytes;
      if (r.indexDegraded) s.putIndexDegraded++;
      if (r.outOfSync.length > 0) s.putUnderReplicated++;
      s.staleRetries += r.staleRetries;
      s.putLatency.record(performance.now() - started);
      return r;
    });
  }

  /**
   * Buffers for the KV of up to `tokens` tokens (whole chunks; a partial chunk gets no room), in
   * UCX-registered host memory: a get target or a put source with zero copies on RDMA transports.
   */
  allocKv(tokens: number, opts: CallOptions = {}): Promise<KvBuffers> {
    return this.op(async () => {
      const layout = await this.resolveLayout(this.modelOf(opts));
      const chunks = Math.floor(tokens / layout.chunkTokens);
      if (!Number.isSafeInteger(chunks) || chunks < 0) {
        throw new KvfError('BAD_REQUEST', `allocKv: tokens must be a non-negative integer, got ${tokens}`);
      }
      const sizes = bufferBytesFor(layout, chunks);
      const total = sizes.reduce((a, b) => a + b, 0);
      const whole = total === 0 ? Buffer.alloc(0) : this.ctx.data.allocBuffer(total);
      let at = 0;
      const groups = sizes.map((n) => {
        const b = whole.subarray(at, at + n);
        at += n;
        return b;
      });
      return { groups };
    });
  }

  /** Single-layer convenience: cache K and V ([kvHeads, tokens, headDim]) of one layer. */
  cacheKv(
    prefix: Tokens,
    layer: number,
    k: KvTypedArray,
    v: KvTypedArray,
    opts: CallOptions = {},
  ): Promise<PutResult> {
    return cacheKv(this, prefix, layer, k, v, opts);
  }

  /** Single-layer convenience: the longest cached prefix's K and V of one layer, or null. */
  getCachedKv(prefix: Tokens, layer: number, opts: CallOptions = {}): Promise<CachedKv | null> {
    return getCachedKv(this, prefix, layer, opts);
  }

  /** Register a derived per-layer profile once per client (used by the convenience API). */
  async ensureRegistered(profile: ModelProfile): Promise<void> {
    if (this.layerModelsRegistered.has(profile.id)) return;
    await this.registerModel(profile);
    this.layerModelsRegistered.add(profile.id);
  }

  /** Counters and latency percentiles since connect. */
  stats(): ClientStats {
    return this.ctx.stats.snapshot();
  }

  /** Idempotent. Waits (bounded) for calls in flight; every later call rejects with CLOSED. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const deadline = new Promise((r) => setTimeout(r, CLOSE_DRAIN_MS).unref());
    await Promise.race([Promise.allSettled([...this.inFlight]), deadline]);
    await this.ctx.releaser.drain(CLOSE_DRAIN_MS);
    this.ctx.placement.close();
    this.ctx.members.close();
    await Promise.allSettled([this.ctx.data.close(), this.ctx.index.close()]);
    await this.ctx.nc.close().catch(() => undefined);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  // ---- internals ------------------------------------------------------------------------------

  private op<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new KvfError('CLOSED', 'kvfabric client is closed'));
    const p = fn();
    this.inFlight.add(p);
    const done = (): void => {
      this.inFlight.delete(p);
    };
    p.then(done, done);
    return p;
  }

  private modelOf(opts: CallOptions): string {
    const m = opts.model ?? this.ctx.opts.model;
    if (m === undefined)
      throw new KvfError('BAD_REQUEST', 'no model: pass {model} or connect with a default model');
    return m;
  }

  private namespaceOf(opts: CallOptions): string {
    return opts.namespace === undefined ? this.ctx.opts.namespace : checkNamespace(opts.namespace);
  }

  /** Registered profile, else a built-in one (for the convenience API's base model). */
  async resolveProfile(model: string, allowBuiltin = true): Promise<ModelProfile> {
    const cached = this.profiles.get(model);
    if (cached !== undefined) return cached;
    const p = await readModel(this.models, model).catch(() => undefined);
    const found =
      p ?? (allowBuiltin && Object.hasOwn(BUILTIN_PROFILES, model) ? BUILTIN_PROFILES[model] : undefined);
    if (found === undefined) {
      throw new KvfError('UNKNOWN_MODEL', `model ${model} is not registered`, { details: { model } });
    }
    // A built-in profile never changes (the coordinator registers built-ins unchanged), so it is
    // cached too: no models-bucket read per call, and none that waits out a NATS outage.
    if (p !== undefined || allowBuiltin) this.profiles.set(model, found);
    return found;
  }

  private async resolveLayout(model: string): Promise<ModelLayout> {
    const [profile, table] = await Promise.all([this.resolveProfile(model), currentTable(this.ctx)]);
    return modelLayout(profile, table.spec);
  }

  private async lookupDetailedInner(tokens: Tokens, opts: CallOptions): Promise<LookupDetailed> {
    const model = this.modelOf(opts);
    const namespace = this.namespaceOf(opts);
    const profile = await this.resolveProfile(model);
    const hashes = chunkHashes(tokens, { modelId: model, namespace, chunkTokens: profile.chunkTokens });
    const r = await this.ctx.index.longestPrefix(hashes);
    return {
      tokens: r.chunks * profile.chunkTokens,
      chunks: r.chunks,
      hashes,
      degraded: r.degraded,
      model,
      namespace,
      chunkTokens: profile.chunkTokens,
    };
  }
}

/**
 * Every server URL (the client also learns the cluster's others from the first one it reaches),
 * reconnect forever with jittered waits: a worker outlives any one nats-server. While it is
 * disconnected, shard requests time out (TIMEOUT) and count as failed copies, never as throws.
 */
export function natsOptions(o: CompiledOptions): ConnectionOptions {
  const c: ConnectionOptions = {
    servers: o.natsServers,
    name: 'kvfabric-sdk',
    maxReconnectAttempts: -1,
    reconnectTimeWait: o.natsReconnectWaitMs,
    reconnectJitter: o.natsReconnectJitterMs,
    reconnectJitterTLS: o.natsReconnectJitterMs,
  };
  if (o.natsUser !== undefined) c.user = o.natsUser;
  if (o.natsPass !== undefined) c.pass = o.natsPass;
  if (o.natsToken !== undefined) c.token = o.natsToken;
  return c;
}

/** Connect a worker SDK client. */
export function connect(options: ConnectOptions = {}): Promise<KvfClient> {
  return KvfClient.connect(options);
}

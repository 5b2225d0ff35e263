/**
 * Runs chaos scenarios against one shared local cluster (>= 4 shard nodes, replication factor 2,
 * 2 coordinators, a three-server NATS cluster, test hooks on): per scenario a fresh namespace,
 * a workload, the fault, measurements, a final re-read of everything acknowledged, the history
 * check; between scenarios the cluster is healed (killed actors replaced, servers restarted).
 */
import { appendFileSync } from 'node:fs';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { ensureBuckets } from '../../../shared/cluster/buckets.js';
import { PlacementCache } from '../../../shared/cluster/placement-cache.js';
import { envNameFor } from '../../../shared/config.js';
import { startLocalCluster, type LocalCluster } from '../../../shared/local-cluster.js';
import { connect, type KvfClient } from '../../../shared/sdk/mod.js';
import { Corpus } from './corpus.js';
import { acknowledgedPrompts, checkHistory, History } from './history.js';
import {
  EventLog,
  evictionCounters,
  evictionsBetween,
  placementFull,
  pollUntil,
  rfRestored,
  sleep,
} from './observe.js';
import { Rng } from './rng.js';
import { SCENARIOS } from './scenarios.js';
import type { ScenarioName, ScenarioResult } from './types.js';
import { getPrompt, Workload, type WorkloadOptions } from './workload.js';

export interface ChaosOptions {
  scenarios: readonly ScenarioName[];
  /** @default Date.now() & 0x7fffffff (printed in the report) */
  seed?: number;
  /** Long run: repeat the scenario list until this much time has passed (at least one round). */
  durationMs?: number;
  /** Shard nodes (at least 4). @default 4 */
  shards?: number;
  /**
   * Arena per shard node; big enough that nothing is evicted. Every round writes new prompts (a
   * namespace per round) and nothing deletes them, so a long run fills the arenas: 256 MiB holds
   * about 30 rounds of the default workload (64 MiB filled up in the 8th round of a 10-minute
   * run). Pages are touched as blocks land (prefault off). @default 256 MiB
   */
  arenaBytes?: number;
  /** Workload before the fault. @default 1500 */
  warmupMs?: number;
  /** Workload keeps running at least this long after the fault. @default 4000 */
  faultPhaseMs?: number;
  /** Bound on waiting for detection / failover. @default 10000 */
  failoverWaitMs?: number;
  /** Bound on waiting for the replication factor to be restored. @default 30000 */
  restoreWaitMs?: number;
  workload?: WorkloadOptions;
  /** Progress lines (stderr in the CLI). */
  log?: (line: string) => void;
  /** Every child's output line. */
  clusterLog?: (line: string) => void;
  /** Append every operation as a JSON line to this file. */
  historyFile?: string;
}

export const CHAOS_DEFAULTS = {
  shards: 4,
  arenaBytes: 256 * 1024 * 1024,
  warmupMs: 1500,
  faultPhaseMs: 4000,
  failoverWaitMs: 10_000,
  restoreWaitMs: 30_000,
  /** Short timeouts so a dead or paused node costs a failover, not a 10 s stall. */
  requestTimeoutMs: 1500,
  ucxOpTimeoutMs: 1500,
  heartbeatIntervalMs: 250,
  readLeaseMs: 1000,
  allocTimeoutMs: 2000,
  replicationFactor: 2,
  coordinators: 2,
  natsServers: 3,
  model: 'tiny-test',
} as const;

/** Prompts acknowledged before the fault is injected, and the bound on waiting for them. */
const WARM_PROMPTS_MIN = 8;
const WARMUP_EXTRA_MS_MAX = 20_000;

/** What a scenario function gets. */
export interface ChaosContext {
  readonly cluster: LocalCluster;
  readonly nc: NatsConnection;
  readonly events: EventLog;
  readonly placement: PlacementCache;
  readonly opts: Required<
    Omit<ChaosOptions, 'seed' | 'durationMs' | 'log' | 'clusterLog' | 'historyFile' | 'workload'>
  > & {
    workload: WorkloadOptions;
  };
  readonly seed: number;
  log(line: string): void;
  connectClient(namespace: string): Promise<KvfClient>;
  /** Shard node ids killed so far (never coming back under that incarnation). */
  readonly gone: Set<string>;
}

/** One scenario's state, filled in by the scenario function. */
export interface ScenarioRun {
  readonly name: ScenarioName;
  readonly client: KvfClient;
  readonly corpus: Corpus;
  readonly history: History;
  readonly workload: Workload;
  readonly rng: Rng;
  detectMs: number;
  failoverMs: number;
  restoreMs: number;
  /** Targets missed or checks failed beyond lost/corrupt (each fails the scenario). */
  failures: string[];
  /** Lost / corrupt counts from side histories (a second writer, the killed writer's prompt). */
  extraLost: number;
  extraCorruptServed: number;
  /** Operations of side histories (counted in ops and errorRate). */
  extraOps: number;
  extraFailedOps: number;
  notes: string[];
  /** Get every prompt until each returns at least its acknowledged chunks uncorrupted; the time or undefined. */
  probeServed(promptIds: readonly number[], sinceMs: number, timeoutMs: number): Promise<number | undefined>;
}

function liveShards(cluster: LocalCluster): string[] {
  return cluster.shards
    .filter((s) => s.process.exitCode === null && s.process.signalCode === null)
    .map((s) => s.nodeId);
}

async function makeContext(
  o: ChaosOptions,
  seed: number,
): Promise<{ ctx: ChaosContext; stop(): Promise<void> }> {
  const opts = {
    shards: Math.max(4, o.shards ?? CHAOS_DEFAULTS.shards),
    arenaBytes: o.arenaBytes ?? CHAOS_DEFAULTS.arenaBytes,
    warmupMs: o.warmupMs ?? CHAOS_DEFAULTS.warmupMs,
    faultPhaseMs: o.faultPhaseMs ?? CHAOS_DEFAULTS.faultPhaseMs,
    failoverWaitMs: o.failoverWaitMs ?? CHAOS_DEFAULTS.failoverWaitMs,
    restoreWaitMs: o.restoreWaitMs ?? CHAOS_DEFAULTS.restoreWaitMs,
    scenarios: o.scenarios,
    workload: o.workload ?? {},
  };
  const log = o.log ?? (() => undefined);
  const D = CHAOS_DEFAULTS;
  const cluster = await startLocalCluster({
    shards: opts.shards,
    coordinators: D.coordinators,
    natsCluster: D.natsServers,
    arenaBytes: opts.arenaBytes,
    models: [D.model],
    heartbeatIntervalMs: D.heartbeatIntervalMs,
    env: {
      [envNameFor('coordinator.replicationFactor')]: String(D.replicationFactor),
      [envNameFor('shard.readLeaseMs')]: String(D.readLeaseMs),
      [envNameFor('shard.allocTimeoutMs')]: String(D.allocTimeoutMs),
      // Prefaulting a fresh (replacement) node's arena takes a second of CPU in the middle of a
      // scenario on 2 cores, next to sub-second liveness timeouts; the harness's clusters skip it too.
      [envNameFor('shard.prefault')]: 'false',
      KVFABRIC_TEST_HOOKS: '1',
    },
    ...(o.clusterLog ? { log: o.clusterLog } : {}),
  });
  const urls = cluster.natsCluster?.urls ?? [cluster.natsUrl];
  const nc = await natsConnect({
    servers: urls,
    name: 'kvfabric-chaos-observer',
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 250,
  });
  const buckets = await ensureBuckets(nc);
  const placement = await PlacementCache.open(buckets.placement);
  const events = new EventLog(nc);
  const clients: KvfClient[] = [];
  const ctx: ChaosContext = {
    cluster,
    nc,
    events,
    placement,
    opts,
    seed,
    log,
    gone: new Set(),
    async connectClient(namespace) {
      const c = await connect({
        natsServers: urls,
        redisUrl: cluster.redisUrl,
        model: D.model,
        namespace,
        requestTimeoutMs: D.requestTimeoutMs,
        ucx: { opTimeoutMs: D.ucxOpTimeoutMs },
      });
      clients.push(c);
      return c;
    },
  };
  return {
    ctx,
    async stop() {
      await Promise.allSettled(clients.map((c) => c.close()));
      events.close();
      placement.close();
      await nc.close().catch(() => undefined);
      await cluster.stop();
    },
  };
}

/** Replace killed actors, restart stopped servers, wait until placement is full and in sync. */
async function heal(ctx: ChaosContext): Promise<void> {
  const { cluster } = ctx;
  for (const s of cluster.shards) {
    if (s.process.exitCode !== null || s.process.signalCode !== null) ctx.gone.add(s.nodeId);
    else s.kill('SIGCONT'); // a paused node that a scenario left stopped
  }
  for (let n = liveShards(cluster).length; n < ctx.opts.shards; n++) await cluster.addShard();
  for (const c of cluster.coordinators) {
    if (c.process.exitCode !== null || c.process.signalCode !== null) ctx.gone.add(c.nodeId);
  }
  const liveCoords = cluster.coordinators.filter((c) => !ctx.gone.has(c.nodeId));
  for (let n = liveCoords.length; n < CHAOS_DEFAULTS.coordinators; n++) await cluster.addCoordinator();
  const nats = cluster.natsCluster;
  if (nats) for (let i = 0; i < nats.urls.length; i++) if (!nats.server(i)) await nats.restart(i);
  if (!cluster.redisServer()) await cluster.restartRedis();
  const at = await pollUntil(
    async () =>
      placementFull(ctx.placement.current(), ctx.gone) &&
      Object.keys(ctx.placement.current()?.members ?? {}).length >= ctx.opts.shards &&
      (await rfRestored(ctx.nc, ctx.placement, ctx.gone)).restored,
    ctx.opts.restoreWaitMs,
    250,
  );
  if (at === undefined) ctx.log('heal: cluster not back to full replication within restoreWaitMs');
}

async function runScenario(
  ctx: ChaosContext,
  name: ScenarioName,
  round: number,
  historyFile?: string,
): Promise<ScenarioResult> {
  const rng = new Rng((ctx.seed ^ Math.imul(round + 1, 0x9e3779b1) ^ (name.length << 20)) >>> 0);
  const namespace = `chaos-${name}-${round}-${ctx.seed}`.slice(0, 64);
  const client = await ctx.connectClient(namespace);
  const layout = await client.layout(CHAOS_DEFAULTS.model);
  const corpus = new Corpus(layout, CHAOS_DEFAULTS.model, namespace, rng.fork());
  const history = new History();
  const workload = new Workload(client, corpus, history, rng.fork(), ctx.opts.workload);
  const run: ScenarioRun = {
    name,
    client,
    corpus,
    history,
    workload,
    rng,
    detectMs: -1,
    failoverMs: -1,
    restoreMs: -1,
    failures: [],
    notes: [],
    extraLost: 0,
    extraCorruptServed: 0,
    extraOps: 0,
    extraFailedOps: 0,
    async probeServed(promptIds, sinceMs, timeoutMs) {
      const acked = acknowledgedPrompts(history);
      const at = await pollUntil(
        async () => {
          const recs = await Promise.all(
            promptIds.map((pid) => getPrompt(client, corpus, history, corpus.prompts[pid]!, 'probe')),
          );
          return recs.every(
            (r) => r.ok && (r.hitChunks ?? 0) >= (acked.get(r.promptId) ?? 0) && (r.corruptBlocks ?? 0) === 0,
          );
        },
        timeoutMs,
        100,
      );
      return at === undefined ? undefined : Math.max(0, at - sinceMs);
    },
  };
  const evStart = await evictionCounters(ctx.nc, liveShards(ctx.cluster));
  ctx.log(`[${name}#${round}] workload warm-up ${ctx.opts.warmupMs} ms`);
  workload.start();
  await sleep(ctx.opts.warmupMs);
  // A fault before anything was acknowledged proves nothing (cold UCX endpoints, first JIT):
  // keep warming up until enough prompts are acknowledged, bounded.
  const warm = await pollUntil(
    () => acknowledgedPrompts(history).size >= WARM_PROMPTS_MIN,
    WARMUP_EXTRA_MS_MAX,
    100,
  );
  if (warm === undefined) run.notes.push(`fewer than ${WARM_PROMPTS_MIN} prompts acknowledged after warm-up`);
  const evBefore = await evictionCounters(ctx.nc, liveShards(ctx.cluster));
  try {
    await SCENARIOS[name](ctx, run);
  } catch (err) {
    run.failures.push(`fault injection failed: ${(err as Error).message}`);
  }
  await workload.stop();
  // Final re-read of every prompt any put acknowledged, after the cluster settled.
  const acked = acknowledgedPrompts(history);
  for (const pid of acked.keys()) await getPrompt(client, corpus, history, corpus.prompts[pid]!, 'final');
  const evAfter = await evictionCounters(ctx.nc, liveShards(ctx.cluster));
  const evictions = evictionsBetween(evStart, evBefore) + evictionsBetween(evBefore, evAfter);
  const main = checkHistory(history, (pid) => corpus.prompts[pid]!.hashes);
  const ops = main.ops + run.extraOps;
  const v = {
    ...main,
    ops,
    acknowledgedLost: main.acknowledgedLost + run.extraLost,
    corruptServed: main.corruptServed + run.extraCorruptServed,
    errorRate: ops === 0 ? 0 : (main.failedOps + run.extraFailedOps) / ops,
  };
  if (v.acknowledgedChunks === 0) run.failures.push('no put was acknowledged: the run proves nothing');
  if (evictions > 0)
    run.failures.push(`${evictions} evictions during the run: lost chunks are not attributable`);
  if (v.acknowledgedLost > 0) run.notes.push(`lost chunk hashes (first): ${v.lostSample.join(', ')}`);
  const errs = history.ops.filter((o) => !o.ok && o.error).map((o) => o.error as string);
  if (errs.length > 0) run.notes.push(`errors (first): ${[...new Set(errs)].slice(0, 3).join(' | ')}`);
  if (historyFile) appendFileSync(historyFile, history.toJsonLines(name));
  const passed = v.acknowledgedLost === 0 && v.corruptServed === 0 && run.failures.length === 0;
  ctx.log(
    `[${name}#${round}] ops=${v.ops} acked=${v.acknowledgedChunks} lost=${v.acknowledgedLost} corrupt=${v.corruptServed} detect=${run.detectMs} failover=${run.failoverMs} restore=${run.restoreMs} errorRate=${v.errorRate.toFixed(3)} ${passed ? 'PASS' : 'FAIL'} ${run.failures.join('; ')}`,
  );
  return {
    name,
    ops: v.ops,
    acknowledgedLost: v.acknowledgedLost,
    corruptServed: v.corruptServed,
    detectMs: run.detectMs,
    failoverMs: run.failoverMs,
    restoreMs: run.restoreMs,
    errorRate: Number(v.errorRate.toFixed(4)),
    passed,
    notes: [...run.failures, ...run.notes],
    rounds: 1,
    evictions,
  };
}

/** Fold repeated rounds of one scenario: sums, worst timings, all must pass. */
function merge(a: ScenarioResult, b: ScenarioResult): ScenarioResult {
  const worst = (x: number, y: number): number => (x < 0 || y < 0 ? -1 : Math.max(x, y));
  const ops = a.ops + b.ops;
  return {
    name: a.name,
    ops,
    acknowledgedLost: a.acknowledgedLost + b.acknowledgedLost,
    corruptServed: a.corruptServed + b.corruptServed,
    detectMs: worst(a.detectMs, b.detectMs),
    failoverMs: worst(a.failoverMs, b.failoverMs),
    restoreMs: worst(a.restoreMs, b.restoreMs),
    errorRate: ops === 0 ? 0 : Number(((a.errorRate * a.ops + b.errorRate * b.ops) / ops).toFixed(4)),
    passed: a.passed && b.passed,
    notes: [...new Set([...a.notes, ...b.notes])].slice(0, 20),
    rounds: a.rounds + b.rounds,
    evictions: a.evictions + b.evictions,
  };
}

export interface ChaosReport {
  seed: number;
  scenarios: ScenarioResult[];
}

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const seed = (o.seed ?? Date.now()) & 0x7fffffff;
  const started = Date.now();
  const { ctx, stop } = await makeContext(o, seed);
  const results = new Map<ScenarioName, ScenarioResult>();
  try {
    for (let round = 0; ; round++) {
      for (const name of o.scenarios) {
        const r = await runScenario(ctx, name, round, o.historyFile);
        const prev = results.get(name);
        results.set(name, prev ? merge(prev, r) : r);
        await heal(ctx);
      }
      if (o.durationMs === undefined || Date.now() - started >= o.durationMs) break;
    }
  } finally {
    await stop();
  }
  return { seed, scenarios: o.scenarios.map((n) => results.get(n) as ScenarioResult) };
}

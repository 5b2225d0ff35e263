/**
 * `kvfabric bench`: the whole run. Order: physical limits first (on a quiet host), then one fabric
 * cluster and a Redis server for the strategies (agent, chat, trace replay: every strategy, same
 * prompts, same blocks), then the real fabric at a few capacities on the trace, then the capacity
 * sweep simulation over the whole trace, then the compute model. Everything is assembled into one
 * report (report.ts) that names what is measured, simulated and modelled.
 */
import os from 'node:os';
import { startRedisServer, type ServerHandle } from '../../../shared/local-servers.js';
import { BUILTIN_PROFILES, type ModelProfile } from '../../../shared/profiles.js';
import { modelLayout, type ModelLayout } from '../../../shared/sdk/mod.js';
import { ProgressBar } from '../progress.js';
import { startFabric, TRACE_PROFILE, type Fabric } from './clusters.js';
import { MODEL_SHAPES, projectTtft, recomputeSeconds, type TtftProjection } from './compute-model.js';
import { FabricStrategy } from './fabric.js';
import { measureLimits, type LimitsResult } from './limits.js';
import { LocalLruStrategy } from './local-lru.js';
import type { BenchOptions } from './options.js';
import { RedisStoreStrategy } from './redis-store.js';
import { runWorkload, type RunResult } from './runner.js';
import { blockSequences, loadTrace, type TraceRequest } from './trace.js';
import {
  capacitySweep,
  simulateBelady,
  simulateInfinite,
  simulateLru,
  SWEEP_FRACTIONS,
  workingSetBlocks,
  type SweepPoint,
} from './simulate.js';
import { latencyPercentiles, ratio } from './stats.js';
import type { Strategy } from './strategy.js';
import { agentWorkload, chatWorkload, traceWorkload, type Workload } from './workloads.js';

export const STRATEGY_MODEL = 'llama-3-8b';
/** The capacity the trace targets compare at (fraction of the working set). */
export const TRACE_TARGET_FRACTION = 0.1;

export interface MeasuredCapacity {
  source: 'measured';
  fraction: number;
  capacityBlocks: number;
  arenaBytesPerNode: number;
  hitRate: number;
  /** Simulations over the same replayed requests, for comparison. */
  simLru: number;
  simBelady: number;
  infinite: number;
}

export interface BenchResults {
  workloads: RunResult[];
  limits: LimitsResult | null;
  sweep: { requests: number; workingSetBlocks: number; infinite: number; points: SweepPoint[] } | null;
  replay: { requests: number; workingSetBlocks: number; infinite: number } | null;
  measured: MeasuredCapacity[];
  noCache: { workload: string; latenciesMs: number[]; tokens: number; seconds: number } | null;
  ttft: TtftProjection[];
  headlineWorkload: string | null;
  wallMs: number;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string };
}

interface Ctx {
  o: BenchOptions;
  log: (line: string) => void;
}

function bar(ctx: Ctx, total: number, label: string): ProgressBar {
  return new ProgressBar({ total, label, stream: process.stderr });
}

async function runStrategies(
  ctx: Ctx,
  strategies: Strategy[],
  w: Workload,
  results: RunResult[],
): Promise<void> {
  for (const s of strategies) {
    const pb = bar(ctx, w.requests, `${w.name.padEnd(5)} ${s.name.padEnd(10)}`);
    const r = await runWorkload(s, w, { onRequest: (d, t) => pb.update(d, `${d}/${t}`) });
    pb.finish(
      `hit ${(r.hitRate * 100).toFixed(1)}%  ${r.gbps.toFixed(2)} GB/s  p99 ${r.latency.p99Ms.toFixed(1)} ms`,
    );
    if (r.verifyFailures > 0)
      ctx.log(`WARNING: ${s.name} served ${r.verifyFailures} wrong blocks on ${w.name}`);
    results.push(r);
    await s.clear();
  }
}

function layoutFor(profile: ModelProfile, fabric: Fabric): ModelLayout {
  return modelLayout(profile, fabric.cluster.config.partition);
}

async function strategiesFor(
  ctx: Ctx,
  layout: ModelLayout,
  fabric: Fabric,
  redis: ServerHandle,
): Promise<Strategy[]> {
  const out: Strategy[] = [new LocalLruStrategy(layout, ctx.o.lruCapacityBytes)];
  out.push(await new RedisStoreStrategy(layout, { url: redis.url, gzip: false }).connect());
  if (ctx.o.redisGzip)
    out.push(await new RedisStoreStrategy(layout, { url: redis.url, gzip: true }).connect());
  out.push(new FabricStrategy(layout, fabric.kvf));
  return out;
}

async function closeAll(strategies: Strategy[]): Promise<void> {
  for (const s of strategies) await s.close();
}

/** The real fabric on the trace at a capacity of `fraction` x the replayed working set. */
async function measureAtCapacity(
  ctx: Ctx,
  reqs: readonly TraceRequest[],
  fraction: number,
): Promise<MeasuredCapacity> {
  const seqs = blockSequences(reqs);
  const ws = workingSetBlocks(seqs);
  const capacityBlocks = Math.max(1, Math.ceil(fraction * ws));
  // Built-in tiny-test is the one start model, so the registered trace model gets a full share.
  const probe = modelLayout(TRACE_PROFILE, { layerGroups: 4 });
  const slot = Math.max(...probe.blockBytes);
  const arenaBytesPerNode = Math.ceil((capacityBlocks * probe.groups.length) / ctx.o.shards) * slot;
  // One copy per cell: the sweep measures eviction quality against a capacity that is exactly
  // `fraction` of the working set, which a second copy per block would silently halve.
  const fabric = await startFabric({
    shards: ctx.o.shards,
    arenaBytes: arenaBytesPerNode,
    replicationFactor: 1,
    models: ['tiny-test'],
    register: [TRACE_PROFILE],
    log: ctx.log,
  });
  try {
    const s = new FabricStrategy(layoutFor(TRACE_PROFILE, fabric), fabric.kvf);
    const pb = bar(ctx, reqs.length, `trace kvfabric @${Math.round(fraction * 100)}%`);
    const r = await runWorkload(s, traceWorkload(TRACE_PROFILE.id, reqs), {
      onRequest: (d, t) => pb.update(d, `${d}/${t}`),
    });
    pb.finish(`hit ${(r.blockHitRate * 100).toFixed(1)}% of blocks`);
    return {
      source: 'measured',
      fraction,
      capacityBlocks,
      arenaBytesPerNode,
      hitRate: r.blockHitRate,
      simLru: simulateLru(seqs, capacityBlocks).hitRate,
      simBelady: simulateBelady(seqs, capacityBlocks).hitRate,
      infinite: simulateInfinite(seqs).hitRate,
    };
  } finally {
    await fabric.stop();
  }
}

function noCacheModel(o: BenchOptions, w: Workload | undefined): BenchResults['noCache'] {
  if (!w) return null;
  const shape = MODEL_SHAPES[STRATEGY_MODEL];
  if (!shape) return null;
  const ct = (BUILTIN_PROFILES[STRATEGY_MODEL] as ModelProfile).chunkTokens;
  const latenciesMs: number[] = [];
  let tokens = 0;
  let seconds = 0;
  for (let k = 1; k < w.requests; k++) {
    // What a cache would have served: the full chunks of the prompt; without one they are recomputed.
    const prefix = Math.floor(w.prompt(k).length / ct) * ct;
    const s = recomputeSeconds(shape, prefix, o.gpuTflops);
    latenciesMs.push(s * 1000);
    tokens += prefix;
    seconds += s;
  }
  return { workload: w.name, latenciesMs, tokens, seconds };
}

export async function runBench(o: BenchOptions, log: (line: string) => void): Promise<BenchResults> {
  const started = performance.now();
  const ctx: Ctx = { o, log };
  const has = (p: string): boolean => (o.parts as string[]).includes(p);
  const res: BenchResults = {
    workloads: [],
    limits: null,
    sweep: null,
    replay: null,
    measured: [],
    noCache: null,
    ttft: [],
    headlineWorkload: null,
    wallMs: 0,
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memoryGiB: Math.round(os.totalmem() / 1024 ** 3),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
    },
  };
  if (has('limits')) {
    log('limits: memcpy, UCX (bench transfer runner, ucx_perftest), iperf3');
    res.limits = await measureLimits({
      blockBytes: 4 * 1024 ** 2,
      bytesPerCase: (o.quick ? 64 : 256) * 1024 ** 2,
      transport: 'sm',
      skipUcx: false,
      iperfSeconds: 2,
    });
  }
  const needTrace = has('trace') || has('sweep');
  const trace = needTrace ? loadTrace(o.tracePath) : [];
  const replayReqs = trace.slice(0, Math.min(trace.length, o.traceRequests));

  const workloads: Workload[] = [];
  const base = { model: STRATEGY_MODEL, seed: o.seed };
  if (has('agent')) {
    workloads.push(
      agentWorkload({
        ...base,
        contextTokens: o.agentContextTokens,
        requests: o.agentRequests,
        questionTokensMin: o.questionTokensMin,
        questionTokensMax: o.questionTokensMax,
      }),
    );
  }
  if (has('chat')) {
    workloads.push(
      chatWorkload({
        ...base,
        conversations: o.chatConversations,
        turns: o.chatTurns,
        turnTokens: o.chatTurnTokens,
      }),
    );
  }
  if (workloads.length > 0 || has('trace')) {
    log(`starting the fabric (${o.shards} shard nodes, ${o.arenaBytes} B arena each) and a Redis server`);
    const fabric = await startFabric({
      shards: o.shards,
      arenaBytes: o.arenaBytes,
      models: [STRATEGY_MODEL],
      register: has('trace') ? [TRACE_PROFILE] : [],
      log,
    });
    const redis = await startRedisServer();
    try {
      if (workloads.length > 0) {
        const layout = layoutFor(BUILTIN_PROFILES[STRATEGY_MODEL] as ModelProfile, fabric);
        const strategies = await strategiesFor(ctx, layout, fabric, redis);
        try {
          for (const w of workloads) await runStrategies(ctx, strategies, w, res.workloads);
        } finally {
          await closeAll(strategies);
        }
      }
      if (has('trace')) {
        const layout = layoutFor(TRACE_PROFILE, fabric);
        const strategies = await strategiesFor(ctx, layout, fabric, redis);
        try {
          await runStrategies(ctx, strategies, traceWorkload(TRACE_PROFILE.id, replayReqs), res.workloads);
        } finally {
          await closeAll(strategies);
        }
      }
    } finally {
      await fabric.stop();
      await redis.stop();
    }
  }
  if (has('trace')) {
    const seqs = blockSequences(replayReqs);
    res.replay = {
      requests: replayReqs.length,
      workingSetBlocks: workingSetBlocks(seqs),
      infinite: simulateInfinite(seqs).hitRate,
    };
    for (const f of o.measuredFractions) res.measured.push(await measureAtCapacity(ctx, replayReqs, f));
  }
  if (has('sweep')) {
    const pb = bar(ctx, SWEEP_FRACTIONS.length, 'sweep (simulated, whole trace)');
    const sw = capacitySweep(blockSequences(trace), SWEEP_FRACTIONS, (d) => pb.update(d));
    pb.finish();
    res.sweep = {
      requests: trace.length,
      workingSetBlocks: sw.workingSetBlocks,
      infinite: sw.infinite.hitRate,
      points: sw.points,
    };
  }
  const headline = workloads[0];
  res.headlineWorkload = headline?.name ?? (has('trace') ? 'trace' : null);
  res.noCache = noCacheModel(o, headline);
  if (headline) {
    const prefixTokens = o.agentContextTokens;
    for (const r of res.workloads.filter((x) => x.workload === headline.name)) {
      for (const shape of Object.values(MODEL_SHAPES)) {
        res.ttft.push(projectTtft(shape, r.strategy, prefixTokens, r.gbps * 1e9, o.gpuTflops));
      }
    }
  }
  res.wallMs = performance.now() - started;
  return res;
}

/** Re-exported for reports: percentiles of the no-cache model's recompute times. */
export function noCacheLatency(
  n: NonNullable<BenchResults['noCache']>,
): ReturnType<typeof latencyPercentiles> {
  return latencyPercentiles(n.latenciesMs);
}

export { ratio };

/**
 * Replays one workload against one strategy, as an inference worker would per request:
 *
 *   get the cached prefix into the worker's buffers (TIMED) -> check the served bytes ->
 *   "compute" the rest (synthesize its KV from the chunk hashes) -> put the prompt (timed apart)
 *
 * KV bytes are a function of (chunk hash, layer group) (demo/synth.ts fillBlock), so every strategy
 * stores and serves exactly the same blocks, and a served block can be checked.
 */
import { chunkHashes } from '../../../shared/hashing.js';
import type { KvBuffers } from '../../../shared/sdk/mod.js';
import { fillBlock } from '../demo/synth.js';
import { gbps, latencyPercentiles, type LatencyPercentiles } from './stats.js';
import { blockOf, chunkBytes, type Prompt, type Strategy } from './strategy.js';
import type { Workload } from './workloads.js';

export interface RunResult {
  strategy: string;
  workload: string;
  model: string;
  requests: number;
  promptTokens: number;
  /** Tokens in full chunks (the most any cache can serve). */
  cacheableTokens: number;
  hitTokens: number;
  /** hitTokens / promptTokens. */
  hitRate: number;
  /** Cached blocks served / cacheable blocks (the trace's hit-rate unit). */
  blockHitRate: number;
  getBytes: number;
  getMs: number;
  putMs: number;
  /** Bytes moved into the worker per second of get time, GB/s (1e9). */
  gbps: number;
  /** Tokens served from cache per second of get time. */
  tokensPerSec: number;
  /** Latency of the gets that served a prefix (hit > 0). */
  latency: LatencyPercentiles;
  /** Puts that stored less than the whole prompt (kvfabric reports it), and the last reason. */
  putShortfalls: number;
  lastPutError?: string;
  /** Served blocks that did not hold the expected bytes (must be 0). */
  verifyFailures: number;
  verifiedBlocks: number;
}

export interface RunOptions {
  onRequest?: (done: number, total: number) => void;
}

function synthesize(s: Strategy, p: Prompt, kv: KvBuffers, fromChunk: number): void {
  for (let i = fromChunk; i < p.hashes.length; i++) {
    for (let g = 0; g < s.layout.groups.length; g++)
      fillBlock(p.hashes[i] as string, g, blockOf(kv, s.layout, g, i));
  }
}

/** Checks the first and last served chunk of every group (cheap; catches misplaced or stale bytes). */
function verify(s: Strategy, p: Prompt, kv: KvBuffers, chunks: number, scratch: Map<number, Buffer>): number {
  let failures = 0;
  for (const i of chunks > 1 ? [0, chunks - 1] : chunks === 1 ? [0] : []) {
    for (let g = 0; g < s.layout.groups.length; g++) {
      const got = blockOf(kv, s.layout, g, i);
      let want = scratch.get(got.byteLength);
      if (!want) scratch.set(got.byteLength, (want = Buffer.allocUnsafe(got.byteLength)));
      fillBlock(p.hashes[i] as string, g, want);
      if (!want.equals(got)) failures++;
    }
  }
  return failures;
}

export async function runWorkload(s: Strategy, w: Workload, o: RunOptions = {}): Promise<RunResult> {
  const ct = s.layout.chunkTokens;
  const kv = await s.allocBuffers(Math.floor(w.maxTokens / ct));
  const perChunk = chunkBytes(s.layout);
  const scratch = new Map<number, Buffer>();
  const latencies: number[] = [];
  const r: RunResult = {
    strategy: s.name,
    workload: w.name,
    model: w.model,
    requests: w.requests,
    promptTokens: 0,
    cacheableTokens: 0,
    hitTokens: 0,
    hitRate: 0,
    blockHitRate: 0,
    getBytes: 0,
    getMs: 0,
    putMs: 0,
    gbps: 0,
    tokensPerSec: 0,
    latency: latencyPercentiles([]),
    verifyFailures: 0,
    verifiedBlocks: 0,
    putShortfalls: 0,
  };
  const shortfallsBefore = s.putShortfalls ?? 0;
  for (let k = 0; k < w.requests; k++) {
    const tokens = w.prompt(k);
    const p: Prompt = {
      tokens,
      hashes: chunkHashes(tokens, { modelId: w.model, namespace: w.namespace, chunkTokens: ct }),
      namespace: w.namespace,
    };
    const t0 = performance.now();
    const hit = await s.get(p, kv);
    const getMs = performance.now() - t0;
    r.getMs += getMs;
    if (hit > 0) latencies.push(getMs);
    r.verifyFailures += verify(s, p, kv, hit, scratch);
    r.verifiedBlocks += (hit > 1 ? 2 : hit) * s.layout.groups.length;
    r.promptTokens += tokens.length;
    r.cacheableTokens += p.hashes.length * ct;
    r.hitTokens += hit * ct;
    r.getBytes += hit * perChunk;
    synthesize(s, p, kv, hit);
    const t1 = performance.now();
    await s.put(p, kv, hit);
    r.putMs += performance.now() - t1;
    o.onRequest?.(k + 1, w.requests);
  }
  r.hitRate = r.promptTokens > 0 ? r.hitTokens / r.promptTokens : 0;
  r.blockHitRate = r.cacheableTokens > 0 ? r.hitTokens / r.cacheableTokens : 0;
  r.gbps = gbps(r.getBytes, r.getMs);
  r.tokensPerSec = r.getMs > 0 ? r.hitTokens / (r.getMs / 1000) : 0;
  r.latency = latencyPercentiles(latencies);
  r.putShortfalls = (s.putShortfalls ?? 0) - shortfallsBefore;
  if (r.putShortfalls > 0 && s.lastPutError) r.lastPutError = s.lastPutError;
  return r;
}

/**
 * The demo workload (the seed's example): an agent loop that resends ONE long shared context with
 * `requests` different follow-up questions. Per request, as an inference engine would:
 *
 *   lookup -> get the cached prefix into the worker's KV buffers -> "compute" the uncached tail
 *   (synthesize its KV: bytes derived from the chunk hash, see synth.ts) -> put the whole prompt
 *
 * and it checks every byte a get served against the bytes that were put for that prefix. The
 * first request computes everything; every later one should get the context from the cache and
 * compute only its question.
 */
import type { KvBuffers, KvfClient, ModelLayout } from '../../../shared/sdk/mod.js';
import type { LatencySummary } from '../../../shared/sdk/mod.js';
import { ExpectedBlocks, fillBlock, tokensFrom } from './synth.js';

export interface DemoOptions {
  /** Follow-up questions, one request each. @default 100 */
  requests?: number;
  /** Tokens of the shared context. @default 8192 */
  contextTokens?: number;
  /** Each question's length is drawn from [min, max] tokens. @default 300..500 */
  questionTokensMin?: number;
  questionTokensMax?: number;
  /** Seed of the token streams (same seed, same prompts, same hashes). @default 42 */
  seed?: number;
  /** Namespace the demo's prompts live in. @default 'demo' */
  namespace?: string;
  /** Expected-block cache for verification. @default 256 MiB */
  verifyCacheBytesMax?: number;
  /** Called after every request (progress display). */
  onRequest?: (done: number, total: number, s: DemoSummary) => void;
  /** Checked between requests: true stops the loop early (Ctrl-C). */
  shouldStop?: () => boolean;
}

export const DEMO_DEFAULTS = {
  requests: 100,
  contextTokens: 8192,
  questionTokensMin: 300,
  questionTokensMax: 500,
  seed: 42,
  namespace: 'demo',
  verifyCacheBytesMax: 256 * 1024 ** 2,
} as const;

export interface DemoSummary {
  model: string;
  namespace: string;
  requests: number;
  /** Requests run (less than `requests` when stopped early). */
  completed: number;
  promptTokens: number;
  /** Tokens served from the cache (get's hit lengths, summed). */
  cachedTokens: number;
  /** cachedTokens / promptTokens. */
  hitRate: number;
  /** Tokens the worker computed (prompt tokens not served from cache). */
  computedTokens: number;
  /** Hits shorter than what lookup had claimed (a block vanished in between). */
  shortenedHits: number;
  verifiedBlocks: number;
  verificationFailures: number;
  /** Bytes gets moved into the worker's buffers (verified by checksum and here). */
  getBytes: number;
  /** Bytes puts wrote to shard nodes (only blocks not already cached). */
  putBytes: number;
  chunksStored: number;
  getLatency: LatencySummary;
  putLatency: LatencySummary;
  wallMs: number;
  /** First verification failures (chunk, group), for the error message. */
  failures: string[];
}

interface Prompt {
  tokens: Uint32Array;
}

function buildPrompt(context: Uint32Array, seed: number, k: number, o: Required<DemoOptions>): Prompt {
  const span = o.questionTokensMax - o.questionTokensMin + 1;
  const len = o.questionTokensMin + ((k * 7919 + seed) % span);
  const tokens = new Uint32Array(context.length + len);
  tokens.set(context);
  tokens.set(tokensFrom(seed * 1000 + k + 1, len), context.length);
  return { tokens };
}

function blockView(kv: KvBuffers, layout: ModelLayout, g: number, chunk: number): Uint8Array {
  const bb = layout.blockBytes[g] as number;
  return (kv.groups[g] as Uint8Array).subarray(chunk * bb, (chunk + 1) * bb);
}

/** Check the served chunks [0, chunks) against the expected bytes; returns failures. */
function verifyServed(
  kv: KvBuffers,
  layout: ModelLayout,
  hashes: readonly string[],
  chunks: number,
  expected: ExpectedBlocks,
  s: DemoSummary,
): void {
  for (let i = 0; i < chunks; i++) {
    for (let g = 0; g < layout.groups.length; g++) {
      const got = blockView(kv, layout, g, i);
      const want = expected.get(hashes[i] as string, g, got.byteLength);
      s.verifiedBlocks++;
      if (!Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(want)) {
        s.verificationFailures++;
        if (s.failures.length < 10) s.failures.push(`chunk ${i} group ${g} (hash ${hashes[i]})`);
      }
    }
  }
}

function resolveOptions(opts: DemoOptions): Required<DemoOptions> {
  const o = { ...DEMO_DEFAULTS, onRequest: () => {}, shouldStop: () => false, ...opts };
  if (!(o.requests >= 1 && o.contextTokens >= 1 && o.questionTokensMin >= 1)) {
    throw new RangeError('demo: requests, contextTokens and questionTokensMin must be >= 1');
  }
  if (o.questionTokensMax < o.questionTokensMin) throw new RangeError('demo: questionTokensMax < min');
  return o;
}

/**
 * Run the agent loop on a connected client whose default model is registered. Never throws on a
 * verification failure: it is counted and reported (the caller decides the exit code).
 */
export async function runDemo(kvf: KvfClient, opts: DemoOptions = {}): Promise<DemoSummary> {
  const o = resolveOptions(opts);
  const started = performance.now();
  const layout = await kvf.layout();
  const ct = layout.chunkTokens;
  const context = tokensFrom(o.seed, o.contextTokens);
  const maxChunks = Math.floor((o.contextTokens + o.questionTokensMax) / ct);
  // One set of UCX-registered buffers for the whole loop: a get target and the put source.
  const kv = await kvf.allocKv(maxChunks * ct);
  const expected = new ExpectedBlocks(o.verifyCacheBytesMax);
  const s: DemoSummary = {
    model: layout.profile.id,
    namespace: o.namespace,
    requests: o.requests,
    completed: 0,
    promptTokens: 0,
    cachedTokens: 0,
    hitRate: 0,
    computedTokens: 0,
    shortenedHits: 0,
    verifiedBlocks: 0,
    verificationFailures: 0,
    getBytes: 0,
    putBytes: 0,
    chunksStored: 0,
    getLatency: kvf.stats().gets.latency,
    putLatency: kvf.stats().puts.latency,
    wallMs: 0,
    failures: [],
  };
  const before = kvf.stats();
  for (let k = 0; k < o.requests && !o.shouldStop(); k++) {
    const { tokens } = buildPrompt(context, o.seed, k, o);
    const call = { namespace: o.namespace };
    const look = await kvf.lookupDetailed(tokens, call);
    let hitChunks = 0;
    if (look.chunks > 0) {
      // Scribble first so that stale bytes from the previous request cannot pass as served.
      kv.groups.forEach((b, g) =>
        b.fill(0xa5, 0, Math.min(b.byteLength, look.chunks * (layout.blockBytes[g] as number))),
      );
      const r = await kvf.getDetailed(tokens, kv, call);
      hitChunks = r.chunks;
      if (r.chunks < look.chunks) s.shortenedHits++;
      verifyServed(kv, layout, look.hashes, r.chunks, expected, s);
    }
    // "Compute" the tail the cache did not have.
    for (let i = hitChunks; i < look.hashes.length; i++) {
      for (let g = 0; g < layout.groups.length; g++) {
        fillBlock(look.hashes[i] as string, g, blockView(kv, layout, g, i));
      }
    }
    const p = await kvf.put(tokens, kv, call);
    s.chunksStored += p.chunksStored;
    s.completed++;
    s.promptTokens += tokens.length;
    s.cachedTokens += hitChunks * ct;
    o.onRequest(s.completed, o.requests, s);
  }
  const after = kvf.stats();
  s.computedTokens = s.promptTokens - s.cachedTokens;
  s.hitRate = s.promptTokens === 0 ? 0 : s.cachedTokens / s.promptTokens;
  s.getBytes = after.gets.bytes - before.gets.bytes;
  s.putBytes = after.puts.bytes - before.puts.bytes;
  s.getLatency = after.gets.latency;
  s.putLatency = after.puts.latency;
  s.wallMs = performance.now() - started;
  return s;
}

const mib = (b: number): string =>
  b >= 1024 ** 3 ? `${(b / 1024 ** 3).toFixed(2)} GiB` : `${(b / 1024 ** 2).toFixed(1)} MiB`;
const ms = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(1)} ms` : 'n/a');

/** The closing summary as printed by `kvfabric up --demo`. */
export function formatSummary(s: DemoSummary): string {
  const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
  const lines = [
    `demo summary (model ${s.model}, namespace ${s.namespace})`,
    `  requests            ${s.completed}${s.completed < s.requests ? ` of ${s.requests} (stopped early)` : ''}`,
    `  hit rate            ${pct(s.hitRate)}  (tokens from cache / prompt tokens)`,
    `  tokens from cache   ${s.cachedTokens} of ${s.promptTokens} prompt tokens (${s.computedTokens} computed)`,
    `  bytes moved         get ${mib(s.getBytes)}, put ${mib(s.putBytes)} (${s.chunksStored} chunks stored)`,
    `  get latency         p50 ${ms(s.getLatency.p50Ms)}  p95 ${ms(s.getLatency.p95Ms)}  p99 ${ms(s.getLatency.p99Ms)}  (${s.getLatency.count} gets)`,
    `  put latency         p50 ${ms(s.putLatency.p50Ms)}  p95 ${ms(s.putLatency.p95Ms)}  p99 ${ms(s.putLatency.p99Ms)}`,
    `  verification        ${s.verifiedBlocks} blocks checked byte for byte, ${s.verificationFailures} failures${s.shortenedHits ? `, ${s.shortenedHits} shortened hits` : ''}`,
    `  wall time           ${(s.wallMs / 1000).toFixed(2)} s`,
  ];
  if (s.failures.length > 0) lines.push(`  FAILED blocks: ${s.failures.join('; ')}`);
  return lines.join('\n');
}

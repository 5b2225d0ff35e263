/** `kvfabric bench` options: flags, the --quick and full presets, and their documented defaults. */
import { KvfError } from '../../../shared/errors.js';
import { GPU_TFLOPS_DEFAULT } from './compute-model.js';

export const PARTS = ['agent', 'chat', 'trace', 'sweep', 'limits'] as const;
export type Part = (typeof PARTS)[number];

export interface BenchOptions {
  quick: boolean;
  json: boolean;
  /** Results folder. @default bench-results/<timestamp>/ */
  outDir: string;
  parts: Part[];
  /** @default ../shared/traces/mooncake_synthetic_trace.jsonl (relative to the working directory) */
  tracePath: string;
  /** Compute model's effective prefill rate (TFLOP/s). @default 400 */
  gpuTflops: number;
  /** Also run the Redis-only store with gzipped values (slow: zlib on every block). @default false */
  redisGzip: boolean;
  /** Shard nodes of the fabric. @default 3 */
  shards: number;
  /** Arena per shard node (also each later-registered model's share). @default quick 256 MiB, full 768 MiB */
  arenaBytes: number;
  /** In-process LRU capacity. @default 4 GiB (holds every workload here: it is the worker's own RAM) */
  lruCapacityBytes: number;
  agentContextTokens: number;
  agentRequests: number;
  questionTokensMin: number;
  questionTokensMax: number;
  chatConversations: number;
  chatTurns: number;
  chatTurnTokens: number;
  /** Trace requests replayed through the strategies (the sweep always simulates the whole trace). */
  traceRequests: number;
  /** Capacities (fractions of the replayed working set) at which the real fabric is measured. */
  measuredFractions: number[];
  seed: number;
}

const MiB = 1024 ** 2;

export function defaults(quick: boolean): BenchOptions {
  return {
    quick,
    json: false,
    outDir: '',
    parts: [...PARTS],
    tracePath: '../shared/traces/mooncake_synthetic_trace.jsonl',
    gpuTflops: GPU_TFLOPS_DEFAULT,
    redisGzip: false,
    shards: 3,
    arenaBytes: quick ? 256 * MiB : 768 * MiB,
    lruCapacityBytes: 4096 * MiB,
    // Full: an 8192-token Llama-3-8B context is a 1 GiB prefix (the latency target).
    agentContextTokens: quick ? 1024 : 8192,
    agentRequests: quick ? 8 : 10,
    questionTokensMin: quick ? 64 : 100,
    questionTokensMax: quick ? 200 : 300,
    chatConversations: quick ? 2 : 3,
    chatTurns: quick ? 4 : 6,
    chatTurnTokens: 256,
    traceRequests: quick ? 150 : Number.POSITIVE_INFINITY,
    measuredFractions: [1, 0.1],
    seed: 42,
  };
}

export const BENCH_USAGE = `usage: kvfabric bench [--quick] [--json] [--out DIR] [--trace FILE] [--gpu-tflops N]
       [--redis-gzip] [--trace-requests N] [--agent-context TOKENS] [--agent-requests N]
       [--arena-bytes BYTES] [--measured-fractions 1,0.1] [parts...]
       kvfabric bench transfer [...]   (UCX transfer throughput; --help for its flags)
parts: ${PARTS.join(', ')} (default: all)`;

function num(flag: string, v: string | undefined, min = 0): number {
  const n = Number(v);
  if (v === undefined || !Number.isFinite(n) || n < min) {
    throw new KvfError('BAD_REQUEST', `${flag} needs a number >= ${min}\n${BENCH_USAGE}`);
  }
  return n;
}

export function parseBenchOptions(argv: string[], now = new Date()): BenchOptions {
  const o = defaults(argv.includes('--quick'));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const next = (): string | undefined => argv[++i];
    if (a === '--quick') continue;
    else if (a === '--json') o.json = true;
    else if (a === '--out') o.outDir = next() ?? '';
    else if (a === '--trace') o.tracePath = next() ?? '';
    else if (a === '--gpu-tflops') o.gpuTflops = num(a, next(), Number.MIN_VALUE);
    else if (a === '--redis-gzip') o.redisGzip = true;
    else if (a === '--trace-requests') o.traceRequests = num(a, next(), 1);
    else if (a === '--agent-context') o.agentContextTokens = num(a, next(), 1);
    else if (a === '--agent-requests') o.agentRequests = num(a, next(), 1);
    else if (a === '--arena-bytes') o.arenaBytes = num(a, next(), 1);
    else if (a === '--measured-fractions') {
      o.measuredFractions = (next() ?? '')
        .split(',')
        .filter(Boolean)
        .map((f) => num(a, f, Number.MIN_VALUE));
    } else if (a.startsWith('-')) throw new KvfError('BAD_REQUEST', `unknown flag ${a}\n${BENCH_USAGE}`);
    else if ((PARTS as readonly string[]).includes(a)) {
      if (o.parts.length === PARTS.length && !argv.slice(0, i).some((x) => PARTS.includes(x as Part)))
        o.parts = [];
      if (!o.parts.includes(a as Part)) o.parts.push(a as Part);
    } else throw new KvfError('BAD_REQUEST', `unknown subcommand ${JSON.stringify(a)}\n${BENCH_USAGE}`);
  }
  if (!o.outDir) o.outDir = `bench-results/${now.toISOString().replace(/[:.]/g, '-')}`;
  if (!o.tracePath) throw new KvfError('BAD_REQUEST', `--trace needs a file\n${BENCH_USAGE}`);
  if (o.questionTokensMax < o.questionTokensMin) o.questionTokensMax = o.questionTokensMin;
  return o;
}

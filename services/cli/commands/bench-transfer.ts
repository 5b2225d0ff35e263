/**
 * `kvfabric bench transfer`: kvfabric UCX get/put between two processes, side by side with
 * ucx_perftest (the yardstick, run untuned with the same transport and size) and a native memcpy
 * (the physical limit on one host). Prints a table, or with --json exactly one JSON object:
 * {"results":[{"op","transport","blockBytes","inflight","gbps","arenaGbps","mmapArenaGbps",
 *   "perftestGbps","memcpyGbps","ranges"}]} (medians over --repeat; ranges: [min, max] per figure).
 * gbps are gigabytes (1e9 bytes) per second.
 *
 * Like ucx_perftest, each case reuses the same remote and local blocks (`repeat` pattern), so both
 * sides measure the transport on cache-warm memory rather than page faults. The server's memory
 * is measured as allocBuffer memory (`gbps`) and as a shard-node arena (`arenaGbps`, the product
 * path: UcxWorker.openArena), see RemoteMemory.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';

import { memcpyBench } from '../../../native/index.js';
import { KvfError } from '../../../shared/errors.js';
import { PeerProcess } from './transfer-peer.js';

/**
 * What backs the server's memory in a kvfabric case:
 * - 'alloc': UcxWorker.allocBuffer (UCX-allocated, what ucx_perftest uses too);
 * - 'arena': the product path, a host arena opened and registered as a shard node does
 *   (UcxWorker.openArena: UCX-allocated memory, sysv/posix shared segments over sm);
 * - 'mmap-arena': a plain Arena.open registered afterwards (the old shard-node path).
 */
export type RemoteMemory = 'alloc' | 'arena' | 'mmap-arena';
const REMOTE_MEMORIES: readonly RemoteMemory[] = ['alloc', 'arena', 'mmap-arena'];

export interface BenchTransferOptions {
  /** Block sizes in bytes. @default 64 KiB, 256 KiB, 1 MiB, 4 MiB, 16 MiB, 64 MiB */
  sizes: number[];
  /** 'sm' (UCX_TLS=sm,self) and/or 'tcp' (UCX_TLS=tcp, UCX_NET_DEVICES=lo). @default both */
  transports: string[];
  ops: ('get' | 'put')[];
  /** Ops per batch; 1 uses the single-op API. @default [1, 8] */
  inflight: number[];
  /**
   * The inflight ops of a case are split over this many concurrent batches, so the progress thread
   * starts the next batch while JS handles the last one's completion. @default 2
   */
  lanes: number;
  /** Bytes moved per case (at least 8 blocks). @default 512 MiB */
  bytesPerCase: number;
  /** ucx_perftest iterations cap per case. @default 1000 */
  perftestIterationsMax: number;
  perftest: boolean;
  /** Also measure the direct path (sm, arena memory). @default true */
  direct: boolean;
  /**
   * Runs per case for kvfabric, ucx_perftest and memcpy alike, interleaved case by case; rows
   * carry the median and JSON the [min, max] range (this host is shared and noisy). @default 1
   */
  repeat: number;
  /** Server memory measured per case. @default ['alloc', 'arena'] */
  remoteMemory: RemoteMemory[];
  /** Progress mode of the kvfabric peers. @default 'event' */
  progress: 'event' | 'busy';
  /** Hybrid-progress window of the kvfabric peers (UcxWorkerOptions.spinUs). @default the worker default */
  spinUs: number | undefined;
  /** Bounded synchronous wait of the kvfabric peers (UcxWorkerOptions.syncWaitUs). @default the worker default */
  syncWaitUs: number | undefined;
  json: boolean;
}

export interface BenchRow {
  op: 'get' | 'put';
  transport: string;
  blockBytes: number;
  inflight: number;
  /** kvfabric from allocBuffer memory (or the first --remote-memory when alloc is not measured). */
  gbps: number;
  /** kvfabric from a peer's arena registered as a shard node does; null when not measured. */
  arenaGbps: number | null;
  /** kvfabric from a plain registered mmap arena; null unless --remote-memory has mmap-arena. */
  mmapArenaGbps: number | null;
  /** kvfabric's direct path (Endpoint.directBatch) from the arena; sm only, null otherwise or with --no-direct. */
  directGbps: number | null;
  perftestGbps: number | null;
  memcpyGbps: number;
  /** [min, max] over --repeat runs for each figure above. */
  ranges: Record<string, [number, number]>;
}

const KiB = 1024;
const MiB = 1024 * KiB;
/** ucx_perftest's default warm-up (-w), in iterations. */
const PERFTEST_WARMUP_ITERS = 10_000;
/** Bytes a kvfabric warm-up moves at most. */
const WARMUP_BYTES_MAX = 256 * MiB;
const TRANSPORT_ENV: Record<string, Record<string, string>> = {
  sm: { UCX_TLS: 'sm,self' },
  tcp: { UCX_TLS: 'tcp', UCX_NET_DEVICES: 'lo' },
};
const PERFTEST_TEST: Record<'get' | 'put', string> = { get: 'ucp_get', put: 'ucp_put_bw' };
/** A ucx_perftest run that has not finished in this long is killed and reported as null. */
const PERFTEST_TIMEOUT_MS = 60_000;

const USAGE = `usage: kvfabric bench transfer [--sizes 64K,1M,64M] [--transports sm,tcp] [--ops get,put]
       [--inflight 1,8] [--lanes 2] [--bytes-per-case 512M] [--progress event|busy] [--spin-us N]
       [--sync-wait-us N]
       [--remote-memory alloc,arena,mmap-arena] [--perftest-iterations 1000] [--no-perftest] [--no-direct]
       [--repeat 1] [--json]`;

function parseSize(text: string): number {
  const m = /^(\d+)([KMG]?)$/i.exec(text.trim());
  if (!m) throw new KvfError('BAD_REQUEST', `bad size ${text}`);
  const unit = { '': 1, K: KiB, M: MiB, G: 1024 * MiB }[(m[2] ?? '').toUpperCase()] ?? 1;
  return Number(m[1]) * unit;
}

export function parseBenchArgs(argv: string[]): BenchTransferOptions {
  const o: BenchTransferOptions = {
    sizes: [64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB, 64 * MiB],
    transports: ['sm', 'tcp'],
    ops: ['get', 'put'],
    inflight: [1, 8],
    bytesPerCase: 512 * MiB,
    perftestIterationsMax: 1000,
    perftest: true,
    direct: true,
    repeat: 1,
    lanes: 2,
    progress: 'event',
    spinUs: undefined,
    syncWaitUs: undefined,
    remoteMemory: ['alloc', 'arena'],
    json: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new KvfError('BAD_REQUEST', `${flag} needs a value\n${USAGE}`);
      return v;
    };
    const list = (): string[] => value().split(',').filter(Boolean);
    if (flag === '--sizes') o.sizes = list().map(parseSize);
    else if (flag === '--transports') o.transports = list();
    else if (flag === '--ops') o.ops = list() as ('get' | 'put')[];
    else if (flag === '--inflight') o.inflight = list().map(Number);
    else if (flag === '--bytes-per-case') o.bytesPerCase = parseSize(value());
    else if (flag === '--perftest-iterations') o.perftestIterationsMax = Number(value());
    else if (flag === '--no-perftest') o.perftest = false;
    else if (flag === '--no-direct') o.direct = false;
    else if (flag === '--repeat') o.repeat = Number(value());
    else if (flag === '--lanes') o.lanes = Number(value());
    else if (flag === '--remote-memory') o.remoteMemory = list() as RemoteMemory[];
    else if (flag === '--progress') o.progress = value() === 'busy' ? 'busy' : 'event';
    else if (flag === '--spin-us') o.spinUs = Number(value());
    else if (flag === '--sync-wait-us') o.syncWaitUs = Number(value());
    else if (flag === '--json') o.json = true;
    else throw new KvfError('BAD_REQUEST', `unknown flag ${flag}\n${USAGE}`);
  }
  for (const t of o.transports)
    if (!TRANSPORT_ENV[t]) throw new KvfError('BAD_REQUEST', `unknown transport ${t}`);
  for (const op of o.ops)
    if (op !== 'get' && op !== 'put') throw new KvfError('BAD_REQUEST', `unknown op ${op}`);
  for (const m of o.remoteMemory)
    if (!REMOTE_MEMORIES.includes(m)) throw new KvfError('BAD_REQUEST', `unknown remote memory ${m}`);
  if (o.remoteMemory.length === 0) throw new KvfError('BAD_REQUEST', '--remote-memory is empty');
  for (const n of [...o.sizes, ...o.inflight, o.bytesPerCase, o.repeat, o.lanes]) {
    if (!Number.isSafeInteger(n) || n <= 0) throw new KvfError('BAD_REQUEST', `bad number ${n}`);
  }
  if (o.spinUs !== undefined && (!Number.isSafeInteger(o.spinUs) || o.spinUs < 0)) {
    throw new KvfError('BAD_REQUEST', `bad --spin-us ${o.spinUs}`);
  }
  if (o.syncWaitUs !== undefined && (!Number.isSafeInteger(o.syncWaitUs) || o.syncWaitUs < 0)) {
    throw new KvfError('BAD_REQUEST', `bad --sync-wait-us ${o.syncWaitUs}`);
  }
  return o;
}

/** Two kvfabric peer processes on one transport: the server holds one region per remote memory. */
interface KvfPair {
  server: PeerProcess;
  client: PeerProcess;
  ep: unknown;
  local: unknown;
  remotes: Map<RemoteMemory, { rkey: unknown; address: unknown; length: unknown }>;
}

async function openPair(o: BenchTransferOptions, transport: string): Promise<KvfPair> {
  const env: Record<string, string> = {
    ...(TRANSPORT_ENV[transport] as Record<string, string>),
    KVF_PEER_PROGRESS: o.progress,
    ...(o.spinUs !== undefined ? { KVF_PEER_SPIN_US: String(o.spinUs) } : {}),
    ...(o.syncWaitUs !== undefined ? { KVF_PEER_SYNC_WAIT_US: String(o.syncWaitUs) } : {}),
  };
  const pair: KvfPair = {
    server: PeerProcess.spawn(env),
    client: PeerProcess.spawn(env),
    ep: 0,
    local: 0,
    remotes: new Map(),
  };
  try {
    const regionBytes = Math.max(...o.sizes); // every op of a case reuses block 0
    const hello = await pair.server.request('hello');
    pair.local = (await pair.client.request('alloc', { bytes: regionBytes, fill: true })).region;
    pair.ep = (await pair.client.request('connect', { address: hello.address })).ep;
    for (const mode of o.remoteMemory) {
      const remote = await pair.server.request('alloc', { bytes: regionBytes, fill: true, mode });
      const { rkey } = await pair.client.request('unpack', { ep: pair.ep, rkey: remote.rkey });
      pair.remotes.set(mode, { rkey, address: remote.address, length: remote.length });
    }
  } catch (err) {
    await closePair(pair);
    throw err;
  }
  return pair;
}

async function closePair(pair: KvfPair): Promise<void> {
  await Promise.all([pair.server.stop(), pair.client.stop()]);
}

/** One timed kvfabric case (after a warm-up that maps pages and finishes wireup), in GB/s. */
async function kvfGbps(
  o: BenchTransferOptions,
  pair: KvfPair,
  mode: RemoteMemory,
  op: 'get' | 'put',
  blockBytes: number,
  inflight: number,
  direct = false,
): Promise<number> {
  const remote = pair.remotes.get(mode);
  if (!remote) throw new KvfError('INTERNAL', `no ${mode} region`);
  const args = {
    ep: pair.ep,
    op,
    rkey: remote.rkey,
    remoteAddress: remote.address,
    remoteLength: remote.length,
    local: pair.local,
    blockBytes,
    ...splitInflight(inflight, o.lanes),
    pattern: 'repeat',
    direct,
  };
  // Warm-up: UCX finishes endpoint wire-up (lanes, peer segments mapped) during the first ops,
  // and JIT settles; ucx_perftest warms up for 10000 iterations by default. Ours: the same count,
  // capped at WARMUP_BYTES_MAX, at least two batches.
  const warmOps = Math.max(
    2 * inflight,
    Math.min(PERFTEST_WARMUP_ITERS, Math.ceil(WARMUP_BYTES_MAX / blockBytes)),
  );
  await pair.client.request('run', { ...args, totalBytes: blockBytes * warmOps });
  const totalBytes = Math.max(o.bytesPerCase, blockBytes * Math.max(8, inflight));
  const r = await pair.client.request('run', { ...args, totalBytes });
  return Number(r.bytes) / Number(r.seconds) / 1e9;
}

/** `inflight` ops as `window` batches of `inflight / window` (a single op stays one op). */
function splitInflight(inflight: number, lanes: number): { inflight: number; window: number } {
  const window = Math.max(1, Math.min(lanes, Math.floor(inflight / 2)));
  return { inflight: Math.ceil(inflight / window), window };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function runProcess(
  args: string[],
  env: Record<string, string>,
): { done: Promise<string>; kill: () => void } {
  const child = spawn('ucx_perftest', args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr.on('data', (d: Buffer) => (text += d.toString()));
  const done = new Promise<string>((resolve) => {
    child.once('exit', () => resolve(text));
    child.once('error', (err) => resolve(`${text}\n${err.message}`));
  });
  return { done, kill: () => child.kill('SIGKILL') };
}

/** ucx_perftest's overall bandwidth for one case in GB/s (its "MB/s" are MiB/s), null if it failed. */
async function perftestGbps(
  o: BenchTransferOptions,
  transport: string,
  op: 'get' | 'put',
  blockBytes: number,
): Promise<number | null> {
  const env = TRANSPORT_ENV[transport] as Record<string, string>;
  const iterations = Math.max(8, Math.min(o.perftestIterationsMax, Math.floor(o.bytesPerCase / blockBytes)));
  const port = await freePort();
  const common = [
    '-t',
    PERFTEST_TEST[op],
    '-s',
    String(blockBytes),
    '-n',
    String(iterations),
    '-p',
    String(port),
  ];
  const server = runProcess(common, env);
  await new Promise((r) => setTimeout(r, 700)); // the server must listen before the client dials
  const client = runProcess(['127.0.0.1', ...common], env);
  const timer = setTimeout(() => {
    client.kill();
    server.kill();
  }, PERFTEST_TIMEOUT_MS);
  const [text] = await Promise.all([client.done, server.done]);
  clearTimeout(timer);
  // Final: iters  lat50 latavg latoverall  bw_avg bw_overall  rate_avg rate_overall
  const m = /Final:\s+\d+\s+\S+\s+\S+\s+\S+\s+\S+\s+([\d.]+)/.exec(text); // columns may read 'inf'
  return m ? (Number(m[1]) * MiB) / 1e9 : null;
}

/** Samples of one figure over the --repeat runs. */
class Samples {
  readonly values: number[] = [];
  add(x: number | null): void {
    if (x !== null && Number.isFinite(x)) this.values.push(x);
  }
  median(): number | null {
    const v = [...this.values].sort((a, b) => a - b);
    if (v.length === 0) return null;
    const mid = Math.floor(v.length / 2);
    return v.length % 2 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
  }
  range(): [number, number] | null {
    return this.values.length ? [round(Math.min(...this.values)), round(Math.max(...this.values))] : null;
  }
}

export async function runBenchTransfer(o: BenchTransferOptions): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const memcpy = new Map<number, Samples>();
  for (const size of o.sizes) {
    const iterations = Math.max(4, Math.min(1000, Math.floor(o.bytesPerCase / size)));
    const samples = new Samples();
    for (let i = 0; i < o.repeat; i++) samples.add(memcpyBench(size, iterations).gbps);
    memcpy.set(size, samples);
  }
  for (const transport of o.transports) {
    const pair = await openPair(o, transport);
    try {
      for (const blockBytes of o.sizes) {
        for (const op of o.ops) {
          // Repeats interleave kvfabric and ucx_perftest, so load spikes hit both columns.
          const kvf = new Map<string, Samples>();
          const pt = new Samples();
          for (let i = 0; i < o.repeat; i++) {
            for (const inflight of o.inflight) {
              for (const mode of o.remoteMemory) {
                const key = `${mode}/${inflight}`;
                if (!kvf.has(key)) kvf.set(key, new Samples());
                kvf.get(key)?.add(await kvfGbps(o, pair, mode, op, blockBytes, inflight));
              }
              // The SDK's path to a same-host node: the arena moved by directBatch (sm only).
              if (o.direct && transport === 'sm' && pair.remotes.has('arena')) {
                const key = `direct/${inflight}`;
                if (!kvf.has(key)) kvf.set(key, new Samples());
                kvf.get(key)?.add(await kvfGbps(o, pair, 'arena', op, blockBytes, inflight, true));
              }
            }
            if (o.perftest) pt.add(await perftestGbps(o, transport, op, blockBytes));
          }
          for (const inflight of o.inflight) {
            const fig = (mode: RemoteMemory | 'direct'): Samples | undefined =>
              kvf.get(`${mode}/${inflight}`);
            const main = fig('alloc') ?? fig(o.remoteMemory[0] as RemoteMemory);
            const mc = memcpy.get(blockBytes) as Samples;
            const ranges: Record<string, [number, number]> = {};
            const figures: [string, Samples | undefined][] = [
              ['gbps', main],
              ['arenaGbps', fig('arena')],
              ['mmapArenaGbps', fig('mmap-arena')],
              ['directGbps', fig('direct')],
              ['perftestGbps', pt],
              ['memcpyGbps', mc],
            ];
            for (const [name, f] of figures) {
              const r = f?.range();
              if (r) ranges[name] = r;
            }
            const med = (f: Samples | undefined): number | null => {
              const m = f?.median();
              return m === null || m === undefined ? null : round(m);
            };
            rows.push({
              op,
              transport,
              blockBytes,
              inflight,
              gbps: med(main) ?? 0,
              arenaGbps: med(fig('arena')),
              mmapArenaGbps: med(fig('mmap-arena')),
              directGbps: med(fig('direct')),
              perftestGbps: med(pt),
              memcpyGbps: med(mc) ?? 0,
              ranges,
            });
          }
        }
      }
    } finally {
      await closePair(pair);
    }
  }
  return rows;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

function formatTable(rows: BenchRow[]): string {
  const hasArena = rows.some((r) => r.arenaGbps !== null);
  const hasMmap = rows.some((r) => r.mmapArenaGbps !== null);
  const hasDirect = rows.some((r) => r.directGbps !== null);
  const pct = (a: number | null, b: number | null): string =>
    a !== null && b ? `${Math.round((a / b) * 100)}%` : '-';
  const num = (x: number | null): string => (x === null ? '-' : x.toFixed(2));
  const size = (n: number): string => (n >= MiB ? `${n / MiB}M` : `${n / KiB}K`);
  // The product path (arena) is the one the targets are about; alloc is UCX's own buffers.
  const cols: [string, (r: BenchRow) => string][] = [
    ['op', (r) => r.op],
    ['transport', (r) => r.transport],
    ['block', (r) => size(r.blockBytes)],
    ['inflight', (r) => String(r.inflight)],
    ['alloc GB/s', (r) => num(r.gbps)],
    ...(hasArena ? ([['arena GB/s', (r) => num(r.arenaGbps)]] as [string, (r: BenchRow) => string][]) : []),
    ...(hasMmap ? ([['mmap GB/s', (r) => num(r.mmapArenaGbps)]] as [string, (r: BenchRow) => string][]) : []),
    ...(hasDirect
      ? ([['direct GB/s', (r) => num(r.directGbps)]] as [string, (r: BenchRow) => string][])
      : []),
    ['perftest GB/s', (r) => num(r.perftestGbps)],
    ['memcpy GB/s', (r) => num(r.memcpyGbps)],
    ['alloc %pt', (r) => pct(r.gbps, r.perftestGbps)],
    ...(hasArena
      ? ([
          ['arena %pt', (r) => pct(r.arenaGbps, r.perftestGbps)],
          ['arena %memcpy', (r) => pct(r.arenaGbps, r.memcpyGbps)],
        ] as [string, (r: BenchRow) => string][])
      : []),
    ['alloc %memcpy', (r) => pct(r.gbps, r.memcpyGbps)],
    ...(hasDirect
      ? ([
          ['direct %pt', (r) => pct(r.directGbps, r.perftestGbps)],
          ['direct %memcpy', (r) => pct(r.directGbps, r.memcpyGbps)],
        ] as [string, (r: BenchRow) => string][])
      : []),
  ];
  const head = cols.map(([h]) => h);
  const body = rows.map((r) => cols.map(([, f]) => f(r)));
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i] ?? 0)).join('  ');
  return [line(head), ...body.map(line)].join('\n');
}

/** CLI entry: `kvfabric bench transfer ...`; returns the exit code. */
export async function benchTransfer(argv: string[]): Promise<number> {
  let o: BenchTransferOptions;
  try {
    o = parseBenchArgs(argv);
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
  const rows = await runBenchTransfer(o);
  if (o.json) process.stdout.write(`${JSON.stringify({ results: rows })}\n`);
  else process.stdout.write(`${formatTable(rows)}\n`);
  return 0;
}

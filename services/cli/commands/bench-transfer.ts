/**
 * `kvfabric bench transfer`: kvfabric UCX get/put between two processes, side by side with
 * ucx_perftest (the yardstick, run untuned with the same transport and size) and a native memcpy
 * (the physical limit on one host). Prints a table, or with --json exactly one JSON object:
 * {"results":[{"op","transport","blockBytes","inflight","gbps","perftestGbps","memcpyGbps"}]}.
 * gbps are gigabytes (1e9 bytes) per second.
 *
 * Like ucx_perftest, each case reuses the same remote and local blocks (`repeat` pattern), so both
 * sides measure the transport on cache-warm memory rather than page faults.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';

import { memcpyBench } from '../../../native/index.js';
import { KvfError } from '../../../shared/errors.js';
import { PeerProcess } from './transfer-peer.js';

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
  /** Runs per case for kvfabric and for ucx_perftest alike; the best is kept (noisy shared hosts). @default 1 */
  repeat: number;
  /**
   * What backs the server's memory: 'alloc' (UcxWorker.allocBuffer: UCX-allocated, shared memory
   * that sm transports can reach directly) or 'arena' (a registered host Arena). @default 'alloc'
   */
  remoteMemory: 'alloc' | 'arena';
  /** Progress mode of the kvfabric peers. @default 'event' */
  progress: 'event' | 'busy';
  json: boolean;
}

export interface BenchRow {
  op: 'get' | 'put';
  transport: string;
  blockBytes: number;
  inflight: number;
  gbps: number;
  perftestGbps: number | null;
  memcpyGbps: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const TRANSPORT_ENV: Record<string, Record<string, string>> = {
  sm: { UCX_TLS: 'sm,self' },
  tcp: { UCX_TLS: 'tcp', UCX_NET_DEVICES: 'lo' },
};
const PERFTEST_TEST: Record<'get' | 'put', string> = { get: 'ucp_get', put: 'ucp_put_bw' };
/** A ucx_perftest run that has not finished in this long is killed and reported as null. */
const PERFTEST_TIMEOUT_MS = 60_000;

const USAGE = `usage: kvfabric bench transfer [--sizes 64K,1M,64M] [--transports sm,tcp] [--ops get,put]
       [--inflight 1,8] [--lanes 2] [--bytes-per-case 512M] [--progress event|busy]
       [--remote-memory alloc|arena] [--perftest-iterations 1000] [--no-perftest] [--repeat 1] [--json]`;

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
    repeat: 1,
    lanes: 2,
    progress: 'event',
    remoteMemory: 'alloc',
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
    else if (flag === '--repeat') o.repeat = Number(value());
    else if (flag === '--lanes') o.lanes = Number(value());
    else if (flag === '--remote-memory') o.remoteMemory = value() === 'arena' ? 'arena' : 'alloc';
    else if (flag === '--progress') o.progress = value() === 'busy' ? 'busy' : 'event';
    else if (flag === '--json') o.json = true;
    else throw new KvfError('BAD_REQUEST', `unknown flag ${flag}\n${USAGE}`);
  }
  for (const t of o.transports)
    if (!TRANSPORT_ENV[t]) throw new KvfError('BAD_REQUEST', `unknown transport ${t}`);
  for (const op of o.ops)
    if (op !== 'get' && op !== 'put') throw new KvfError('BAD_REQUEST', `unknown op ${op}`);
  for (const n of [...o.sizes, ...o.inflight, o.bytesPerCase, o.repeat, o.lanes]) {
    if (!Number.isSafeInteger(n) || n <= 0) throw new KvfError('BAD_REQUEST', `bad number ${n}`);
  }
  return o;
}

/** kvfabric get/put for every size x op x inflight on one transport, between two peer processes. */
async function benchKvfabric(o: BenchTransferOptions, transport: string): Promise<Map<string, number>> {
  const env = { ...(TRANSPORT_ENV[transport] as Record<string, string>), KVF_PEER_PROGRESS: o.progress };
  const server = PeerProcess.spawn(env);
  const client = PeerProcess.spawn(env);
  const out = new Map<string, number>();
  try {
    const regionBytes = Math.max(...o.sizes); // every op of a case reuses block 0
    const hello = await server.request('hello');
    const remote = await server.request('alloc', { bytes: regionBytes, fill: true, mode: o.remoteMemory });
    const local = await client.request('alloc', { bytes: regionBytes, fill: true });
    const { ep } = await client.request('connect', { address: hello.address });
    const { rkey } = await client.request('unpack', { ep, rkey: remote.rkey });
    for (const blockBytes of o.sizes) {
      for (const op of o.ops) {
        for (const inflight of o.inflight) {
          const args = {
            ep,
            op,
            rkey,
            remoteAddress: remote.address,
            remoteLength: remote.length,
            local: local.region,
            blockBytes,
            ...splitInflight(inflight, o.lanes),
            pattern: 'repeat',
          };
          // Warm-up: maps pages and lets UCX finish wireup before the clock runs.
          await client.request('run', { ...args, totalBytes: blockBytes * inflight });
          const totalBytes = Math.max(o.bytesPerCase, blockBytes * Math.max(8, inflight));
          let best = 0;
          for (let i = 0; i < o.repeat; i++) {
            const r = await client.request('run', { ...args, totalBytes });
            best = Math.max(best, Number(r.bytes) / Number(r.seconds) / 1e9);
          }
          out.set(`${op}/${blockBytes}/${inflight}`, best);
        }
      }
    }
  } finally {
    await Promise.all([server.stop(), client.stop()]);
  }
  return out;
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

export async function runBenchTransfer(o: BenchTransferOptions): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const memcpy = new Map<number, number>();
  for (const size of o.sizes) {
    const iterations = Math.max(4, Math.min(1000, Math.floor(o.bytesPerCase / size)));
    let best = 0;
    for (let i = 0; i < o.repeat; i++) best = Math.max(best, memcpyBench(size, iterations).gbps);
    memcpy.set(size, best);
  }
  for (const transport of o.transports) {
    const kvf = await benchKvfabric(o, transport);
    for (const blockBytes of o.sizes) {
      for (const op of o.ops) {
        let pt: number | null = null;
        for (let i = 0; o.perftest && i < o.repeat; i++) {
          const g = await perftestGbps(o, transport, op, blockBytes);
          if (g !== null) pt = Math.max(pt ?? 0, g);
        }
        for (const inflight of o.inflight) {
          rows.push({
            op,
            transport,
            blockBytes,
            inflight,
            gbps: round(kvf.get(`${op}/${blockBytes}/${inflight}`) ?? 0),
            perftestGbps: pt === null ? null : round(pt),
            memcpyGbps: round(memcpy.get(blockBytes) ?? 0),
          });
        }
      }
    }
  }
  return rows;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

function formatTable(rows: BenchRow[]): string {
  const head = [
    'op',
    'transport',
    'block',
    'inflight',
    'kvfabric GB/s',
    'perftest GB/s',
    '% perftest',
    'memcpy GB/s',
    '% memcpy',
  ];
  const pct = (a: number, b: number | null): string => (b ? `${Math.round((a / b) * 100)}%` : '-');
  const size = (n: number): string => (n >= MiB ? `${n / MiB}M` : `${n / KiB}K`);
  const body = rows.map((r) => [
    r.op,
    r.transport,
    size(r.blockBytes),
    String(r.inflight),
    r.gbps.toFixed(2),
    r.perftestGbps === null ? '-' : r.perftestGbps.toFixed(2),
    pct(r.gbps, r.perftestGbps),
    r.memcpyGbps.toFixed(2),
    pct(r.gbps, r.memcpyGbps),
  ]);
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

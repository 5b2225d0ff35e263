/**
 * A UCX transfer peer: one process, one UcxWorker, driven by JSON lines on stdin with one JSON
 * reply line per command on stdout. `kvfabric bench transfer` and the native UCX integration tests
 * start two of these (a server that owns memory, a client that moves it) so that transfers cross a
 * real process boundary. Byte strings travel as base64, 64-bit addresses as decimal strings.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { createInterface } from 'node:readline';

import { KvfError, toKvfError, type ErrorCodeName } from '../../../shared/errors.js';
import {
  Arena,
  crc32c,
  UcxWorker,
  type Endpoint,
  type MemRegion,
  type RemoteKey,
  type TransferOp,
} from '../../../native/index.js';

export interface PeerRequest {
  id: number;
  cmd: string;
  [k: string]: unknown;
}

interface PeerRegion {
  /** The bytes as one or more zero-copy views (an arena: one view per block). */
  views: Uint8Array[];
  region: MemRegion;
  arena?: Arena;
}

/** Options of the `run` command: move totalBytes in blocks, `inflight` ops per batch. */
interface RunArgs {
  ep: number;
  op: 'get' | 'put';
  rkey: number;
  remoteAddress: string;
  remoteLength: number;
  local: number;
  blockBytes: number;
  inflight: number;
  totalBytes: number;
  /** 'stream': walk the whole remote range; 'repeat': every op uses block 0 on both sides (like ucx_perftest). */
  pattern?: 'stream' | 'repeat';
  /** Batches kept in flight at once. @default 1 */
  window?: number;
  /** Stop at the first failed op instead of throwing (chaos tests). */
  stopOnError?: boolean;
  /** Move bytes with Endpoint.directBatch (memcpy through UCX's mapping of the peer's memory). */
  direct?: boolean;
}

interface RunResult {
  seconds: number;
  bytes: number;
  ops: number;
  okOps: number;
  errors: string[];
  settledAtMs: number;
}

class Peer {
  readonly worker: UcxWorker;
  readonly regions = new Map<number, PeerRegion>();
  readonly eps = new Map<number, Endpoint>();
  readonly rkeys = new Map<number, RemoteKey>();
  next = 1;

  constructor() {
    const opTimeoutMs = Number(process.env.KVF_PEER_OP_TIMEOUT_MS ?? 10_000);
    const progress = process.env.KVF_PEER_PROGRESS === 'busy' ? 'busy' : 'event';
    const spin = process.env.KVF_PEER_SPIN_US;
    const syncWait = process.env.KVF_PEER_SYNC_WAIT_US;
    this.worker = UcxWorker.create({
      opTimeoutMs,
      progress,
      ...(spin !== undefined && spin !== '' ? { spinUs: Number(spin) } : {}),
      ...(syncWait !== undefined && syncWait !== '' ? { syncWaitUs: Number(syncWait) } : {}),
    });
  }

  region(id: unknown): PeerRegion {
    const r = this.regions.get(Number(id));
    if (!r) throw new KvfError('BAD_REQUEST', `no region ${String(id)}`);
    return r;
  }

  alloc(bytes: number, mode: string, fill: boolean): Record<string, unknown> {
    let entry: PeerRegion;
    let backing = 'buffer';
    if (mode === 'arena' || mode === 'mmap-arena') {
      const blockBytes = Math.min(bytes, 1 << 20);
      const opts = { kind: 'host' as const, blockBytes, blockCount: Math.ceil(bytes / blockBytes) };
      let arena: Arena;
      let region: MemRegion;
      if (mode === 'arena') {
        // The product path: what a shard node serves (UcxWorker.openArena, UCX-allocated memory).
        ({ arena, region, backing } = this.worker.openArena(opts));
      } else {
        // A plain mmap arena registered afterwards (UCX 1.13 shm serves it by AM emulation).
        arena = Arena.open(opts);
        region = this.worker.registerArena(arena);
        backing = 'mmap';
      }
      const views = Array.from({ length: arena.blockCount }, (_, i) => arena.hostView(i) as Buffer);
      entry = { views, region, arena };
    } else if (mode === 'buffer') {
      const buffer = Buffer.allocUnsafeSlow(bytes);
      entry = { views: [buffer], region: this.worker.registerBuffer(buffer) };
    } else {
      const { buffer, region } = this.worker.allocBuffer(bytes);
      entry = { views: [buffer], region };
      backing = 'alloc';
    }
    for (const v of entry.views) {
      if (fill) fillRandom(v);
      else v.fill(0);
    }
    const id = this.next++;
    this.regions.set(id, entry);
    return {
      region: id,
      address: entry.region.address.toString(),
      length: entry.region.length,
      rkey: entry.region.packRkey().toString('base64'),
      backing,
    };
  }

  async run(a: RunArgs): Promise<RunResult> {
    const ep = this.eps.get(a.ep);
    const rkey = this.rkeys.get(a.rkey);
    if (!ep || !rkey) throw new KvfError('BAD_REQUEST', 'unknown endpoint or rkey');
    const local = this.region(a.local).views[0] as Uint8Array;
    const base = BigInt(a.remoteAddress);
    const blocksRemote = Math.floor(a.remoteLength / a.blockBytes);
    const blocksLocal = Math.floor(local.length / a.blockBytes);
    const span = a.pattern === 'repeat' ? 1 : blocksRemote;
    const totalOps = Math.ceil(a.totalBytes / a.blockBytes);
    const res: RunResult = { seconds: 0, bytes: 0, ops: 0, okOps: 0, errors: [], settledAtMs: 0 };
    let issued = 0;
    let stop = false;
    const start = process.hrtime.bigint();
    const lane = async (): Promise<void> => {
      while (!stop && issued < totalOps) {
        const n = Math.min(a.inflight, totalOps - issued);
        const ops: TransferOp[] = [];
        for (let i = 0; i < n; i++, issued++) {
          const blk = issued % span;
          ops.push({
            remoteAddress: base + BigInt(blk * a.blockBytes),
            rkey,
            local,
            localOffset: (issued % Math.min(span, blocksLocal)) * a.blockBytes,
            length: a.blockBytes,
          });
        }
        const results = a.direct
          ? await this.transferDirect(ep, a.op, ops)
          : await this.transfer(ep, a.op, ops);
        res.ops += results.length;
        for (const r of results) {
          if (r === undefined) res.okOps++;
          else res.errors.push(r);
        }
        if (res.errors.length > 0) {
          if (!a.stopOnError) throw new KvfError('TRANSPORT', `transfer failed: ${res.errors.join(', ')}`);
          stop = true;
        }
      }
    };
    await Promise.all(Array.from({ length: a.window ?? 1 }, () => lane()));
    res.seconds = Number(process.hrtime.bigint() - start) / 1e9;
    res.bytes = res.okOps * a.blockBytes;
    res.settledAtMs = Date.now();
    return res;
  }

  /** The direct path (same-host shared memory only). Returns error codes (undefined = ok). */
  async transferDirect(ep: Endpoint, op: 'get' | 'put', ops: TransferOp[]): Promise<(string | undefined)[]> {
    const { results } = await ep.directBatch(op, ops);
    return results.map((r) => (r.ok ? undefined : (r.error?.codeName ?? 'INTERNAL')));
  }

  /** One op: the single-op API (get/put); several: the batch API. Returns error codes (undefined = ok). */
  async transfer(ep: Endpoint, op: 'get' | 'put', ops: TransferOp[]): Promise<(string | undefined)[]> {
    if (ops.length === 1) {
      try {
        await (op === 'get' ? ep.get(ops[0] as TransferOp) : ep.put(ops[0] as TransferOp));
        return [undefined];
      } catch (err) {
        return [toKvfError(err).codeName];
      }
    }
    const results = await (op === 'get' ? ep.getBatch(ops) : ep.putBatch(ops));
    return results.map((r) => (r.ok ? undefined : (r.error?.codeName ?? 'INTERNAL')));
  }
}

/** Random bytes, 64 KiB at a time (randomFillSync refuses more than 2^31 - 1 per call). */
function fillRandom(buf: Uint8Array): void {
  const chunk = 1 << 16;
  const seed = new Uint8Array(chunk);
  randomFillSync(seed);
  for (let off = 0; off < buf.length; off += chunk) {
    // A fresh random prefix per chunk keeps every chunk distinct without paying for 1 GiB of CSPRNG.
    randomFillSync(seed, 0, 16);
    buf.set(seed.subarray(0, Math.min(chunk, buf.length - off)), off);
  }
}

async function handle(peer: Peer, req: PeerRequest): Promise<Record<string, unknown>> {
  switch (req.cmd) {
    case 'hello':
      return {
        address: peer.worker.address().toString('base64'),
        pid: process.pid,
        info: peer.worker.info(),
      };
    case 'alloc':
      return peer.alloc(Number(req.bytes), String(req.mode ?? 'alloc'), req.fill === true);
    case 'fill':
      for (const v of peer.region(req.region).views) fillRandom(v);
      return {};
    case 'crc': {
      // CRC-32C of the whole region, views chained in order.
      let crc = 0;
      for (const v of peer.region(req.region).views) crc = crc32c(v, crc);
      return { crc };
    }
    case 'connect': {
      const id = peer.next++;
      const opts = req.timeoutMs === undefined ? {} : { timeoutMs: Number(req.timeoutMs) };
      peer.eps.set(id, peer.worker.connect(Buffer.from(String(req.address), 'base64'), opts));
      return { ep: id };
    }
    case 'unpack': {
      const ep = peer.eps.get(Number(req.ep));
      if (!ep) throw new KvfError('BAD_REQUEST', 'unknown endpoint');
      const id = peer.next++;
      peer.rkeys.set(id, ep.unpackRkey(Buffer.from(String(req.rkey), 'base64')));
      return { rkey: id };
    }
    case 'run':
      return { ...(await peer.run(req as unknown as RunArgs)) };
    case 'closeEp':
      await peer.eps.get(Number(req.ep))?.close();
      return {};
    case 'exit':
      await peer.worker.close();
      setImmediate(() => process.exit(0));
      return {};
    default:
      throw new KvfError('BAD_REQUEST', `unknown command ${req.cmd}`);
  }
}

/** Serve commands from stdin until `exit` or EOF. */
export async function runTransferPeer(): Promise<void> {
  const peer = new Peer();
  const rl = createInterface({ input: process.stdin });
  const reply = (obj: Record<string, unknown>): void => {
    process.stdout.write(`${JSON.stringify(obj)}\n`);
  };
  for await (const line of rl) {
    if (line.trim() === '') continue;
    const req = JSON.parse(line) as PeerRequest;
    // Commands run concurrently: a long `run` must not block `crc` or `exit`.
    handle(peer, req).then(
      (out) => reply({ id: req.id, ok: true, ...out }),
      (err: unknown) => {
        const e = toKvfError(err);
        reply({ id: req.id, ok: false, code: e.codeName, message: e.message });
      },
    );
  }
  await peer.worker.close();
}

/** The driving side: a spawned peer process and a promise per command. */
export class PeerProcess {
  readonly child: ChildProcess;
  readonly stderr: string[] = [];
  #next = 1;
  #waiting = new Map<
    number,
    { resolve: (v: Record<string, unknown>) => void; reject: (e: unknown) => void }
  >();
  #exited: Promise<number | null>;

  private constructor(child: ChildProcess) {
    this.child = child;
    createInterface({ input: child.stdout! }).on('line', (line) => this.#onLine(line));
    createInterface({ input: child.stderr! }).on('line', (line) => this.stderr.push(line));
    this.#exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    void this.#exited.then(() => {
      for (const w of this.#waiting.values()) {
        w.reject(
          new KvfError('PEER_UNREACHABLE', `peer ${child.pid} exited: ${this.stderr.slice(-5).join(' | ')}`),
        );
      }
      this.#waiting.clear();
    });
  }

  /**
   * Start a peer with extra environment (UCX_TLS, ...). `script` is a file that calls
   * runTransferPeer(); by default this module itself is imported.
   */
  static spawn(env: Record<string, string>, script?: string): PeerProcess {
    const args = script
      ? [script]
      : [
          '--input-type=module',
          '-e',
          `import(${JSON.stringify(import.meta.url)}).then((m) => m.runTransferPeer())`,
        ];
    const child = spawn(process.execPath, args, {
      env: { ...process.env, UCX_MEM_MMAP_HOOK_MODE: 'none', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    return new PeerProcess(child);
  }

  /** Send a command; rejects with the peer's KvfError when it replies ok: false. */
  request(cmd: string, args: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.child.stdin!.write(`${JSON.stringify({ id, cmd, ...args })}\n`);
    });
  }

  exited(): Promise<number | null> {
    return this.#exited;
  }

  /** Ask the peer to exit; kill it if it does not within graceMs. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.request('exit').catch(() => undefined);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.#exited;
    clearTimeout(timer);
  }

  #onLine(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.stderr.push(`stdout: ${line}`);
      return;
    }
    const w = this.#waiting.get(Number(msg.id));
    if (!w) return;
    this.#waiting.delete(Number(msg.id));
    if (msg.ok === true) w.resolve(msg);
    else w.reject(new KvfError((msg.code as ErrorCodeName | undefined) ?? 'INTERNAL', String(msg.message)));
  }
}

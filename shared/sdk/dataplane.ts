/**
 * The SDK's side of the data plane: one UCX worker per process (shared by every client in it,
 * reference-counted), one endpoint per shard node (re-created when the node's worker address
 * changes, i.e. it restarted), and each node's per-model rkeys unpacked once per endpoint.
 *
 * Only bulk KV bytes travel here; control messages stay on NATS. Local buffers need no prior
 * registration: the native layer hands UCX a pointer and UCX registers it (with its registration
 * cache) when the transport needs it; buffers from `allocBuffer` are pre-registered.
 */
import {
  UcxWorker,
  type Endpoint,
  type MemRegion,
  type OpResult,
  type RemoteKey,
  type TransferOp,
  type UcxWorkerOptions,
} from '../../native/index.js';
import { KvfError, toKvfError } from '../errors.js';
import { transferWindows } from '../transfer-windows.js';
import type { Logger } from '../log.js';
import type { MemberRecord } from '../protocol/cluster.js';

export interface UcxClientOptions {
  /** UCX transports (UCX_TLS syntax), e.g. 'tcp' or 'rc,cuda_copy'. @default UCX's own choice */
  transports?: string;
  /** Per-batch deadline inside the native layer. @default 10000 (config ucx.opTimeoutMs) */
  opTimeoutMs?: number;
  /** UcxWorkerOptions.syncWaitUs of the shared worker. @default 200 (config ucx.syncWaitUs) */
  syncWaitUs?: number;
  /**
   * Use this worker instead of the process's shared one (the native layer allows one open worker
   * per process, so a process that also hosts a shard node passes that node's worker). The SDK
   * never closes a worker it was given.
   */
  worker?: UcxWorker;
  /**
   * Bytes one batch keeps in flight to one node. Every op's deadline (opTimeoutMs) starts when it
   * is submitted, so a batch of a whole 1 GiB prefix submitted at once would time out its tail on
   * a slow transport; windows of this size keep each op's wait bounded while still overlapping
   * many transfers. @default 64 MiB
   */
  windowBytes?: number;
  /** Ops one batch keeps in flight to one node. @default 64 */
  windowOps?: number;
  /**
   * Move bytes to and from a same-host node through its memory as UCX maps it (ucp_rkey_ptr over
   * shared-memory transports) with memcpy on libuv's thread pool, several threads per batch,
   * instead of ucp_get/ucp_put on the single progress thread; nodes whose memory UCX cannot map
   * (tcp, RDMA, device memory) always use ucp_get/ucp_put. @default true, unless the
   * environment sets KVFABRIC_UCX_DIRECT=false (config ucx.direct)
   */
  direct?: boolean;
}

export { transferWindows };

/**
 * Where the direct path beats ucp_get/ucp_put on the progress thread (`kvfabric bench transfer`,
 * docs/benchmarks.md): several ops of 2 MiB or more, which the thread pool copies in parallel
 * (1.3x to 2.6x). A single op, or ops of 1 MiB, go faster through UCX (no thread-pool handoff).
 */
export const DIRECT_MIN_OP_BYTES = 2 * 1024 * 1024;
export function directPays(window: readonly { length: number }[]): boolean {
  if (window.length < 2) return false;
  const bytes = window.reduce((a, t) => a + t.length, 0);
  return bytes / window.length >= DIRECT_MIN_OP_BYTES;
}

/**
 * Called as each window of a batch completes: ops first .. first + results.length - 1, with the
 * CRC-32C of each op's local bytes when the transfer computed them (direct gets).
 */
export type WindowDone = (first: number, results: readonly OpResult[], checksums?: readonly number[]) => void;

interface SharedWorker {
  worker: UcxWorker;
  refs: number;
}

let shared: SharedWorker | undefined;

/**
 * The process's UCX worker, created on first use. Options of later callers are ignored (one
 * worker serves the process; the first client's transports win).
 */
function acquireWorker(opts: UcxClientOptions): UcxWorker {
  if (opts.worker !== undefined) return opts.worker;
  if (shared === undefined) {
    const wopts: UcxWorkerOptions = {};
    if (opts.transports !== undefined) wopts.transports = opts.transports;
    if (opts.opTimeoutMs !== undefined) wopts.opTimeoutMs = opts.opTimeoutMs;
    if (opts.syncWaitUs !== undefined) wopts.syncWaitUs = opts.syncWaitUs;
    shared = { worker: UcxWorker.create(wopts), refs: 0 };
  }
  shared.refs++;
  return shared.worker;
}

async function releaseWorker(worker: UcxWorker): Promise<void> {
  if (shared === undefined || shared.worker !== worker) return;
  shared.refs--;
  if (shared.refs > 0) return;
  shared = undefined;
  await worker.close();
}

const regions = new FinalizationRegistry<MemRegion>((region) => {
  try {
    region.deregister();
  } catch {
    // already deregistered (worker closed): nothing to free
  }
});

interface Peer {
  nodeId: string;
  ucxAddress: string;
  endpoint: Endpoint;
  /** `${model}\u0000${rkey base64}` -> unpacked rkey. */
  rkeys: Map<string, RemoteKey>;
}

/** One block transfer between a local buffer range and a remote address. */
export interface BlockTransfer {
  remoteAddress: bigint;
  local: Uint8Array;
  localOffset: number;
  length: number;
}

export class DataPlane {
  private worker: UcxWorker | undefined;
  private readonly peers = new Map<string, Peer>();
  private closed = false;

  constructor(
    private readonly opts: UcxClientOptions,
    private readonly logger?: Logger,
  ) {}

  /**
   * Host memory registered with UCX once, for zero-copy transfers on RDMA transports. The region
   * is deregistered when the memory's last view is garbage collected.
   */
  allocBuffer(bytes: number): Buffer {
    const { buffer, region } = this.ucx().allocBuffer(bytes);
    regions.register(buffer.buffer, region);
    return buffer;
  }

  /**
   * Per-op outcomes; a failure of the whole batch (peer gone) rejects with a KvfError.
   * `onWindow(first, results)` is called as each window of transfers completes (ops first ..
   * first + results.length - 1), so a caller can verify those bytes while later windows move.
   */
  get(
    member: MemberRecord,
    model: string,
    transfers: readonly BlockTransfer[],
    onWindow?: WindowDone,
  ): Promise<OpResult[]> {
    return this.run('get', member, model, transfers, onWindow);
  }

  put(member: MemberRecord, model: string, transfers: readonly BlockTransfer[]): Promise<OpResult[]> {
    return this.run('put', member, model, transfers);
  }

  /** Forget a node's endpoint (after it failed), so the next transfer reconnects. */
  dropPeer(nodeId: string): void {
    const p = this.peers.get(nodeId);
    if (p === undefined) return;
    this.peers.delete(nodeId);
    p.endpoint.close().catch((err: unknown) => this.logger?.debug('endpoint close failed', { nodeId, err }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const peers = [...this.peers.values()];
    this.peers.clear();
    await Promise.allSettled(peers.map((p) => p.endpoint.close()));
    if (this.worker !== undefined && this.worker !== this.opts.worker) await releaseWorker(this.worker);
    this.worker = undefined;
  }

  private directOn(): boolean {
    // Embedded clients read the deployment's switch (config ucx.direct) from the environment.
    const env = process.env['KVFABRIC_UCX_DIRECT']?.trim().toLowerCase();
    return this.opts.direct ?? !(env === 'false' || env === '0');
  }

  private ucx(): UcxWorker {
    if (this.closed) throw new KvfError('CLOSED', 'data plane is closed');
    this.worker ??= acquireWorker(this.opts);
    return this.worker;
  }

  private async run(
    kind: 'get' | 'put',
    member: MemberRecord,
    model: string,
    transfers: readonly BlockTransfer[],
    onWindow?: WindowDone,
  ): Promise<OpResult[]> {
    if (transfers.length === 0) return [];
    const { peer, rkey } = this.peerFor(member, model);
    const ops: TransferOp[] = transfers.map((t) => ({
      remoteAddress: t.remoteAddress,
      rkey,
      local: t.local,
      localOffset: t.localOffset,
      length: t.length,
    }));
    try {
      const results: OpResult[] = [];
      const windows = transferWindows(
        ops,
        this.opts.windowBytes ?? 64 * 1024 * 1024,
        this.opts.windowOps ?? 64,
      );
      const mapped = this.directOn() && peer.endpoint.mapped(rkey);
      for (const w of windows) {
        const first = results.length;
        if (mapped && directPays(w)) {
          // Gets come back with each block's CRC, computed right after its copy (cache-hot).
          const d = await peer.endpoint.directBatch(kind, w, kind === 'get' && onWindow !== undefined);
          results.push(...d.results);
          onWindow?.(first, d.results, d.checksums);
        } else {
          const got = kind === 'get' ? await peer.endpoint.getBatch(w) : await peer.endpoint.putBatch(w);
          results.push(...got);
          onWindow?.(first, got);
        }
        if (results.some((r) => !r.ok && r.error?.codeName === 'PEER_UNREACHABLE')) break;
      }
      // A dead peer ends the batch: the ops never submitted fail with the same error.
      const dead = results.find((r) => !r.ok && r.error?.codeName === 'PEER_UNREACHABLE');
      if (dead !== undefined) {
        this.dropPeer(peer.nodeId);
        while (results.length < ops.length) results.push({ ok: false, error: dead.error });
      }
      return results;
    } catch (err) {
      this.dropPeer(peer.nodeId);
      throw toKvfError(err);
    }
  }

  private peerFor(member: MemberRecord, model: string): { peer: Peer; rkey: RemoteKey } {
    const region = Object.hasOwn(member.models, model) ? member.models[model] : undefined;
    if (region === undefined) {
      throw new KvfError('UNKNOWN_MODEL', `node ${member.nodeId} publishes no region for model ${model}`, {
        details: { nodeId: member.nodeId, model },
      });
    }
    let peer = this.peers.get(member.nodeId);
    if (peer !== undefined && (peer.ucxAddress !== member.ucxAddress || peer.endpoint.dead)) {
      this.dropPeer(member.nodeId);
      peer = undefined;
    }
    if (peer === undefined) {
      const endpoint = this.ucx().connect(Buffer.from(member.ucxAddress, 'base64'));
      peer = { nodeId: member.nodeId, ucxAddress: member.ucxAddress, endpoint, rkeys: new Map() };
      this.peers.set(member.nodeId, peer);
    }
    const key = `${model}\u0000${region.rkey}`;
    let rkey = peer.rkeys.get(key);
    if (rkey === undefined) {
      rkey = peer.endpoint.unpackRkey(Buffer.from(region.rkey, 'base64'));
      peer.rkeys.set(key, rkey);
    }
    return { peer, rkey };
  }
}

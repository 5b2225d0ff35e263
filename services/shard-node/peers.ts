/**
 * UCX links from a shard node to its peers, for replication: one endpoint per peer incarnation
 * (a peer that restarted has a new worker address and new rkeys, so nothing of the old one is
 * reused), and each peer's per-model rkey unpacked once per endpoint. A transfer that reports
 * PEER_UNREACHABLE (or a dead endpoint) drops the link; the next transfer reconnects.
 */
import type { Endpoint, OpResult, RemoteKey, TransferOp } from '../../native/index.js';
import type { MembersCache } from '../../shared/cluster/members-cache.js';
import { KvfError, toKvfError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import type { MemberRecord } from '../../shared/protocol/cluster.js';
import { transferWindows } from '../../shared/transfer-windows.js';

/** What replication needs of the node's UCX worker (native UcxWorker satisfies it). */
export interface UcxConnector {
  connect(peerAddress: Uint8Array, opts?: { timeoutMs?: number }): Endpoint;
}

interface Link {
  incarnation: string;
  ucxAddress: string;
  endpoint: Endpoint;
  rkeys: Map<string, RemoteKey>;
}

export interface PeerTransfer {
  remoteAddress: bigint;
  local: Uint8Array;
  localOffset: number;
  length: number;
}

export class PeerLinks {
  private readonly links = new Map<string, Link>();
  private closed = false;

  constructor(
    private readonly worker: UcxConnector,
    private readonly members: MembersCache,
    private readonly log: Logger,
  ) {}

  /**
   * The peer's member record at exactly `incarnation` (a direct get when the cache holds another
   * one). PEER_UNREACHABLE when the peer is gone or restarted: its addresses are not trusted.
   */
  async member(nodeId: string, incarnation: string): Promise<MemberRecord> {
    let rec = await this.members.resolve(nodeId);
    if (rec?.incarnation !== incarnation) rec = await this.members.fetch(nodeId);
    if (rec?.incarnation !== incarnation) {
      throw new KvfError('PEER_UNREACHABLE', `peer ${nodeId} incarnation ${incarnation} is not a member`, {
        details: { nodeId, incarnation, current: rec?.incarnation },
      });
    }
    return rec;
  }

  /** One-sided reads from the peer's arena for `model`; per-op results, rejects on a whole-batch failure. */
  async get(member: MemberRecord, model: string, transfers: readonly PeerTransfer[]): Promise<OpResult[]> {
    if (transfers.length === 0) return [];
    const { link, rkey } = this.linkFor(member, model);
    const ops: TransferOp[] = transfers.map((t) => ({ ...t, rkey }));
    try {
      // Windows bound each op's wait: its deadline starts at submission (see transferWindows).
      const results: OpResult[] = [];
      for (const w of transferWindows(ops, 64 * 1024 * 1024, 64)) {
        results.push(...(await link.endpoint.getBatch(w)));
        if (results.some((r) => !r.ok && r.error?.codeName === 'PEER_UNREACHABLE')) break;
      }
      const dead = results.find((r) => !r.ok && r.error?.codeName === 'PEER_UNREACHABLE');
      if (dead !== undefined) {
        this.drop(member.nodeId);
        while (results.length < ops.length) results.push({ ok: false, error: dead.error });
      }
      return results;
    } catch (err) {
      this.drop(member.nodeId);
      throw toKvfError(err);
    }
  }

  drop(nodeId: string): void {
    const l = this.links.get(nodeId);
    if (l === undefined) return;
    this.links.delete(nodeId);
    l.endpoint.close().catch((err: unknown) => this.log.debug('endpoint close failed', { nodeId, err }));
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.links.values()];
    this.links.clear();
    await Promise.allSettled(all.map((l) => l.endpoint.close()));
  }

  private linkFor(member: MemberRecord, model: string): { link: Link; rkey: RemoteKey } {
    if (this.closed) throw new KvfError('CLOSED', 'peer links are closed');
    const region = Object.hasOwn(member.models, model) ? member.models[model] : undefined;
    if (region === undefined) {
      throw new KvfError('UNKNOWN_MODEL', `peer ${member.nodeId} publishes no region for ${model}`, {
        details: { nodeId: member.nodeId, model },
      });
    }
    let link = this.links.get(member.nodeId);
    if (
      link !== undefined &&
      (link.incarnation !== member.incarnation || link.ucxAddress !== member.ucxAddress || link.endpoint.dead)
    ) {
      this.drop(member.nodeId);
      link = undefined;
    }
    if (link === undefined) {
      link = {
        incarnation: member.incarnation,
        ucxAddress: member.ucxAddress,
        endpoint: this.worker.connect(Buffer.from(member.ucxAddress, 'base64')),
        rkeys: new Map(),
      };
      this.links.set(member.nodeId, link);
    }
    const key = `${model}\u0000${region.rkey}`;
    let rkey = link.rkeys.get(key);
    if (rkey === undefined) {
      rkey = link.endpoint.unpackRkey(Buffer.from(region.rkey, 'base64'));
      link.rkeys.set(key, rkey);
    }
    return { link, rkey };
  }
}

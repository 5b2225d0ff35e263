/**
 * MembersCache: every member record of kvf_members in memory, kept fresh by a JetStream KV watch,
 * so that mapping a node id to its UCX worker address and per-model rkeys costs no round trip.
 * A node the watch has not delivered yet (it joined a moment ago) is fetched with one direct get.
 * Records that fail validation are logged and skipped, never trusted.
 */
import type { KV, KvEntry } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/transport-node';
import type { Logger } from '../log.js';
import { decodeMemberRecord, NODE_ID_PATTERN, type MemberRecord } from '../protocol/cluster.js';

export class MembersCache {
  private readonly records = new Map<string, { record: MemberRecord; revision: number }>();
  private watcher: QueuedIterator<KvEntry> | undefined;
  private closed = false;

  private constructor(
    private readonly kv: KV,
    private readonly logger: Logger | undefined,
  ) {}

  static async open(kv: KV, logger?: Logger): Promise<MembersCache> {
    const cache = new MembersCache(kv, logger);
    const w = await kv.watch({ key: '>' });
    cache.watcher = w;
    void (async () => {
      try {
        for await (const e of w) cache.offer(e);
      } catch (err) {
        if (!cache.closed) logger?.error('members watch ended', { err });
      }
    })();
    return cache;
  }

  /** The cached record of a node, if any. */
  get(nodeId: string): MemberRecord | undefined {
    return this.records.get(nodeId)?.record;
  }

  /** The cached record, else one direct get (a node that just joined); undefined when absent. */
  async resolve(nodeId: string): Promise<MemberRecord | undefined> {
    const cached = this.get(nodeId);
    if (cached !== undefined || this.closed || !NODE_ID_PATTERN.test(nodeId)) return cached;
    try {
      const e = await this.kv.get(nodeId);
      if (e !== null) this.offer(e);
    } catch (err) {
      this.logger?.warn('member lookup failed', { nodeId, err });
    }
    return this.get(nodeId);
  }

  /** A direct get, bypassing the cache (a peer restarted and the watch has not delivered it yet). */
  async fetch(nodeId: string): Promise<MemberRecord | undefined> {
    if (this.closed || !NODE_ID_PATTERN.test(nodeId)) return this.get(nodeId);
    try {
      const e = await this.kv.get(nodeId);
      if (e !== null) this.offer(e);
    } catch (err) {
      this.logger?.warn('member lookup failed', { nodeId, err });
    }
    return this.get(nodeId);
  }

  /** Node ids currently known. */
  nodeIds(): string[] {
    return [...this.records.keys()].sort();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.stop();
  }

  private offer(e: KvEntry): void {
    if (this.closed) return;
    const held = this.records.get(e.key);
    if (held !== undefined && e.revision <= held.revision) return;
    if (e.operation !== 'PUT') {
      this.records.delete(e.key);
      return;
    }
    try {
      const record = decodeMemberRecord(e.value);
      if (record.nodeId !== e.key) throw new Error(`record for ${record.nodeId} stored under ${e.key}`);
      this.records.set(e.key, { record, revision: e.revision });
    } catch (err) {
      this.logger?.warn('invalid member record skipped', { key: e.key, revision: e.revision, err });
    }
  }
}

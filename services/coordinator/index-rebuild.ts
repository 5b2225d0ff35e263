/**
 * Rebuilding the Redis prefix index from the shards (docs/replication.md "Index rebuild").
 *
 * Redis is a rebuildable hint, never the truth. The leader checks every indexCheckIntervalMs for
 * a sentinel key; when Redis answers and the sentinel is missing (Redis restarted empty, or a
 * brand-new deployment), it lists every primary's committed blocks (`list_cell`, paginated, per
 * model), and publishes one entry per chunk whose every layer group is present on its cells'
 * primaries, then writes the sentinel. A node that cannot be listed leaves the sentinel unset, so
 * the next check tries again (publishing is idempotent). Entries written meanwhile by workers'
 * puts stay: the rebuild only adds.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import type { ClusterBuckets } from '../../shared/cluster/buckets.js';
import { publishEvent } from '../../shared/cluster/events.js';
import { listModels } from '../../shared/cluster/models.js';
import { toKvfError } from '../../shared/errors.js';
import type { ChunkMeta } from '../../shared/index/prefix-index.js';
import type { Logger } from '../../shared/log.js';
import { request } from '../../shared/protocol/codec.js';
import {
  decodeMemberRecord,
  decodePlacementTable,
  EVENT_SUBJECTS,
  PLACEMENT_KEY,
  shardSubject,
  type PlacementTable,
} from '../../shared/protocol/cluster.js';
import { listCellReplySchema } from '../../shared/protocol/shard.js';

/** What the rebuild needs of the index (PrefixIndex satisfies it). */
export interface RebuildIndex {
  sentinel(): Promise<'present' | 'missing' | 'unreachable'>;
  setSentinel(value: string): Promise<boolean>;
  publish(entries: readonly { hash: string; meta: ChunkMeta }[]): Promise<boolean>;
}

export interface IndexRebuilderOptions {
  id: string;
  checkIntervalMs: number;
  /** Bound of one list_cell request. @default 10000 */
  requestTimeoutMs?: number;
  logger?: Logger;
}

export interface RebuildResult {
  chunks: number;
  blocks: number;
  complete: boolean;
  ms: number;
}

export class IndexRebuilder {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;
  rebuilds = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly buckets: ClusterBuckets,
    private readonly index: RebuildIndex,
    private readonly o: IndexRebuilderOptions,
  ) {}

  start(): void {
    const tick = (): void => {
      if (this.stopped) return;
      this.running = this.check()
        .catch((err: unknown) => this.o.logger?.warn('index check failed', { err }))
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(tick, this.o.checkIntervalMs);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  /** One check: rebuild when Redis answers without the sentinel. */
  async check(): Promise<RebuildResult | undefined> {
    if ((await this.index.sentinel()) !== 'missing') return undefined;
    const table = await this.table();
    if (table === undefined) return undefined;
    const r = await this.rebuild(table);
    if (r.complete) {
      await this.index.setSentinel(JSON.stringify({ by: this.o.id, at: Date.now(), epoch: table.epoch }));
    }
    this.rebuilds++;
    this.o.logger?.info('index rebuilt from the shards', { ...r });
    publishEvent(this.buckets.js, {
      subject: EVENT_SUBJECTS.replication,
      body: {
        event: 'index_rebuilt',
        nodeId: this.o.id,
        epoch: table.epoch,
        blocks: r.blocks,
        ms: r.ms,
        reason: `${r.chunks} chunks${r.complete ? '' : ' (incomplete: some nodes could not be listed)'}`,
        at: Date.now(),
      },
    }).catch((err: unknown) => this.o.logger?.warn('event publish failed', { err }));
    return r;
  }

  private async table(): Promise<PlacementTable | undefined> {
    const e = await this.buckets.placement.get(PLACEMENT_KEY);
    if (e === null || e.operation !== 'PUT') return undefined;
    return decodePlacementTable(e.value);
  }

  /** Models: registered profiles plus whatever members serve (built-ins are not registered). */
  private async models(): Promise<string[]> {
    const ids = new Set(await listModels(this.buckets.models));
    const keys = await this.buckets.members.keys();
    for await (const k of keys) {
      const e = await this.buckets.members.get(k);
      if (e === null || e.operation !== 'PUT') continue;
      try {
        for (const m of Object.keys(decodeMemberRecord(e.value).models)) ids.add(m);
      } catch {
        // an invalid record is skipped, as everywhere
      }
    }
    return [...ids];
  }

  private async rebuild(table: PlacementTable): Promise<RebuildResult> {
    const t0 = performance.now();
    const primaries = [...new Set(Object.values(table.cells).map((c) => c.replicas[0]))].filter(
      (n): n is string => n !== undefined,
    );
    let complete = true;
    let blocks = 0;
    let chunks = 0;
    for (const model of await this.models()) {
      const seen = new Map<string, { i: number; groups: Set<number> }>();
      let groups = 0;
      for (const node of primaries) {
        try {
          const r = await this.listNode(node, model, table.epoch, (hash, g, i) => {
            let c = seen.get(hash);
            if (c === undefined) seen.set(hash, (c = { i, groups: new Set() }));
            c.groups.add(g);
            blocks++;
          });
          groups = Math.max(groups, r);
        } catch (err) {
          const e = toKvfError(err);
          if (e.codeName === 'UNKNOWN_MODEL') continue;
          complete = false;
          this.o.logger?.warn('index rebuild: node not listed', { node, model, err: e.message });
        }
      }
      const entries = [...seen]
        .filter(([, c]) => groups > 0 && c.groups.size >= groups)
        .map(([hash, c]) => ({ hash, meta: { m: model, i: c.i } }));
      for (let at = 0; at < entries.length; at += 1000) {
        if (!(await this.index.publish(entries.slice(at, at + 1000)))) complete = false;
      }
      chunks += entries.length;
    }
    return { chunks, blocks, complete, ms: performance.now() - t0 };
  }

  /** Every block the node is primary for; returns the model's group count there. */
  private async listNode(
    node: string,
    model: string,
    epoch: number,
    onBlock: (hash: string, g: number, i: number) => void,
  ): Promise<number> {
    let cursor: string | undefined;
    for (;;) {
      const reply = await request(
        this.nc,
        shardSubject(node, 'list_cell'),
        { model, epoch, limit: 1024, ...(cursor ? { cursor } : {}) },
        listCellReplySchema,
        { timeoutMs: this.o.requestTimeoutMs ?? 10_000 },
      );
      for (const b of reply.blocks) onBlock(b.hash, b.g, b.i);
      if (reply.nextCursor === undefined) return reply.groups;
      cursor = reply.nextCursor;
    }
  }
}

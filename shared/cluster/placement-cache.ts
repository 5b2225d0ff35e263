/**
 * PlacementCache: the latest placement table in memory, kept fresh by a JetStream KV watch on
 * kvf_placement/table. Shard resolution costs no round trip in the steady state; `refresh()` does
 * one direct get, for when a shard answered STALE_EPOCH and the watch has not delivered yet.
 *
 * Tables only move forward: an update (from the watch or a refresh, which may race) is applied
 * only when its KV revision is greater than the one held. A value that fails validation is
 * logged and skipped, never installed.
 */
import type { KV, KvEntry } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/transport-node';
import { KvfError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  decodePlacementTable,
  PLACEMENT_KEY,
  type CellPlacement,
  type PlacementTable,
} from '../protocol/cluster.js';

export type PlacementListener = (table: PlacementTable, revision: number) => void;

export interface PlacementCacheOptions {
  logger?: Logger;
}

export class PlacementCache {
  private table: PlacementTable | undefined;
  private rev = 0;
  private watcher: QueuedIterator<KvEntry> | undefined;
  private closed = false;
  private readonly listeners = new Set<PlacementListener>();
  private readonly waiters = new Set<() => void>();

  private constructor(
    private readonly kv: KV,
    private readonly opts: PlacementCacheOptions,
  ) {}

  /** Open a cache on the kvf_placement bucket (see ensureBuckets) and start watching. */
  static async open(kv: KV, opts: PlacementCacheOptions = {}): Promise<PlacementCache> {
    const cache = new PlacementCache(kv, opts);
    await cache.startWatch();
    return cache;
  }

  /** The latest table, or undefined before the coordinator has written one. */
  current(): PlacementTable | undefined {
    return this.table;
  }

  /** KV revision of the current table (0 before any). */
  revision(): number {
    return this.rev;
  }

  /** Table epoch (0 before any). */
  epoch(): number {
    return this.table?.epoch ?? 0;
  }

  /**
   * Resolves with the table once one exists. Rejects with TIMEOUT after timeoutMs (if given) and
   * with CLOSED if the cache is closed first.
   */
  ready(timeoutMs?: number): Promise<PlacementTable> {
    if (this.table) return Promise.resolve(this.table);
    return new Promise<PlacementTable>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        this.waiters.delete(done);
        if (timer) clearTimeout(timer);
        if (this.table) resolve(this.table);
        else reject(new KvfError('CLOSED', 'placement cache closed before a table arrived'));
      };
      this.waiters.add(done);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.waiters.delete(done);
          reject(
            new KvfError('TIMEOUT', `no placement table within ${timeoutMs} ms`, { details: { timeoutMs } }),
          );
        }, timeoutMs);
      }
    });
  }

  /** One direct get; installs the result when newer. Returns the (possibly unchanged) current table. */
  async refresh(): Promise<PlacementTable | undefined> {
    this.assertOpen();
    const e = await this.kv.get(PLACEMENT_KEY);
    if (e !== null) this.offer(e);
    return this.table;
  }

  /** Subscribe to table changes; returns the unsubscribe function. */
  onChange(cb: PlacementListener): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  /** The cell's placement; throws NO_PLACEMENT before any table or for a cell it does not have. */
  cell(cellId: string): CellPlacement {
    const t = this.table;
    if (t === undefined) throw new KvfError('NO_PLACEMENT', 'no placement table yet');
    const c = Object.hasOwn(t.cells, cellId) ? t.cells[cellId] : undefined;
    if (c === undefined) {
      throw new KvfError('NO_PLACEMENT', `cell ${cellId} is not in placement epoch ${t.epoch}`, {
        details: { cellId, epoch: t.epoch },
      });
    }
    return c;
  }

  /** Ordered replica set [primary, replica...] of a cell (empty when no node was live). */
  nodesFor(cellId: string): readonly string[] {
    return this.cell(cellId).replicas;
  }

  /** The cell's primary; throws NO_PLACEMENT when the cell has no node. */
  primaryFor(cellId: string): string {
    const p = this.nodesFor(cellId)[0];
    if (p === undefined)
      throw new KvfError('NO_PLACEMENT', `cell ${cellId} has no live node`, { details: { cellId } });
    return p;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.stop();
    this.listeners.clear();
    for (const w of [...this.waiters]) w();
  }

  private assertOpen(): void {
    if (this.closed) throw new KvfError('CLOSED', 'placement cache is closed');
  }

  private async startWatch(): Promise<void> {
    const w = await this.kv.watch({ key: PLACEMENT_KEY });
    this.watcher = w;
    void (async () => {
      try {
        for await (const e of w) this.offer(e);
      } catch (err) {
        if (!this.closed) this.opts.logger?.error('placement watch ended', { err });
      }
    })();
  }

  private offer(e: KvEntry): void {
    if (this.closed || e.operation !== 'PUT' || e.revision <= this.rev) return;
    let table: PlacementTable;
    try {
      table = decodePlacementTable(e.value);
    } catch (err) {
      this.opts.logger?.error('invalid placement table skipped', { revision: e.revision, err });
      return;
    }
    this.table = table;
    this.rev = e.revision;
    for (const w of [...this.waiters]) w();
    for (const cb of this.listeners) {
      try {
        cb(table, e.revision);
      } catch (err) {
        this.opts.logger?.error('placement listener threw', { err });
      }
    }
  }
}

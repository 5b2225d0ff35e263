/**
 * Where the SDK reads the placement table from. Normally the watched PlacementCache (fresh within
 * milliseconds of every change, no round trip per request). With `placementWatch: false` a client
 * reads the table once at connect and again only after a shard refused a request (STALE_EPOCH,
 * NOT_OWNER): no background traffic, one extra round trip per placement change.
 */
import type { KV } from '@nats-io/kv';
import { KvfError } from '../errors.js';
import type { Logger } from '../log.js';
import { decodePlacementTable, PLACEMENT_KEY, type PlacementTable } from '../protocol/cluster.js';

export interface PlacementSource {
  current(): PlacementTable | undefined;
  epoch(): number;
  ready(timeoutMs?: number): Promise<PlacementTable>;
  refresh(): Promise<PlacementTable | undefined>;
  close(): void;
}

export class PolledPlacement implements PlacementSource {
  private table: PlacementTable | undefined;
  private rev = 0;
  private closed = false;

  constructor(
    private readonly kv: KV,
    private readonly logger?: Logger,
  ) {}

  current(): PlacementTable | undefined {
    return this.table;
  }

  epoch(): number {
    return this.table?.epoch ?? 0;
  }

  async ready(timeoutMs = 10_000): Promise<PlacementTable> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const t = await this.refresh();
      if (t !== undefined) return t;
      if (Date.now() >= deadline) throw new KvfError('TIMEOUT', `no placement table within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async refresh(): Promise<PlacementTable | undefined> {
    if (this.closed) throw new KvfError('CLOSED', 'placement source is closed');
    const e = await this.kv.get(PLACEMENT_KEY);
    if (e !== null && e.operation === 'PUT' && e.revision > this.rev) {
      try {
        this.table = decodePlacementTable(e.value);
        this.rev = e.revision;
      } catch (err) {
        this.logger?.error('invalid placement table skipped', { revision: e.revision, err });
      }
    }
    return this.table;
  }

  close(): void {
    this.closed = true;
  }
}

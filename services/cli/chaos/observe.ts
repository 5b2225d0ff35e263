/**
 * What the chaos runner watches to time a fault: the cluster's event subjects (member dead,
 * leader elected, backfill finished, index rebuilt...), the placement table, and shard stats.
 * The observer has its own NATS connection with every server URL, reconnecting forever.
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { PlacementCache } from '../../../shared/cluster/placement-cache.js';
import { EVENTS_SUBJECTS, type PlacementTable } from '../../../shared/protocol/cluster.js';
import { statsReplySchema, type StatsReply } from '../../../shared/protocol/shard.js';
import { callShard } from '../../../shared/sdk/shard-rpc.js';

export interface SeenEvent {
  at: number;
  subject: string;
  body: Record<string, unknown>;
}

export class EventLog {
  readonly seen: SeenEvent[] = [];
  private readonly sub: Subscription;

  constructor(nc: NatsConnection) {
    // A core subscription sees every event the actors publish to the stream's subjects.
    this.sub = nc.subscribe(EVENTS_SUBJECTS, {
      callback: (err, msg) => {
        if (err) return;
        try {
          this.seen.push({ at: Date.now(), subject: msg.subject, body: msg.json<Record<string, unknown>>() });
        } catch {
          // Not JSON: not ours to judge here.
        }
      },
    });
  }

  /** First event at or after `sinceMs` matching `pred`. */
  first(sinceMs: number, pred: (e: SeenEvent) => boolean): SeenEvent | undefined {
    return this.seen.find((e) => e.at >= sinceMs && pred(e));
  }

  /** Wait (bounded) for an event at or after `sinceMs` matching `pred`; its arrival time or undefined. */
  async waitFor(
    sinceMs: number,
    pred: (e: SeenEvent) => boolean,
    timeoutMs: number,
  ): Promise<number | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = this.first(sinceMs, pred);
      if (e) return e.at;
      if (Date.now() >= deadline) return undefined;
      await sleep(50);
    }
  }

  close(): void {
    this.sub.unsubscribe();
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `check` every `everyMs` until it returns true; the time it did, or undefined at the deadline. */
export async function pollUntil(
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  everyMs = 100,
): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return Date.now();
    if (Date.now() >= deadline) return undefined;
    await sleep(everyMs);
  }
}

export async function shardStats(
  nc: NatsConnection,
  nodeId: string,
  timeoutMs = 2000,
): Promise<StatsReply | undefined> {
  const r = await callShard(nc, nodeId, 'stats', {}, statsReplySchema, timeoutMs);
  return r.kind === 'ok' ? r.reply : undefined;
}

/** Every cell has `replicationFactor` replicas, all of them listed members, none in `gone`. */
export function placementFull(t: PlacementTable | undefined, gone: ReadonlySet<string>): boolean {
  if (t === undefined) return false;
  const cells = Object.values(t.cells);
  return (
    cells.length > 0 &&
    cells.every(
      (c) =>
        c.replicas.length >= t.replicationFactor &&
        c.replicas.every((n) => !gone.has(n) && Object.hasOwn(t.members, n)),
    )
  );
}

/**
 * Replication factor restored: the placement table is full without the `gone` nodes, and every
 * listed node answers stats saying it holds its replica cells in sync and sees no out-of-sync
 * replica. `replicationReported` is false when no node reports replication state (nodes without
 * replication): the placement alone then decides, and the caller notes it.
 */
export async function rfRestored(
  nc: NatsConnection,
  placement: PlacementCache,
  gone: ReadonlySet<string>,
): Promise<{ restored: boolean; replicationReported: boolean }> {
  const t = placement.current();
  if (!placementFull(t, gone) || t === undefined) return { restored: false, replicationReported: false };
  const stats = await Promise.all(Object.keys(t.members).map((n) => shardStats(nc, n)));
  let reported = false;
  for (const st of stats) {
    if (st === undefined) return { restored: false, replicationReported: reported };
    const r = (
      st as {
        replication?: { replicaCells: number; inSyncCells: number; outOfSync: unknown[]; fenced: boolean };
      }
    ).replication;
    if (r === undefined) continue;
    reported = true;
    if (r.inSyncCells < r.replicaCells || r.outOfSync.length > 0 || r.fenced) {
      return { restored: false, replicationReported: true };
    }
  }
  return { restored: true, replicationReported: reported };
}

/** Evictions so far per node incarnation, summed over models. */
export async function evictionCounters(
  nc: NatsConnection,
  nodes: readonly string[],
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const stats = await Promise.all(nodes.map((n) => shardStats(nc, n)));
  for (const st of stats) {
    if (st === undefined) continue;
    const ev = st.models.reduce((a, m) => a + m.stats.evictedTotal, 0);
    out.set(`${st.nodeId}/${st.incarnation}`, ev);
  }
  return out;
}

/** Evictions between two snapshots (a node incarnation absent from `before` started at 0). */
export function evictionsBetween(before: Map<string, number>, after: Map<string, number>): number {
  let n = 0;
  for (const [k, v] of after) n += v - (before.get(k) ?? 0);
  return n;
}

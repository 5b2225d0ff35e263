/**
 * The coordinator: every instance campaigns for the leader lease; the leader runs a LeaderSession
 * (membership watch, dead-node detection, placement writes, events, endpoints); the others only
 * wait. Clock, id and the NATS connection are arguments, so tests run several coordinators in
 * one process against a real nats-server.
 *
 * The leader writes the placement table only
 *   - while its lease is locally valid (LeaderElector.isLeader), and
 *   - by CAS on the table's KV revision, stamped with its term; on a lost CAS it re-reads the
 *     table and, if a higher term wrote it, steps down (fencing by term).
 * On election it first writes the table stamped with its new term (even if no cell changed), so
 * that any write by a previous leader from then on loses its CAS and sees the higher term.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { ensureBuckets, type BucketOptions, type ClusterBuckets } from '../../shared/cluster/buckets.js';
import { systemClock, type Clock } from '../../shared/cluster/clock.js';
import { KvfError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import type { PartitionSpec } from '../../shared/partition.js';
import { IndexRebuilder, type RebuildIndex } from './index-rebuild.js';
import { LeaderElector, type DeposeReason } from './leader.js';
import { LeaderSession } from './session.js';
import { decodePlacementTable, PLACEMENT_KEY } from '../../shared/protocol/cluster.js';
import { publishEvent } from '../../shared/cluster/events.js';
import { EVENT_SUBJECTS } from '../../shared/protocol/cluster.js';

export interface CoordinatorOptions {
  /** Unique per coordinator process (host name + pid by default in main.ts). */
  id: string;
  spec: PartitionSpec;
  /** @default 1 */
  replicationFactor?: number;
  /** Members heartbeat at this interval; the dead-node check runs at the same pace. @default 1000 */
  heartbeatIntervalMs?: number;
  /** A member whose record has not changed for this long (leader's clock) is dead. @default 6000 */
  nodeDeadAfterMs?: number;
  /** @default 5000 */
  leaderLeaseTtlMs?: number;
  /** Membership changes within this window are placed together. @default 50 */
  placementDebounceMs?: number;
  buckets?: BucketOptions;
  clock?: Clock;
  logger?: Logger;
  /** The Redis prefix index: the leader rebuilds it from the shards when it was emptied. */
  index?: RebuildIndex;
  /** How often the leader checks the index's sentinel. @default 2000 */
  indexCheckIntervalMs?: number;
}

export const COORDINATOR_DEFAULTS = {
  replicationFactor: 1,
  heartbeatIntervalMs: 1000,
  nodeDeadAfterMs: 6000,
  leaderLeaseTtlMs: 5000,
  placementDebounceMs: 50,
  indexCheckIntervalMs: 2000,
} as const;

export type ResolvedCoordinatorOptions = Required<
  Omit<CoordinatorOptions, 'buckets' | 'logger' | 'index'>
> & {
  logger?: Logger;
  index?: RebuildIndex;
};

export class Coordinator {
  private session: LeaderSession | undefined;
  /** The last session's close, awaited by stop() so the caller can close the connection after. */
  private closing: Promise<void> = Promise.resolve();
  private stopped = false;
  private rebuilder: IndexRebuilder | undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly buckets: ClusterBuckets,
    private readonly o: ResolvedCoordinatorOptions,
    private readonly elector: LeaderElector,
  ) {}

  /** Create the buckets if needed and start campaigning. */
  static async start(nc: NatsConnection, opts: CoordinatorOptions): Promise<Coordinator> {
    const o: ResolvedCoordinatorOptions = { ...COORDINATOR_DEFAULTS, clock: systemClock, ...opts };
    if (o.nodeDeadAfterMs <= o.heartbeatIntervalMs) {
      throw new KvfError('CONFIG_INVALID', 'nodeDeadAfterMs must exceed heartbeatIntervalMs');
    }
    const buckets = await ensureBuckets(nc, opts.buckets);
    // The elector's callbacks need the coordinator, which needs the elector.
    const ref: { self?: Coordinator } = {};
    const elector = new LeaderElector(buckets.leader, {
      id: o.id,
      leaseTtlMs: o.leaderLeaseTtlMs,
      clock: o.clock,
      logger: o.logger,
      termFloor: async () => {
        const e = await buckets.placement.get(PLACEMENT_KEY);
        if (e === null || e.operation !== 'PUT') return 0;
        try {
          return decodePlacementTable(e.value).term;
        } catch {
          return 0;
        }
      },
      onElected: (term) => ref.self?.elected(term),
      onDeposed: (term, reason) => ref.self?.deposed(term, reason),
    });
    const self = new Coordinator(nc, buckets, o, elector);
    ref.self = self;
    elector.start();
    return self;
  }

  get id(): string {
    return this.o.id;
  }

  isLeader(): boolean {
    return this.elector.isLeader();
  }

  term(): number | undefined {
    return this.elector.term();
  }

  /** Clean stop: resign the lease if held (a standby takes over at once), stop serving. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.elector.resign();
    await this.rebuilder?.stop();
    await this.session?.close();
    await this.closing;
  }

  /** Stop without any cleanup write (what a crash looks like): the lease lapses by TTL. */
  halt(): void {
    this.stopped = true;
    this.elector.halt();
  }

  private async elected(term: number): Promise<void> {
    if (this.stopped) return;
    await this.session?.close();
    await this.closing;
    this.event({ event: 'elected', id: this.o.id, term, at: this.o.clock.wallMs() });
    const session = new LeaderSession(this.nc, this.buckets, this.o, term, () => this.elector.isLeader(), {
      stepDown: () => void this.elector.resign().then(() => this.restartCampaign()),
    });
    this.session = session;
    await session.start();
    if (this.o.index !== undefined && this.session === session && !this.stopped) {
      await this.rebuilder?.stop();
      this.rebuilder = new IndexRebuilder(this.nc, this.buckets, this.o.index, {
        id: this.o.id,
        checkIntervalMs: this.o.indexCheckIntervalMs,
        ...(this.o.logger ? { logger: this.o.logger } : {}),
      });
      this.rebuilder.start();
    }
  }

  /** The index rebuilder while leading (tests). */
  indexRebuilder(): IndexRebuilder | undefined {
    return this.rebuilder;
  }

  private deposed(term: number, reason: DeposeReason): void {
    const s = this.session;
    this.session = undefined;
    const r = this.rebuilder;
    this.rebuilder = undefined;
    void r?.stop();
    if (s !== undefined) this.closing = s.close();
    if (reason !== 'halted') {
      this.event({
        event: reason === 'resigned' ? 'resigned' : 'deposed',
        id: this.o.id,
        term,
        at: this.o.clock.wallMs(),
      });
    }
  }

  /** After a fenced step-down, campaign again (unless stopping). */
  private restartCampaign(): void {
    if (!this.stopped) this.elector.start();
  }

  private event(body: {
    event: 'elected' | 'resigned' | 'deposed';
    id: string;
    term: number;
    at: number;
  }): void {
    publishEvent(this.buckets.js, { subject: EVENT_SUBJECTS.leader, body }).catch((err: unknown) =>
      this.o.logger?.warn('leader event not published', { err }),
    );
  }
}

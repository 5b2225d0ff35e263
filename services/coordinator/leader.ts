/**
 * Leader election over a JetStream KV lease (bucket kvf_leader, key 'leader'). No home-made
 * consensus: JetStream's per-key compare-and-set on the revision decides every race.
 *
 * - Campaign: a follower polls the key. Absent or deleted: kv.create. Present: the follower
 *   remembers the revision and when (its own monotonic clock) it first saw it; if the revision
 *   has not changed for leaseTtlMs, it takes over with kv.update on that revision. Losing either
 *   CAS means someone else won.
 * - Renew: the leader CAS-updates the lease every renewIntervalMs (default ttl/3).
 * - Validity: the leader acts (writes placement, answers requests) only while
 *   now - (start of its last successful renewal) < ttl * validFraction. A standby measures the
 *   TTL from when it *observed* that renewal, which is later; so the old leader's window closes
 *   before a standby may take over, even with some clock-rate drift (validFraction < 1).
 * - A failed renewal CAS means the lease was taken: step down at once.
 * - Terms: each new leader takes max(every term it has seen, termFloor()) + 1. termFloor reads
 *   the placement table's term, so terms keep increasing even across a resignation (which
 *   deletes the lease and with it the last term).
 */
import type { KV } from '@nats-io/kv';
import type { Clock } from '../../shared/cluster/clock.js';
import { isWrongLastSequence } from '../../shared/cluster/kv-util.js';
import type { Logger } from '../../shared/log.js';
import {
  decodeLeaderLease,
  encodeRecord,
  LEADER_KEY,
  type LeaderLease,
} from '../../shared/protocol/cluster.js';

export interface LeaderElectorOptions {
  id: string;
  /** @default 5000 (config coordinator.leaderLeaseTtlMs) */
  leaseTtlMs: number;
  /** @default leaseTtlMs / 3 */
  renewIntervalMs?: number;
  /** How often a follower reads the lease. @default leaseTtlMs / 5 */
  pollIntervalMs?: number;
  /** Fraction of the TTL after the last successful renewal during which the leader may act. @default 0.8 */
  validFraction?: number;
  clock: Clock;
  logger?: Logger;
  /** Highest term recorded elsewhere (the placement table's). @default () => 0 */
  termFloor?: () => Promise<number>;
  /** Became leader. Runs while renewals continue; a rejection makes the elector resign. */
  onElected: (term: number) => Promise<void> | void;
  /** Stopped being leader ('lost' lease, 'expired' locally, 'resigned', 'halted'). */
  onDeposed: (term: number, reason: DeposeReason) => void;
}

export type DeposeReason = 'lost' | 'expired' | 'resigned' | 'halted';

type State = { kind: 'follower' } | { kind: 'leader'; term: number; revision: number; renewedAtMs: number };

export class LeaderElector {
  private state: State = { kind: 'follower' };
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private busy: Promise<void> = Promise.resolve();
  private readonly renewMs: number;
  private readonly pollMs: number;
  private readonly validMs: number;
  /** Follower's view of the lease: revision and when it was first observed. */
  private observed: { revision: number; atMs: number } | undefined;
  private highestTerm = 0;

  constructor(
    private readonly kv: KV,
    private readonly o: LeaderElectorOptions,
  ) {
    if (!(o.leaseTtlMs > 0)) throw new Error('leaseTtlMs must be > 0');
    this.renewMs = o.renewIntervalMs ?? o.leaseTtlMs / 3;
    this.pollMs = o.pollIntervalMs ?? o.leaseTtlMs / 5;
    this.validMs = o.leaseTtlMs * (o.validFraction ?? 0.8);
    if (this.renewMs >= this.validMs)
      throw new Error('renewIntervalMs must be below leaseTtlMs * validFraction');
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule(0);
  }

  /** True only while the lease is held and locally valid. */
  isLeader(): boolean {
    const s = this.state;
    return s.kind === 'leader' && this.o.clock.nowMs() - s.renewedAtMs < this.validMs;
  }

  /** The current term when leader, else undefined. */
  term(): number | undefined {
    return this.state.kind === 'leader' ? this.state.term : undefined;
  }

  /** Stop campaigning; if leader, delete the lease (CAS on our revision) so a standby takes over now. */
  async resign(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    await this.busy;
    const s = this.state;
    if (s.kind !== 'leader') return;
    this.depose('resigned');
    try {
      await this.kv.delete(LEADER_KEY, { previousSeq: s.revision });
    } catch (err) {
      if (!isWrongLastSequence(err)) this.o.logger?.warn('lease delete failed', { err });
    }
  }

  /** Stop everything without writing (what a crash looks like); the lease lapses by TTL. */
  halt(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    if (this.state.kind === 'leader') this.depose('halted');
  }

  private schedule(delayMs: number): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.busy = this.tick()
        .catch((err: unknown) => this.o.logger?.warn('leader election step failed', { err }))
        .finally(() => this.schedule(this.state.kind === 'leader' ? this.renewMs : this.pollMs));
    }, delayMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    if (this.state.kind === 'leader') await this.renew();
    else await this.campaign();
  }

  private lease(term: number): string {
    const l: LeaderLease = {
      id: this.o.id,
      term,
      renewedAt: this.o.clock.wallMs(),
      ttlMs: this.o.leaseTtlMs,
    };
    return encodeRecord(l);
  }

  private async renew(): Promise<void> {
    const s = this.state;
    if (s.kind !== 'leader') return;
    const startedAt = this.o.clock.nowMs();
    try {
      const revision = await this.kv.update(LEADER_KEY, this.lease(s.term), s.revision);
      if (this.state === s) this.state = { ...s, revision, renewedAtMs: startedAt };
    } catch (err) {
      if (isWrongLastSequence(err)) return this.depose('lost');
      // Timeouts and disconnects: keep trying while the lease is still locally valid.
      if (!this.isLeader()) this.depose('expired');
      throw err;
    }
  }

  private async campaign(): Promise<void> {
    const now = this.o.clock.nowMs();
    const e = await this.kv.get(LEADER_KEY);
    if (e === null || e.operation !== 'PUT') return this.tryAcquire(undefined);
    let current: LeaderLease | undefined;
    try {
      current = decodeLeaderLease(e.value);
      this.highestTerm = Math.max(this.highestTerm, current.term);
    } catch (err) {
      this.o.logger?.warn('invalid leader lease', { revision: e.revision, err });
    }
    if (this.observed?.revision !== e.revision) {
      this.observed = { revision: e.revision, atMs: now };
      return;
    }
    if (now - this.observed.atMs >= this.o.leaseTtlMs) {
      this.o.logger?.info('leader lease lapsed; taking over', { holder: current?.id, term: current?.term });
      await this.tryAcquire(e.revision);
    }
  }

  /** Create (revision undefined) or take over (CAS on the lapsed revision). */
  private async tryAcquire(revision: number | undefined): Promise<void> {
    const floor = (await this.o.termFloor?.()) ?? 0;
    const term = Math.max(this.highestTerm, floor) + 1;
    const startedAt = this.o.clock.nowMs();
    let newRevision: number;
    try {
      newRevision =
        revision === undefined
          ? await this.kv.create(LEADER_KEY, this.lease(term))
          : await this.kv.update(LEADER_KEY, this.lease(term), revision);
    } catch (err) {
      if (isWrongLastSequence(err)) return; // someone else won this round
      throw err;
    }
    this.highestTerm = term;
    this.observed = undefined;
    this.state = { kind: 'leader', term, revision: newRevision, renewedAtMs: startedAt };
    this.o.logger?.info('elected leader', { id: this.o.id, term });
    void Promise.resolve()
      .then(() => this.o.onElected(term))
      .catch(async (err: unknown) => {
        this.o.logger?.error('leader start failed; resigning', { err, term });
        if (this.state.kind === 'leader' && this.state.term === term) {
          const s = this.state;
          this.depose('resigned');
          await this.kv.delete(LEADER_KEY, { previousSeq: s.revision }).catch(() => undefined);
        }
      });
  }

  private depose(reason: DeposeReason): void {
    const s = this.state;
    if (s.kind !== 'leader') return;
    this.state = { kind: 'follower' };
    this.observed = undefined;
    const fields = { id: this.o.id, term: s.term, reason };
    if (reason === 'resigned' || reason === 'halted') this.o.logger?.info('no longer leader', fields);
    else this.o.logger?.warn('no longer leader', fields);
    this.o.onDeposed(s.term, reason);
  }
}

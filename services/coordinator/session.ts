/**
 * What the leader does while it leads, for one term: watch membership, declare silent members
 * dead, keep the placement table right (CAS-written, term-stamped), publish events and serve the
 * coordinator endpoints. A new term gets a new session; closing a session stops all of it.
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { ClusterBuckets } from '../../shared/cluster/buckets.js';
import { publishEvent, type ClusterEvent } from '../../shared/cluster/events.js';
import { isWrongLastSequence } from '../../shared/cluster/kv-util.js';
import {
  CLUSTER_LIMITS,
  decodeMemberRecord,
  decodePlacementTable,
  encodeRecord,
  EVENT_SUBJECTS,
  PLACEMENT_KEY,
  type MemberEvent,
  type MemberRecord,
  type PlacementTable,
} from '../../shared/protocol/cluster.js';
import type { ResolvedCoordinatorOptions } from './coordinator.js';
import { serveCoordinatorEndpoints } from './endpoints.js';
import { MembershipTable, MembershipWatcher, type MemberView, type MembershipChange } from './membership.js';
import { computePlacement } from './placement.js';

/** Attempts at one placement write when the CAS loses to a same-or-lower-term writer. */
const PLACEMENT_CAS_ATTEMPTS_MAX = 3;
/** Longest wait, in nodeDeadAfterMs, for a heartbeat to land after a members-bucket outage. */
const BLIND_WAIT_FACTOR = 10;
/** A leader step unsettled after this many nodeDeadAfterMs (at least STEP_STUCK_MIN_MS) makes the leader step down. */
const STEP_STUCK_FACTOR = 10;
const STEP_STUCK_MIN_MS = 15_000;
/** How long close() waits for the step in progress. */
const CLOSE_WAIT_MS = 5_000;

interface Base {
  table: PlacementTable | undefined;
  /** KV revision of the stored table (0 = none stored). */
  revision: number;
}

export class LeaderSession {
  private base: Base = { table: undefined, revision: 0 };
  private membership: MembershipTable;
  private watcher: MembershipWatcher | undefined;
  private subs: Subscription[] = [];
  private deadTimer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private pendingReasons: string[] = [];
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  /** A newer term wrote the table: this session must never write again. */
  private superseded = false;
  /**
   * When a members-bucket write last failed for another reason than a lost CAS (JetStream or the
   * bucket's stream leader unavailable, e.g. the nats-server that led it was killed). Heartbeats
   * could not land either, so silence across that outage says nothing about the members: no one
   * is declared dead until a heartbeat is seen landing again (or BLIND_WAIT_FACTOR dead-bounds).
   */
  private blindSinceMs: number | undefined;
  /** Silence counts from here at the earliest: when heartbeats were seen landing after an outage. */
  private graceFromMs = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly b: ClusterBuckets,
    private readonly o: ResolvedCoordinatorOptions,
    private readonly term: number,
    private readonly isLeader: () => boolean,
    private readonly hooks: { stepDown: () => void },
  ) {
    this.membership = new MembershipTable(o.logger);
  }

  async start(): Promise<void> {
    await this.loadTable();
    if (this.closed || this.superseded) return;
    await this.startMembership();
    if (this.closed) return;
    // The election write: stamps the table with this term so older leaders' writes now fail.
    await this.enqueue(
      () => this.reconcile(`leader ${this.o.id} elected (term ${this.term})`, true),
      'election write',
    );
    if (this.closed) return;
    this.subs = serveCoordinatorEndpoints({
      nc: this.nc,
      models: this.b.models,
      leaderId: this.o.id,
      term: this.term,
      spec: this.o.spec,
      replicationFactor: this.o.replicationFactor,
      isLeader: this.isLeader,
      table: () => (this.base.table ? { table: this.base.table, revision: this.base.revision } : undefined),
      members: () => this.membership.live(),
      nowMs: () => this.o.clock.nowMs(),
      logger: this.o.logger,
    });
    this.scheduleDeadCheck();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.deadTimer) clearTimeout(this.deadTimer);
    if (this.debounce) clearTimeout(this.debounce);
    this.watcher?.stop();
    for (const s of this.subs) s.unsubscribe();
    // A step still running finishes on its own (every write is fenced by the term); waiting for it
    // is bounded, so a stuck step cannot keep this coordinator from ever leading again.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.chain, new Promise<void>((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)))]);
    clearTimeout(timer);
  }

  /**
   * Leader steps run one at a time; the returned promise carries the step's own outcome. A step
   * that has not settled after STEP_STUCK_FACTOR dead-bounds holds up every later one (dead
   * checks, reconciles): the leader then steps down so that another coordinator takes over
   * instead of a leader that can no longer declare anyone dead.
   */
  private enqueue(fn: () => Promise<void>, name = 'step'): Promise<void> {
    const run = async (): Promise<void> => {
      const started = this.o.clock.nowMs();
      const stuckMs = Math.max(STEP_STUCK_MIN_MS, STEP_STUCK_FACTOR * this.o.nodeDeadAfterMs);
      const watchdog = setTimeout(() => {
        if (this.closed) return;
        this.o.logger?.error('leader step stuck; stepping down', { step: name, stuckMs });
        this.hooks.stepDown();
      }, stuckMs);
      watchdog.unref();
      try {
        await fn();
      } finally {
        clearTimeout(watchdog);
        const ms = this.o.clock.nowMs() - started;
        if (ms > this.o.nodeDeadAfterMs)
          this.o.logger?.warn('leader step slow', { step: name, ms: Math.round(ms) });
      }
    };
    const next = this.chain.then(run);
    this.chain = next.catch((err: unknown) =>
      this.o.logger?.error('leader step failed', { step: name, err }),
    );
    return next;
  }

  /** A step nobody awaits (its failure is logged by the chain). */
  private background(fn: () => Promise<void>, name?: string): Promise<void> {
    return this.enqueue(fn, name).catch(() => undefined);
  }

  private async loadTable(): Promise<void> {
    const e = await this.b.placement.get(PLACEMENT_KEY);
    if (e === null) return;
    let table: PlacementTable | undefined;
    if (e.operation === 'PUT') {
      try {
        table = decodePlacementTable(e.value);
      } catch (err) {
        this.o.logger?.error('stored placement table invalid; replacing it', { revision: e.revision, err });
      }
    }
    this.base = { table, revision: e.revision };
    if (table !== undefined && table.term > this.term) this.fenced(table);
  }

  private async startMembership(): Promise<void> {
    this.watcher?.stop();
    this.membership = new MembershipTable(this.o.logger);
    const w = new MembershipWatcher(
      this.b.members,
      this.membership,
      () => this.o.clock.nowMs(),
      (c) => this.onMembershipChange(c),
      () => void this.restartMembership(),
      this.o.logger,
    );
    this.watcher = w;
    await w.start();
  }

  /** The watch broke: take a fresh snapshot (every member gets a new full grace period). */
  private async restartMembership(): Promise<void> {
    if (this.closed) return;
    try {
      await this.startMembership();
      this.scheduleReconcile('membership watch restarted');
    } catch (err) {
      this.o.logger?.error('membership restart failed; stepping down', { err });
      this.hooks.stepDown();
    }
  }

  private onMembershipChange(c: MembershipChange): void {
    const record = c.kind === 'left' ? c.record : c.member.record;
    if (c.kind !== 'reweighted') this.memberEvent(c.kind, record);
    this.scheduleReconcile(`member ${c.kind}: ${record.nodeId}`);
  }

  private scheduleReconcile(reason: string): void {
    if (this.closed) return;
    this.pendingReasons.push(reason);
    if (this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      const reasons = this.pendingReasons.splice(0);
      void this.background(() => this.reconcile(reasons.join('; ').slice(0, 1024), false), 'reconcile');
    }, this.o.placementDebounceMs);
  }

  private scheduleDeadCheck(): void {
    if (this.closed) return;
    const every = Math.min(this.o.heartbeatIntervalMs, this.o.nodeDeadAfterMs / 4);
    this.deadTimer = setTimeout(() => {
      void this.background(() => this.checkDead(), 'dead check').finally(() => this.scheduleDeadCheck());
    }, every);
  }

  /** Declare silent members dead: delete their key by CAS (a heartbeat that lands first wins). */
  private async checkDead(): Promise<void> {
    if (this.closed || !this.isLeader()) return;
    const now = this.o.clock.nowMs();
    if (!this.outageOver(now)) return;
    const silent = this.membership
      .silent(now, this.o.nodeDeadAfterMs)
      .filter((m) => now - Math.max(m.lastChangeAtMs, this.graceFromMs) > this.o.nodeDeadAfterMs);
    for (const m of silent) {
      const { nodeId, incarnation } = m.record;
      try {
        await this.b.members.delete(nodeId, { previousSeq: m.revision });
      } catch (err) {
        if (isWrongLastSequence(err)) {
          // The key's last revision is not the one this table holds. Usually a newer heartbeat
          // the watch is about to deliver. But after a nats-server kill the bucket's new stream
          // leader may lack revisions the watch already delivered (seen: table 1686, server
          // 1680), and then every CAS on the table's revision fails forever and the node is never
          // declared dead. So read the key: a newer revision is observed (the node lives); an
          // older one of the same incarnation is what the server really has, and the CAS is
          // retried on it.
          if (!(await this.deleteAtServerRevision(m))) continue;
        } else {
          this.blindSinceMs = this.o.clock.nowMs();
          throw err;
        }
      }
      this.o.logger?.warn('member declared dead', {
        nodeId,
        incarnation,
        silentMs: this.o.clock.nowMs() - m.lastChangeAtMs,
      });
      this.membership.markDead(nodeId, incarnation);
      this.memberEvent('dead', m.record);
      this.scheduleReconcile(`member dead: ${nodeId}`);
    }
  }

  /**
   * After a lost CAS on a silent member: re-read its key. A newer revision is observed as the
   * watch would (the member is alive after all) and false returned; an older revision of the same
   * incarnation is the server's real last one, so the delete is retried on it: true when the
   * member was deleted. Never throws.
   */
  private async deleteAtServerRevision(m: MemberView): Promise<boolean> {
    const { nodeId, incarnation } = m.record;
    try {
      const e = await this.b.members.get(nodeId);
      if (e === null || e.operation !== 'PUT') return false;
      if (e.revision > m.revision) {
        const change = this.membership.observe(e, this.o.clock.nowMs());
        if (change !== undefined) this.onMembershipChange(change);
        return false;
      }
      let seen: string | undefined;
      try {
        seen = decodeMemberRecord(e.value).incarnation;
      } catch {
        seen = undefined;
      }
      if (seen !== incarnation || e.revision === m.revision) return false;
      this.o.logger?.warn(
        'members bucket lost revisions the watch delivered; deleting at the server revision',
        {
          nodeId,
          tableRevision: m.revision,
          serverRevision: e.revision,
        },
      );
      await this.b.members.delete(nodeId, { previousSeq: e.revision });
      return true;
    } catch (err) {
      this.o.logger?.debug('member re-read or delete failed', { nodeId, err });
      return false;
    }
  }

  /**
   * After a failed members write: false until some member's heartbeat is seen landing (the bucket
   * takes writes again), then every member gets a full nodeDeadAfterMs from that moment. Bounded
   * by BLIND_WAIT_FACTOR * nodeDeadAfterMs, so members that all died are still declared dead.
   */
  private outageOver(now: number): boolean {
    const since = this.blindSinceMs;
    if (since === undefined) return true;
    const landed = this.membership.live().some((m) => m.lastChangeAtMs > since);
    if (!landed && now - since < BLIND_WAIT_FACTOR * this.o.nodeDeadAfterMs) return false;
    this.o.logger?.info('members bucket writable again; silence counted from now', {
      blindMs: Math.round(now - since),
    });
    this.blindSinceMs = undefined;
    this.graceFromMs = now;
    return true;
  }

  /** Compute and CAS-write the table if it changed (always when `force`). */
  private async reconcile(reason: string, force: boolean): Promise<void> {
    for (let attempt = 1; attempt <= PLACEMENT_CAS_ATTEMPTS_MAX; attempt++) {
      if (this.closed || this.superseded || !this.isLeader()) return;
      const result = computePlacement({
        prev: this.base.table,
        spec: this.o.spec,
        replicationFactor: this.o.replicationFactor,
        nodes: this.membership.live().map((m) => ({
          nodeId: m.record.nodeId,
          weight: m.record.capacityBytes,
          role: m.record.role,
          incarnation: m.record.incarnation,
        })),
        term: this.term,
        leaderId: this.o.id,
        reason,
        nowWallMs: this.o.clock.wallMs(),
      });
      if (!result.changed && !force && this.base.table?.term === this.term) return;
      const json = encodeRecord(result.table);
      if (json.length > CLUSTER_LIMITS.placementTableBytesMax) {
        this.o.logger?.error('placement table too large; not written', { bytes: json.length });
        return;
      }
      if (this.superseded || !this.isLeader()) return;
      try {
        const revision =
          this.base.revision === 0
            ? await this.b.placement.create(PLACEMENT_KEY, json)
            : await this.b.placement.update(PLACEMENT_KEY, json, this.base.revision);
        this.base = { table: result.table, revision };
      } catch (err) {
        if (!isWrongLastSequence(err)) throw err;
        await this.loadTable();
        continue;
      }
      this.o.logger?.info('placement written', {
        epoch: result.table.epoch,
        moves: result.moves.length,
        reason,
      });
      this.event({
        subject: EVENT_SUBJECTS.placement,
        body: {
          epoch: result.table.epoch,
          term: this.term,
          leaderId: this.o.id,
          moves: result.moves,
          reason,
          at: this.o.clock.wallMs(),
        },
      });
      return;
    }
    this.o.logger?.warn('placement write kept losing its CAS; will retry on the next change', { reason });
  }

  private fenced(table: PlacementTable): void {
    this.o.logger?.warn('placement written by a newer term; stepping down', {
      term: this.term,
      tableTerm: table.term,
    });
    this.superseded = true;
    this.hooks.stepDown();
  }

  private memberEvent(event: MemberEvent['event'], r: MemberRecord): void {
    this.event({
      subject: EVENT_SUBJECTS.member,
      body: {
        event,
        nodeId: r.nodeId,
        incarnation: r.incarnation,
        role: r.role,
        term: this.term,
        at: this.o.clock.wallMs(),
      },
    });
  }

  private event(e: ClusterEvent): void {
    publishEvent(this.b.js, e).catch((err: unknown) => this.o.logger?.warn('event not published', { err }));
  }
}

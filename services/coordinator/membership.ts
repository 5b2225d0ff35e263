/**
 * Membership as the leader sees it: the member records of kvf_members plus, per member, when this
 * process last observed a new revision of its record. Liveness is only ever "a revision change
 * observed recently on my own monotonic clock"; the records' wall-clock fields are never compared
 * with this host's clock.
 *
 * MembershipTable is pure (fed with entries and times, unit-testable); MembershipWatcher feeds it
 * from the bucket: a snapshot first (so the first placement sees every member at once), then a
 * watch from the snapshot's stream sequence.
 */
import type { KV, KvEntry } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/transport-node';
import type { Logger } from '../../shared/log.js';
import { decodeMemberRecord, type MemberRecord } from '../../shared/protocol/cluster.js';

export interface MemberView {
  record: MemberRecord;
  /** KV revision of the record as last observed. */
  revision: number;
  /** Monotonic ms (the leader's clock) when a new revision was last observed. */
  lastChangeAtMs: number;
}

export type MembershipChange =
  | { kind: 'joined'; member: MemberView }
  | { kind: 'restarted'; member: MemberView; previousIncarnation: string }
  /** Capacity or role changed: placement weights may move. */
  | { kind: 'reweighted'; member: MemberView }
  | { kind: 'left'; record: MemberRecord };

/** Incarnations declared dead that are remembered, so a late write by them is never believed. */
const DEAD_INCARNATIONS_MAX = 4096;

export interface ObservedEntry {
  key: string;
  revision: number;
  operation: 'PUT' | 'DEL' | 'PURGE';
  value: Uint8Array;
}

export class MembershipTable {
  private readonly members = new Map<string, MemberView>();
  private readonly deadIncarnations = new Set<string>();

  constructor(private readonly logger?: Logger) {}

  live(): MemberView[] {
    return [...this.members.values()].sort((a, b) => (a.record.nodeId < b.record.nodeId ? -1 : 1));
  }

  get(nodeId: string): MemberView | undefined {
    return this.members.get(nodeId);
  }

  /** Apply one KV entry observed at nowMs; returns the membership change it caused, if any. */
  observe(e: ObservedEntry, nowMs: number): MembershipChange | undefined {
    const known = this.members.get(e.key);
    if (known !== undefined && e.revision <= known.revision) return undefined; // replay
    if (e.operation !== 'PUT') {
      if (known === undefined) return undefined;
      this.members.delete(e.key);
      return { kind: 'left', record: known.record };
    }
    const record = this.parse(e);
    if (record === undefined) return undefined;
    if (this.deadIncarnations.has(`${record.nodeId}/${record.incarnation}`)) return undefined;
    const view: MemberView = { record, revision: e.revision, lastChangeAtMs: nowMs };
    this.members.set(e.key, view);
    if (known === undefined) return { kind: 'joined', member: view };
    if (known.record.incarnation !== record.incarnation) {
      return { kind: 'restarted', member: view, previousIncarnation: known.record.incarnation };
    }
    if (known.record.capacityBytes !== record.capacityBytes || known.record.role !== record.role) {
      return { kind: 'reweighted', member: view };
    }
    return undefined;
  }

  /** Members whose record has not changed for longer than deadAfterMs. */
  silent(nowMs: number, deadAfterMs: number): MemberView[] {
    return this.live().filter((m) => nowMs - m.lastChangeAtMs > deadAfterMs);
  }

  /** Remove a member declared dead; later writes by that incarnation are ignored. */
  markDead(nodeId: string, incarnation: string): void {
    const m = this.members.get(nodeId);
    if (m !== undefined && m.record.incarnation === incarnation) this.members.delete(nodeId);
    if (this.deadIncarnations.size >= DEAD_INCARNATIONS_MAX) {
      const oldest = this.deadIncarnations.values().next().value;
      if (oldest !== undefined) this.deadIncarnations.delete(oldest);
    }
    this.deadIncarnations.add(`${nodeId}/${incarnation}`);
  }

  private parse(e: ObservedEntry): MemberRecord | undefined {
    try {
      const r = decodeMemberRecord(e.value);
      if (r.nodeId !== e.key) throw new Error(`record nodeId ${r.nodeId} under key ${e.key}`);
      return r;
    } catch (err) {
      this.logger?.warn('invalid member record ignored', { key: e.key, revision: e.revision, err });
      return undefined;
    }
  }
}

/**
 * Feeds a MembershipTable from kvf_members: snapshot, then watch. `onChange` runs for every
 * change after the snapshot (the snapshot's members are in the table when start() resolves).
 */
export class MembershipWatcher {
  private watch: QueuedIterator<KvEntry> | undefined;
  private stopped = false;

  constructor(
    private readonly kv: KV,
    private readonly table: MembershipTable,
    private readonly nowMs: () => number,
    private readonly onChange: (c: MembershipChange) => void,
    /** The watch ended while not stopped (connection trouble): the table is going stale. */
    private readonly onEnded: (err: unknown) => void,
    private readonly logger?: Logger,
  ) {}

  async start(): Promise<void> {
    const status = await this.kv.status();
    const snapshotSeq = status.streamInfo.state.last_seq;
    const keys: string[] = [];
    for await (const k of await this.kv.keys()) keys.push(k);
    const entries = await Promise.all(keys.map((k) => this.kv.get(k)));
    for (const e of entries) if (e !== null) this.table.observe(e, this.nowMs());
    if (this.stopped) return;
    // Updates after the snapshot sequence; entries the snapshot already saw are replays (skipped).
    const w = await this.kv.watch({ key: '>', resumeFromRevision: snapshotSeq + 1 });
    this.watch = w;
    if (this.stopped) w.stop();
    void (async () => {
      let failure: unknown = new Error('member watch closed');
      try {
        for await (const e of w) {
          if (this.stopped) break;
          const change = this.table.observe(e, this.nowMs());
          if (change !== undefined) this.onChange(change);
        }
      } catch (err) {
        failure = err;
      }
      if (!this.stopped) {
        this.logger?.error('member watch ended', { err: failure });
        this.onEnded(failure);
      }
    })();
  }

  stop(): void {
    this.stopped = true;
    this.watch?.stop();
  }
}

/**
 * MemberAgent: how a shard node or replica joins the cluster and proves it is alive.
 *
 * It writes its MemberRecord to kvf_members (key = nodeId) with kv.create, then re-writes it
 * every heartbeatIntervalMs with seq + 1 as a compare-and-set on its own last revision. The
 * coordinator leader measures liveness as "a new revision observed recently" on its own clock.
 *
 * Fencing: when the leader declares the node dead it deletes the key (CAS on the revision it last
 * saw). The agent's next heartbeat CAS then fails; the agent treats itself as fenced, picks a new
 * incarnation and re-joins as a fresh member (the coordinator bumps the epoch of every cell the
 * node was in, so a node that was paused cannot act on its old assignments). `onFenced` tells the
 * owning actor, which must drop whatever it believed about its placement.
 */
import { randomBytes } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import { KvfError } from '../errors.js';
import type { Logger } from '../log.js';
import { assertNodeId, encodeRecord, decodeMemberRecord, type MemberRecord } from '../protocol/cluster.js';
import { getLive, isWrongLastSequence } from './kv-util.js';

/** Re-join writes tried (with a short backoff) before a refused create counts as a taken id. */
const REJOIN_ATTEMPTS_MAX = 5;

export interface MemberAgentOptions {
  /** Interval between heartbeats. @default 1000 (config coordinator.heartbeatIntervalMs) */
  heartbeatIntervalMs?: number;
  /** Re-join with a new incarnation after being fenced. @default true */
  rejoinOnFence?: boolean;
  /** Called after the agent was fenced (and, with rejoinOnFence, re-joined). */
  onFenced?: (e: { previousIncarnation: string; incarnation: string; reason: string }) => void;
  /** Called when heartbeats stop for good (another live process holds this nodeId). */
  onError?: (err: KvfError) => void;
  /** Source of incarnations. @default 12 random bytes, base64url */
  newIncarnation?: () => string;
  logger?: Logger;
}

export const MEMBER_AGENT_DEFAULTS = { heartbeatIntervalMs: 1000, rejoinOnFence: true } as const;

/** What the owning actor provides; the agent fills incarnation, seq and startedAt. */
export type MemberRecordInput = Omit<MemberRecord, 'incarnation' | 'seq' | 'startedAt'> &
  Partial<Pick<MemberRecord, 'incarnation' | 'startedAt'>>;

/** Fields that may change during a member's life. */
export type MemberRecordUpdate = Partial<
  Pick<MemberRecord, 'capacityBytes' | 'usedBytes' | 'models' | 'ucxAddress' | 'labels'>
>;

type AgentState = 'new' | 'running' | 'stopped' | 'failed';

const defaultIncarnation = (): string => randomBytes(12).toString('base64url');

export class MemberAgent {
  private readonly intervalMs: number;
  private readonly newIncarnation: () => string;
  private record: MemberRecord | undefined;
  private revision = 0;
  private state: AgentState = 'new';
  private timer: NodeJS.Timeout | undefined;
  /** Writes are serialised: a heartbeat never races an update or the stop delete. */
  private chain: Promise<void> = Promise.resolve();
  /** Set between being fenced and re-joining successfully. */
  private pendingRejoin: { previousIncarnation: string; reason: string } | undefined;
  /** performance.now() of the last write that succeeded (join or heartbeat): the node's own view of its liveness. */
  private lastOkMs = 0;

  constructor(
    private readonly kv: KV,
    private readonly opts: MemberAgentOptions = {},
  ) {
    this.intervalMs = opts.heartbeatIntervalMs ?? MEMBER_AGENT_DEFAULTS.heartbeatIntervalMs;
    if (!(this.intervalMs >= 1)) throw new KvfError('CONFIG_INVALID', 'heartbeatIntervalMs must be >= 1');
    this.newIncarnation = opts.newIncarnation ?? defaultIncarnation;
  }

  /** Join: create the key (fails with CONFIG_INVALID when another live process holds this nodeId). */
  async start(input: MemberRecordInput): Promise<MemberRecord> {
    if (this.state !== 'new') throw new Error('MemberAgent.start called twice');
    assertNodeId(input.nodeId);
    const record: MemberRecord = {
      ...input,
      incarnation: input.incarnation ?? this.newIncarnation(),
      startedAt: input.startedAt ?? Date.now(),
      seq: 0,
    };
    this.record = record;
    await this.join(record);
    this.lastOkMs = performance.now();
    this.state = 'running';
    this.schedule();
    return { ...record };
  }

  /** Change fields and write them now (not only at the next heartbeat). */
  update(partial: MemberRecordUpdate): Promise<void> {
    if (this.state !== 'running' || this.record === undefined) {
      return Promise.reject(new KvfError('CLOSED', `member agent is ${this.state}`));
    }
    this.record = { ...this.record, ...partial };
    return this.enqueue(() => this.beat());
  }

  /** Stop heartbeating and delete the key (only if it is still ours: CAS on our revision). */
  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    const wasRunning = this.state === 'running';
    this.state = 'stopped';
    if (this.timer) clearTimeout(this.timer);
    await this.chain;
    if (!wasRunning || this.record === undefined) return;
    try {
      await this.kv.delete(this.record.nodeId, { previousSeq: this.revision });
    } catch (err) {
      // Already deleted by the leader or taken by a newer process: nothing of ours to remove.
      if (!isWrongLastSequence(err)) throw err;
    }
  }

  /**
   * Stop heartbeating without deleting the key: what a crashed or hung process looks like to the
   * coordinator, which declares the node dead after nodeDeadAfterMs.
   */
  halt(): void {
    this.state = 'stopped';
    if (this.timer) clearTimeout(this.timer);
  }

  /** The record as last written. */
  current(): MemberRecord | undefined {
    return this.record ? { ...this.record } : undefined;
  }

  get incarnation(): string | undefined {
    return this.record?.incarnation;
  }

  get running(): boolean {
    return this.state === 'running';
  }

  /**
   * Milliseconds since the last successful heartbeat (or join), on the monotonic clock, which
   * keeps counting while the process is stopped (SIGSTOP): a resumed node sees how long it was
   * silent before it believes anything it knew.
   */
  silentMs(): number {
    return performance.now() - this.lastOkMs;
  }

  /** True between being fenced and re-joining. */
  get rejoining(): boolean {
    return this.pendingRejoin !== undefined;
  }

  /** Heartbeat now (a node that suspects it was silent too long); resolves when written or fenced. */
  beatNow(): Promise<void> {
    if (this.state !== 'running') return Promise.resolve();
    return this.enqueue(() => this.beat());
  }

  private enqueue(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private schedule(): void {
    if (this.state !== 'running') return;
    this.timer = setTimeout(() => {
      void this.enqueue(() => this.beat())
        .catch((err: unknown) => this.opts.logger?.warn('heartbeat failed', { err }))
        .finally(() => this.schedule());
    }, this.intervalMs);
    this.timer.unref();
  }

  private async join(record: MemberRecord): Promise<void> {
    try {
      this.revision = await this.kv.create(record.nodeId, encodeRecord(record));
    } catch (err) {
      if (!isWrongLastSequence(err)) throw err;
      throw new KvfError('CONFIG_INVALID', `node id ${record.nodeId} is held by another live member`, {
        cause: err,
        details: { nodeId: record.nodeId },
      });
    }
  }

  /**
   * The re-join write. A refused create does not always mean another member holds the id: with
   * replicated buckets a read may come from a replica that has not applied the coordinator's
   * delete yet, and a heartbeat of ours sent before the fence may land late. So: re-read, take
   * over our own previous incarnation's record by CAS on its revision, retry an absent key a few
   * times, and give up (CONFIG_INVALID) only when a different live incarnation holds the key.
   */
  private async rejoinWrite(fresh: MemberRecord, previousIncarnation: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        this.revision = await this.kv.create(fresh.nodeId, encodeRecord(fresh));
        return;
      } catch (err) {
        if (!isWrongLastSequence(err)) throw err;
      }
      const entry = await getLive(this.kv, fresh.nodeId);
      let holder: string | undefined;
      if (entry !== undefined) {
        try {
          holder = decodeMemberRecord(entry.value).incarnation;
        } catch {
          holder = undefined;
        }
        if (holder === previousIncarnation || holder === fresh.incarnation) {
          try {
            this.revision = await this.kv.update(fresh.nodeId, encodeRecord(fresh), entry.revision);
            return;
          } catch (err) {
            if (!isWrongLastSequence(err)) throw err;
          }
        }
      }
      if (attempt >= REJOIN_ATTEMPTS_MAX || (entry !== undefined && holder !== previousIncarnation)) {
        await this.join(fresh); // the strict path: CONFIG_INVALID when someone else holds the id
        return;
      }
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }

  private async beat(): Promise<void> {
    if (this.state !== 'running' || this.record === undefined) return;
    if (this.pendingRejoin !== undefined) return this.rejoin();
    this.record = { ...this.record, seq: this.record.seq + 1 };
    try {
      this.revision = await this.kv.update(this.record.nodeId, encodeRecord(this.record), this.revision);
      this.lastOkMs = performance.now();
    } catch (err) {
      if (!isWrongLastSequence(err)) throw err;
      await this.recoverFromLostCas();
    }
  }

  /**
   * The CAS lost. Either an earlier write that timed out did land (the key holds our own
   * incarnation: adopt its revision), or the key was deleted or taken: we are fenced.
   */
  private async recoverFromLostCas(): Promise<void> {
    const rec = this.record;
    if (rec === undefined) return;
    const entry = await getLive(this.kv, rec.nodeId);
    if (entry !== undefined) {
      let seen: MemberRecord | undefined;
      try {
        seen = decodeMemberRecord(entry.value);
      } catch {
        seen = undefined;
      }
      if (seen?.incarnation === rec.incarnation) {
        this.revision = entry.revision;
        this.lastOkMs = performance.now();
        return;
      }
    }
    await this.fenced(entry === undefined ? 'member key deleted (declared dead)' : 'member key taken over');
  }

  private async fenced(reason: string): Promise<void> {
    const old = this.record;
    if (old === undefined) return;
    this.opts.logger?.warn('member fenced', { nodeId: old.nodeId, incarnation: old.incarnation, reason });
    if (this.opts.rejoinOnFence === false) {
      this.state = 'failed';
      this.opts.onFenced?.({ previousIncarnation: old.incarnation, incarnation: old.incarnation, reason });
      return;
    }
    this.record = { ...old, incarnation: this.newIncarnation(), seq: 0, startedAt: Date.now() };
    this.pendingRejoin = { previousIncarnation: old.incarnation, reason };
    await this.rejoin();
  }

  /** Join as the fresh incarnation; a transient failure is retried at the next heartbeat. */
  private async rejoin(): Promise<void> {
    const fresh = this.record;
    const pending = this.pendingRejoin;
    if (fresh === undefined || pending === undefined) return;
    try {
      await this.rejoinWrite(fresh, pending.previousIncarnation);
    } catch (err) {
      if (!(err instanceof KvfError && err.codeName === 'CONFIG_INVALID')) throw err;
      this.state = 'failed';
      this.opts.logger?.error('member cannot re-join', { nodeId: fresh.nodeId, err });
      this.opts.onError?.(err);
      return;
    }
    this.pendingRejoin = undefined;
    this.lastOkMs = performance.now();
    this.opts.onFenced?.({ ...pending, incarnation: fresh.incarnation });
  }
}

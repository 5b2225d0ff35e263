/**
 * Typed calls to shard-node endpoints, classified for the flows: a refusal (STALE_EPOCH,
 * NOT_OWNER, NO_PLACEMENT: refresh placement and retry) is told apart from a failure (timeout,
 * unreachable, anything else: the node's blocks count as missing), and neither throws.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { isKvfError, KvfError, toKvfError } from '../errors.js';
import { request } from '../protocol/codec.js';
import type { ShardOp } from '../protocol/cluster.js';
import { shardSubjectFor } from '../tenancy.js';
import type { Schema } from '../protocol/schema.js';
import { isLinkUp } from './nats-link.js';

export type ShardCallResult<T> =
  { kind: 'ok'; reply: T } | { kind: 'refused'; error: KvfError } | { kind: 'failed'; error: KvfError };

/** Errors after which a refreshed placement table may route the blocks elsewhere. */
export function isRefusal(err: unknown): boolean {
  return isKvfError(err, 'STALE_EPOCH') || isKvfError(err, 'NOT_OWNER') || isKvfError(err, 'NO_PLACEMENT');
}

export async function callShard<T>(
  nc: NatsConnection,
  nodeId: string,
  op: ShardOp,
  body: Record<string, unknown>,
  schema: Schema<T>,
  timeoutMs: number,
): Promise<ShardCallResult<T>> {
  if (!isLinkUp(nc)) {
    const error = new KvfError(
      'TRANSPORT',
      `NATS is disconnected (reconnecting): ${op} to ${nodeId} not sent`,
      {
        details: { nodeId, op },
      },
    );
    return { kind: 'failed', error };
  }
  try {
    return {
      kind: 'ok',
      reply: await request(nc, shardSubjectFor(nc, nodeId, op), body, schema, { timeoutMs }),
    };
  } catch (err) {
    const e = toKvfError(err);
    return isRefusal(e) ? { kind: 'refused', error: e } : { kind: 'failed', error: e };
  }
}

/**
 * Fire-and-forget lease releases with bounded concurrency and a bounded queue: a get never waits
 * for them, and a release that is dropped or fails only means the lease runs out on its own.
 */
export class LeaseReleaser {
  private readonly queue: { nodeId: string; leaseIds: string[] }[] = [];
  private inFlight = 0;
  private idle: (() => void)[] = [];
  dropped = 0;

  constructor(
    private readonly send: (nodeId: string, leaseIds: string[]) => Promise<unknown>,
    private readonly concurrencyMax: number,
    private readonly queueMax: number,
  ) {}

  release(nodeId: string, leaseIds: string[]): void {
    if (leaseIds.length === 0) return;
    if (this.queue.length >= this.queueMax) {
      this.dropped++;
      return;
    }
    this.queue.push({ nodeId, leaseIds });
    this.pump();
  }

  /** Resolves when nothing is queued or in flight (or after timeoutMs). */
  drain(timeoutMs: number): Promise<void> {
    if (this.inFlight === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.idle.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private pump(): void {
    while (this.inFlight < this.concurrencyMax && this.queue.length > 0) {
      const job = this.queue.shift() as { nodeId: string; leaseIds: string[] };
      this.inFlight++;
      this.send(job.nodeId, job.leaseIds)
        .catch(() => undefined)
        .finally(() => {
          this.inFlight--;
          this.pump();
          if (this.inFlight === 0 && this.queue.length === 0) {
            const waiters = this.idle;
            this.idle = [];
            for (const w of waiters) w();
          }
        });
    }
  }
}

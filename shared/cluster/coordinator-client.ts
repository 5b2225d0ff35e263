/**
 * Client for the coordinator's endpoints (SDK, CLI, shard nodes). Only the leader serves them, so
 * during a handover a request finds no responder or times out; every call here is idempotent or
 * read-only, so the client retries those two outcomes with capped, jittered backoff until
 * `retryForMs` has passed. Remote typed errors (PROFILE_CONFLICT, ...) are thrown at once.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { isKvfError, type KvfError } from '../errors.js';
import type { ModelProfile } from '../profiles.js';
import { request } from '../protocol/codec.js';
import {
  COORD_SUBJECTS,
  placementReplySchema,
  registerModelReplySchema,
  statusReplySchema,
  type PlacementReply,
  type RegisterModelReply,
  type StatusReply,
} from '../protocol/cluster.js';
import type { Schema } from '../protocol/schema.js';

export interface CoordinatorClientOptions {
  /** Per-attempt timeout. @default 2000 */
  requestTimeoutMs?: number;
  /** Keep retrying no-responder / timeout outcomes for this long in total. @default 15000 */
  retryForMs?: number;
  /** First backoff delay; doubles per attempt up to retryDelayMaxMs, with jitter. @default 50 */
  retryDelayMs?: number;
  /** @default 1000 */
  retryDelayMaxMs?: number;
}

export const COORDINATOR_CLIENT_DEFAULTS = {
  requestTimeoutMs: 2000,
  retryForMs: 15_000,
  retryDelayMs: 50,
  retryDelayMaxMs: 1000,
} as const;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function retryable(err: unknown): err is KvfError {
  return isKvfError(err, 'PEER_UNREACHABLE') || isKvfError(err, 'TIMEOUT') || isKvfError(err, 'NOT_LEADER');
}

export class CoordinatorClient {
  private readonly o: Required<CoordinatorClientOptions>;

  constructor(
    private readonly nc: NatsConnection,
    opts: CoordinatorClientOptions = {},
  ) {
    this.o = { ...COORDINATOR_CLIENT_DEFAULTS, ...opts };
  }

  /** Register a profile. Idempotent: the same profile again returns created=false. Throws
   *  INVALID_PROFILE or PROFILE_CONFLICT (a different profile under the same id). */
  registerModel(profile: ModelProfile | Record<string, unknown>): Promise<RegisterModelReply> {
    return this.call(COORD_SUBJECTS.registerModel, { profile }, registerModelReplySchema);
  }

  /** The placement table as the leader sees it (for status and debugging; the SDK watches KV). */
  placement(): Promise<PlacementReply> {
    return this.call(COORD_SUBJECTS.placement, {}, placementReplySchema);
  }

  status(): Promise<StatusReply> {
    return this.call(COORD_SUBJECTS.status, {}, statusReplySchema);
  }

  private async call<T>(subject: string, body: Record<string, unknown>, schema: Schema<T>): Promise<T> {
    const deadline = Date.now() + this.o.retryForMs;
    let delay = this.o.retryDelayMs;
    for (;;) {
      try {
        return await request(this.nc, subject, body, schema, { timeoutMs: this.o.requestTimeoutMs });
      } catch (err) {
        if (!retryable(err) || Date.now() + delay >= deadline) throw err;
      }
      await sleep(delay / 2 + Math.random() * (delay / 2));
      delay = Math.min(delay * 2, this.o.retryDelayMaxMs);
    }
  }
}

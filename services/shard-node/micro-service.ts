/**
 * NATS micro-service registration (the `$SRV` convention of nats.go/nats.js `services`), hand
 * rolled so that `nats micro ls/info/stats` and any discovery tooling see shard nodes without an
 * extra dependency. The node answers, with plain JSON (no kvfabric envelope, as tooling expects):
 *
 *   $SRV.<VERB>, $SRV.<VERB>.<name>, $SRV.<VERB>.<name>.<id>     VERB in PING, INFO, STATS
 *
 * Endpoints are per node (kvf.v1.shard.<nodeId>.<op>) and subscribed without a queue group, so
 * `queue_group` is omitted. Endpoint statistics are kept here (EndpointStats) and fed by the node's request wrapper;
 * times are nanoseconds as the schema requires.
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';

export const MICRO_TYPES = {
  ping: 'io.nats.micro.v1.ping_response',
  info: 'io.nats.micro.v1.info_response',
  stats: 'io.nats.micro.v1.stats_response',
} as const;

export interface EndpointStatsSnapshot {
  name: string;
  subject: string;
  num_requests: number;
  num_errors: number;
  last_error: string;
  processing_time: number;
  average_processing_time: number;
}

/** Counters of one endpoint. num_requests counts every reply, ok or error. */
export class EndpointStats {
  private requests = 0;
  private errors = 0;
  private lastError = '';
  private processingNs = 0;

  constructor(
    readonly name: string,
    readonly subject: string,
  ) {}

  recordOk(): void {
    this.requests++;
  }

  recordError(code: number, message: string): void {
    this.requests++;
    this.errors++;
    this.lastError = `${code}:${message}`.slice(0, 256);
  }

  recordTime(ns: number): void {
    this.processingNs += ns;
  }

  snapshot(): EndpointStatsSnapshot {
    return {
      name: this.name,
      subject: this.subject,
      num_requests: this.requests,
      num_errors: this.errors,
      last_error: this.lastError,
      processing_time: this.processingNs,
      average_processing_time: this.requests === 0 ? 0 : Math.round(this.processingNs / this.requests),
    };
  }
}

export interface MicroServiceOptions {
  /** Service name (`kvfabric-shard`): tooling groups instances by it. */
  name: string;
  /** Instance id: unique among instances of the service (the node id). */
  id: string;
  /** Semantic version of the service. */
  version: string;
  description: string;
  metadata: Record<string, string>;
  endpoints: readonly EndpointStats[];
  /** Wall clock for the `started` field. @default Date.now */
  wallMs?: () => number;
}

const enc = new TextEncoder();

export class MicroService {
  private readonly subs: Subscription[] = [];
  private readonly started: string;

  constructor(
    private readonly nc: NatsConnection,
    private readonly o: MicroServiceOptions,
  ) {
    this.started = new Date((o.wallMs ?? Date.now)()).toISOString();
  }

  /** Subscribe to the nine discovery subjects. */
  start(): void {
    const verbs = { PING: () => this.ping(), INFO: () => this.info(), STATS: () => this.stats() };
    for (const [verb, body] of Object.entries(verbs)) {
      for (const subject of [
        `$SRV.${verb}`,
        `$SRV.${verb}.${this.o.name}`,
        `$SRV.${verb}.${this.o.name}.${this.o.id}`,
      ]) {
        this.subs.push(
          this.nc.subscribe(subject, {
            callback: (err, msg) => {
              if (err || !msg.reply) return;
              try {
                msg.respond(enc.encode(JSON.stringify(body())));
              } catch {
                // connection closing: discovery simply misses this node
              }
            },
          }),
        );
      }
    }
  }

  stop(): void {
    for (const s of this.subs.splice(0)) s.unsubscribe();
  }

  private base(type: string): Record<string, unknown> {
    return { type, name: this.o.name, id: this.o.id, version: this.o.version, metadata: this.o.metadata };
  }

  ping(): Record<string, unknown> {
    return this.base(MICRO_TYPES.ping);
  }

  info(): Record<string, unknown> {
    return {
      ...this.base(MICRO_TYPES.info),
      description: this.o.description,
      endpoints: this.o.endpoints.map((e) => ({
        name: e.name,
        subject: e.subject,
        metadata: null,
      })),
    };
  }

  stats(): Record<string, unknown> {
    return {
      ...this.base(MICRO_TYPES.stats),
      started: this.started,
      endpoints: this.o.endpoints.map((e) => e.snapshot()),
    };
  }
}

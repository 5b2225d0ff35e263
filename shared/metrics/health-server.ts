/**
 * The operations port every actor serves on metrics.host:metrics.port (0 = no listener):
 *
 * - `GET /metrics`: Prometheus text format (./registry.ts).
 * - `GET /healthz`: 200 `{"status":"ok"}` while the process runs and its event loop answers.
 *   Never depends on NATS or Redis: a restart would not fix them.
 * - `GET /readyz`: 200 `{"status":"ready"}` when every readiness check passes; otherwise 503
 *   `{"status":"not ready","reasons":[...]}`. From the moment SIGTERM starts the drain it is 503,
 *   so an orchestrator stops sending work before the actor stops taking it.
 *
 * node:http only: three GET routes do not need a framework.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../log.js';
import type { KvfMetrics } from './registry.js';

/** A readiness check: a reason string when not ready, undefined when ready. */
export type ReadyCheck = () => string | undefined;

export class Readiness {
  private readonly checks = new Map<string, ReadyCheck>();
  private drainingSince: number | undefined;

  /** Add (or replace) a named check. */
  add(name: string, check: ReadyCheck): this {
    this.checks.set(name, check);
    return this;
  }

  /** Not ready from now on (SIGTERM): no check can make it ready again. */
  setDraining(): void {
    this.drainingSince ??= Date.now();
  }

  get draining(): boolean {
    return this.drainingSince !== undefined;
  }

  /** Why the process is not ready; empty when it is. A throwing check counts as not ready. */
  reasons(): string[] {
    const out: string[] = [];
    if (this.drainingSince !== undefined) out.push('draining (SIGTERM received)');
    for (const [name, check] of this.checks) {
      let r: string | undefined;
      try {
        r = check();
      } catch (err) {
        r = `${name} check failed: ${(err as Error).message}`;
      }
      if (r !== undefined) out.push(r);
    }
    return out;
  }

  ready(): boolean {
    return this.reasons().length === 0;
  }
}

/**
 * Follows a NATS connection's status events: ready while connected, not ready while it is
 * disconnected (reconnecting) or after it closed.
 */
export function natsReadyCheck(nc: NatsConnection): ReadyCheck {
  let connected = true;
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') connected = false;
      else if (s.type === 'reconnect') connected = true;
    }
  })().catch(() => undefined);
  return () => {
    if (nc.isClosed()) return 'nats connection closed';
    return connected ? undefined : 'nats disconnected (reconnecting)';
  };
}

export interface OpsServerOptions {
  host: string;
  /** 0 = no listener (startOpsServer returns undefined). */
  port: number;
  readiness: Readiness;
  metrics?: KvfMetrics;
  logger?: Logger;
}

export interface OpsServer {
  readonly port: number;
  /** `http://host:port` */
  readonly url: string;
  close(): Promise<void>;
}

function send(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

const JSON_TYPE = 'application/json';

/** Listen on host:port; undefined when port is 0 (disabled). Rejects when the port is taken. */
export async function startOpsServer(o: OpsServerOptions): Promise<OpsServer | undefined> {
  if (o.port === 0) return undefined;
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, JSON_TYPE, '{"error":"method not allowed"}');
      return;
    }
    if (url === '/healthz') {
      send(res, 200, JSON_TYPE, '{"status":"ok"}');
    } else if (url === '/readyz') {
      const reasons = o.readiness.reasons();
      if (reasons.length === 0) send(res, 200, JSON_TYPE, '{"status":"ready"}');
      else send(res, 503, JSON_TYPE, JSON.stringify({ status: 'not ready', reasons }));
    } else if (url === '/metrics' && o.metrics !== undefined) {
      o.metrics.text().then(
        (text) => send(res, 200, o.metrics?.registry.contentType ?? 'text/plain', text),
        (err: unknown) => {
          o.logger?.warn('metrics collection failed', { err });
          send(res, 500, 'text/plain', 'metrics collection failed\n');
        },
      );
    } else {
      send(res, 404, JSON_TYPE, '{"error":"not found"}');
    }
  });
  // A scrape must not keep a stopping process alive.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  o.logger?.info('ops port listening', { host: o.host, port, paths: ['/metrics', '/healthz', '/readyz'] });
  return {
    port,
    url: `http://${host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

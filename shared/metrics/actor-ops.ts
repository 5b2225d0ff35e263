/**
 * What an actor's main.ts needs for operations, in one object: the metrics registry, the
 * readiness checks, the ops port (metrics.host:metrics.port; 0 = none) and the first step of a
 * graceful SIGTERM: flip /readyz to 503 and keep serving for shutdown.unreadyDelayMs, so whatever
 * routes work by readiness stops sending it before the actor stops taking it. The actor then
 * stops intake and lets in-flight requests finish within shutdown.drainTimeoutMs.
 */
import type { KvfConfig } from '../config.js';
import { KvfError } from '../errors.js';
import type { Logger } from '../log.js';
import { Readiness, startOpsServer, type OpsServer } from './health-server.js';
import { createMetrics, type KvfMetrics } from './registry.js';

export interface ActorOps {
  readonly metrics: KvfMetrics;
  readonly readiness: Readiness;
  /** Undefined when metrics.port is 0. */
  readonly server: OpsServer | undefined;
  /** SIGTERM step 1: not ready from now on; resolves after shutdown.unreadyDelayMs. */
  beginDrain(): Promise<void>;
  close(): Promise<void>;
}

export interface ActorOpsOptions {
  /** @default true */
  processMetrics?: boolean;
}

/**
 * Start the ops port for an actor. A taken port is a start failure (KvfError CONFIG_INVALID with
 * the address): an actor that cannot be scraped or probed must not look healthy.
 */
export async function startActorOps(
  config: KvfConfig,
  log: Logger,
  opts: ActorOpsOptions = {},
): Promise<ActorOps> {
  const metrics = createMetrics(opts.processMetrics === false ? { processMetrics: false } : {});
  const readiness = new Readiness();
  let server: OpsServer | undefined;
  try {
    server = await startOpsServer({
      host: config.metrics.host,
      port: config.metrics.port,
      readiness,
      metrics,
      logger: log,
    });
  } catch (err) {
    throw new KvfError(
      'CONFIG_INVALID',
      `metrics.port: cannot listen on ${config.metrics.host}:${config.metrics.port} (${(err as Error).message})`,
      { cause: err },
    );
  }
  const unreadyDelayMs = config.shutdown.unreadyDelayMs;
  return {
    metrics,
    readiness,
    server,
    async beginDrain() {
      if (readiness.draining) return;
      readiness.setDraining();
      log.info('draining: /readyz reports not ready', { unreadyDelayMs });
      if (unreadyDelayMs > 0) await new Promise((r) => setTimeout(r, unreadyDelayMs));
    },
    close: async () => server?.close(),
  };
}

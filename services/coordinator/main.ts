/**
 * Entry point of the coordinator actor (`kvfabric coordinator --config <file>`). Thin on purpose:
 * reads the config, connects to NATS, runs the Coordinator state machine and, on SIGTERM/SIGINT,
 * resigns the leader lease (if held, so a standby takes over at once) and closes.
 */
import os from 'node:os';
import { connect, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';
import type { KvfConfig } from '../../shared/config.js';
import { PrefixIndex } from '../../shared/index/prefix-index.js';
import { bootActor, watchShutdown } from '../../shared/process.js';
import { startActorOps, type ActorOps } from '../../shared/metrics/actor-ops.js';
import { natsReadyCheck } from '../../shared/metrics/health-server.js';
import { watchPlacementMetrics } from '../../shared/metrics/placement-watch.js';
import { natsConnectOptions } from '../../shared/nats-connect.js';
import { redisOptions } from '../../shared/redis-options.js';
import { Coordinator } from './coordinator.js';

const WHAT =
  'Runs a coordinator: membership, the placement table and the leader lease (one leads, others wait).';

/** NATS connection options from the config: auth, TLS, reconnect forever (shared/nats-connect.ts). */
export function natsOptions(cfg: KvfConfig, name: string): ConnectionOptions {
  return natsConnectOptions(cfg, name);
}

/** A coordinator id unique per process unless configured: host name and pid. */
export function defaultCoordinatorId(): string {
  return `${os
    .hostname()
    .replace(/[^A-Za-z0-9_-]/g, '-')
    .slice(0, 48)}-${process.pid}`;
}

export async function main(argv: string[]): Promise<number> {
  const shutdown = watchShutdown(); // before any output: see watchShutdown
  const boot = bootActor('coordinator', WHAT, argv);
  if (typeof boot === 'number') {
    shutdown.dispose();
    return boot;
  }
  const { config, log } = boot;
  const id = config.coordinator.id ?? defaultCoordinatorId();
  let nc: NatsConnection;
  let ops: ActorOps;
  try {
    ops = await startActorOps(config, log);
  } catch (err) {
    log.error('cannot start the ops port', { err });
    shutdown.dispose();
    return 1;
  }
  try {
    nc = await connect(natsOptions(config, `kvf-coordinator-${id}`));
  } catch (err) {
    log.error('cannot connect to NATS', { servers: config.nats.servers, err });
    await ops.close();
    shutdown.dispose();
    return 1;
  }
  let started = false;
  ops.readiness.add('nats', natsReadyCheck(nc)).add('session', () => (started ? undefined : 'starting'));
  // The leader rebuilds the index from the shards when Redis comes back empty; without Redis the
  // coordinator works as before (checks simply find it unreachable).
  const index = new PrefixIndex({
    url: config.redis.url,
    keyPrefix: config.redis.keyPrefix,
    ttlSeconds: config.redis.indexTtlSeconds,
    ...(config.redis.password !== undefined ? { password: config.redis.password } : {}),
    redis: redisOptions(config),
  });
  let coordinator: Coordinator;
  try {
    coordinator = await Coordinator.start(nc, {
      id,
      spec: { ...config.partition },
      replicationFactor: config.coordinator.replicationFactor,
      heartbeatIntervalMs: config.coordinator.heartbeatIntervalMs,
      nodeDeadAfterMs: config.coordinator.nodeDeadAfterMs,
      leaderLeaseTtlMs: config.coordinator.leaderLeaseTtlMs,
      buckets: { replicas: config.nats.jetstreamReplicas ?? 1 },
      index,
      indexCheckIntervalMs: config.coordinator.indexCheckIntervalMs,
      logger: log,
    });
  } catch (err) {
    log.error('coordinator failed to start', { err });
    await index.close();
    await nc.close();
    await ops.close();
    shutdown.dispose();
    return 1;
  }
  started = true;
  const placementWatch = await watchPlacementMetrics(nc, ops.metrics, id, log).catch((err: unknown) => {
    log.warn('placement metrics unavailable', { err });
    return undefined;
  });
  log.info('started', { id });
  // A signal that arrived during startup has already resolved this: we stop right away.
  const signal = await shutdown.signal;
  log.info('stopping', { signal, leader: coordinator.isLeader() });
  await ops.beginDrain();
  placementWatch?.close();
  await coordinator.stop();
  await index.close();
  // Requests already received are answered (nc.drain), within shutdown.drainTimeoutMs.
  let timer: NodeJS.Timeout | undefined;
  const drained = await Promise.race([
    nc.drain().then(
      () => true,
      () => false,
    ),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), config.shutdown.drainTimeoutMs))),
  ]);
  clearTimeout(timer);
  if (!drained) {
    log.warn('NATS drain did not finish in time; closing', {
      drainTimeoutMs: config.shutdown.drainTimeoutMs,
    });
    await nc.close();
  }
  await ops.close();
  return 0;
}

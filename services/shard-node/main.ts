/**
 * Entry point of the shard-node actor (`kvfabric shard-node --config <file>`). Thin on purpose: it
 * reads the config, opens the transports (NATS, Redis index, one UCX worker per process), runs a
 * ShardNode (./shard-node.ts) and shuts it down on SIGTERM/SIGINT: stop taking requests, let
 * in-flight ones finish (bounded by drainTimeoutMs), delete the member record, close the arenas,
 * UCX, NATS and Redis, exit 0. A failed start exits 1 after closing what was opened.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { packageRoot, UcxWorker } from '../../native/index.js';
import type { KvfConfig } from '../../shared/config.js';
import { PrefixIndex } from '../../shared/index/prefix-index.js';
import type { Logger } from '../../shared/log.js';
import type { MemberRole } from '../../shared/protocol/cluster.js';
import { bootActor, watchShutdown } from '../../shared/process.js';
import { startActorOps, type ActorOps } from '../../shared/metrics/actor-ops.js';
import { natsReadyCheck } from '../../shared/metrics/health-server.js';
import { shardNodeSource } from '../../shared/metrics/sources.js';
import { natsConnectOptions as sharedNatsOptions } from '../../shared/nats-connect.js';
import { redisOptions } from '../../shared/redis-options.js';
import { applyUcxNetDevices } from '../../shared/ucx-env.js';
import { ShardNode } from './shard-node.js';

const WHAT = 'Runs a shard node: owns memory arenas and serves allocate/commit/locate/release over NATS.';

/** Bound on closing one transport at shutdown: a wedged peer must not keep the process alive. */
const CLOSE_TIMEOUT_MS = 5000;

/** `shard.id`, else `<hostname>-<pid>` reduced to what a subject token allows. */
export function defaultNodeId(config: KvfConfig): string {
  if (config.shard.id) return config.shard.id;
  const host =
    os
      .hostname()
      .replace(/[^A-Za-z0-9_-]/g, '-')
      .slice(0, 40) || 'node';
  return `${host}-${process.pid}`;
}

function packageVersion(): string | undefined {
  try {
    const pkg = JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as {
      version?: string;
    };
    return pkg.version;
  } catch {
    return undefined;
  }
}

/** Auth, TLS and reconnect-forever options: shared/nats-connect.ts. */
export function natsConnectOptions(config: KvfConfig, name: string): Parameters<typeof connect>[0] {
  return sharedNatsOptions(config, name);
}

async function bounded(
  what: string,
  log: Logger,
  p: Promise<unknown> | undefined,
  timeoutMs = CLOSE_TIMEOUT_MS,
): Promise<void> {
  if (p === undefined) return;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      log.warn(`${what} did not close in time`, { timeoutMs });
      resolve();
    }, timeoutMs);
  });
  try {
    await Promise.race([p.catch((err: unknown) => log.warn(`${what} close failed`, { err })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export async function main(argv: string[]): Promise<number> {
  return runNode(argv, 'shard', 'shard-node', WHAT);
}

/**
 * Run a node process: `kvfabric shard-node` (role 'shard') and `kvfabric replica` (role 'replica':
 * never a primary, holds copies of other nodes' cells; services/replica/main.ts).
 */
export async function runNode(
  argv: string[],
  role: MemberRole,
  actor: string,
  what: string,
): Promise<number> {
  const shutdown = watchShutdown(); // before any output: see watchShutdown
  const boot = bootActor(actor, what, argv);
  if (typeof boot === 'number') {
    shutdown.dispose();
    return boot;
  }
  const { config, log } = boot;
  const nodeId = defaultNodeId(config);
  let nc: NatsConnection | undefined;
  let index: PrefixIndex | undefined;
  let ucx: UcxWorker | undefined;
  let node: ShardNode | undefined;
  let ops: ActorOps | undefined;
  let code = 0;
  try {
    ops = await startActorOps(config, log);
    nc = await connect(natsConnectOptions(config, `kvfabric-shard-${nodeId}`));
    index = new PrefixIndex({
      url: config.redis.url,
      keyPrefix: config.redis.keyPrefix,
      ttlSeconds: config.redis.indexTtlSeconds,
      ...(config.redis.password !== undefined ? { password: config.redis.password } : {}),
      redis: redisOptions(config),
    });
    // Not fatal: without Redis evictions only leave stale index entries (a shortened hit).
    if (!(await index.ready(5000))) log.warn('redis not reachable yet; index removals degrade', {});
    applyUcxNetDevices(config, log);
    ucx = UcxWorker.create({
      ...(config.ucx.transports !== undefined ? { transports: config.ucx.transports } : {}),
      opTimeoutMs: config.ucx.opTimeoutMs,
      syncWaitUs: config.ucx.syncWaitUs,
    });
    node = new ShardNode(
      {
        ...ShardNode.optionsFromConfig(config, nodeId, packageVersion()),
        role,
        drainTimeoutMs: config.shutdown.drainTimeoutMs,
      },
      {
        nc,
        ucx,
        index,
        logger: log,
        metrics: ops.metrics,
      },
    );
    const started = node;
    let serving = false;
    ops.metrics.addSource(shardNodeSource(started));
    ops.readiness
      .add('started', () => (serving ? undefined : 'starting'))
      .add('nats', natsReadyCheck(nc))
      .add('arenas', () => (started.models.size > 0 ? undefined : 'no arena open'))
      .add('placement', () => (started.placement?.current() ? undefined : 'placement table not known yet'));
    await node.start();
    serving = true;
    log.info('ready', { nodeId, role, pid: process.pid });
    const signal = await shutdown.signal;
    log.info('stopping', { signal });
    await ops.beginDrain(); // /readyz 503 first, then stop taking requests
  } catch (err) {
    log.error('shard node failed', { nodeId, err });
    shutdown.dispose();
    code = 1;
  }
  // stop() bounds its own drain and index flush (drainTimeoutMs each); allow for both.
  await bounded('shard node', log, node?.stop(), 3 * CLOSE_TIMEOUT_MS);
  await bounded('ucx worker', log, ucx?.close());
  await bounded('nats', log, nc?.drain());
  await bounded('redis', log, index?.close());
  await bounded('ops port', log, ops?.close());
  log.info('stopped', { nodeId, code });
  return code;
}

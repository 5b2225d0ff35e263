/**
 * A real local cluster as child processes: nats-server (JetStream) and redis-server on free
 * loopback ports (unless given), then coordinator(s) and shard nodes started exactly as an
 * operator would, `node bin/kvfabric.js coordinator|shard-node`, configured through KVFABRIC_*
 * environment variables. Used by `kvfabric up`, SDK integration tests and chaos tests.
 *
 * Needs the compiled CLI (dist/, `npm run build:ts`) and the native addon for shard nodes.
 * Children die with the parent: stop() terminates them (SIGTERM, then SIGKILL after
 * childStopTimeoutMs), and a process 'exit' hook SIGKILLs any still running. A parent killed
 * with SIGKILL cannot run hooks; its children then outlive it (kill them by pid).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { ensureBuckets } from './cluster/buckets.js';
import { PlacementCache } from './cluster/placement-cache.js';
import { envNameFor, parseConfig, type KvfConfig } from './config.js';
import { KvfError } from './errors.js';
import {
  startNatsCluster,
  startNatsServer,
  startRedisServer,
  type NatsClusterHandle,
  type ServerHandle,
} from './local-servers.js';
import type { PartitionSpec } from './partition.js';
import type { PlacementTable } from './protocol/cluster.js';

export interface LocalClusterOptions {
  /** Shard nodes to start. */
  shards: number;
  /** Arena budget per shard node (shard.arenaBytes). @default config default (256 MiB) */
  arenaBytes?: number;
  /** @default 1 */
  coordinators?: number;
  /** Built-in model ids the shard nodes serve (models.builtin). @default ['tiny-test'] */
  models?: string[];
  /** Extra KVFABRIC_* variables for every child (they win over the ones computed here). */
  env?: Record<string, string>;
  partition?: Partial<PartitionSpec>;
  /** Use this nats-server instead of starting one (it is not stopped by stop()). */
  nats?: ServerHandle;
  /**
   * Start a NATS cluster of this many servers (startNatsCluster) instead of one server; the
   * buckets and the event stream are created with this many JetStream replicas (at most 3) before
   * any actor starts, and every child gets every server URL. Ignored when `nats` is given.
   * @default 1 (a single server)
   */
  natsCluster?: number;
  /** Use this redis-server instead of starting one (it is not stopped by stop()). */
  redis?: ServerHandle;
  /** Every output line of every child, prefixed `[<nodeId>] `. @default dropped */
  log?: (line: string) => void;
  /** coordinator.heartbeatIntervalMs. @default 250 (fast tests) */
  heartbeatIntervalMs?: number;
  /** coordinator.nodeDeadAfterMs. @default 4 x heartbeatIntervalMs */
  nodeDeadAfterMs?: number;
  /** How long start waits for the placement table to list every shard. @default 60000 */
  readyTimeoutMs?: number;
  /** stop(): SIGTERM, then SIGKILL after this long. @default 10000 */
  childStopTimeoutMs?: number;
  /** Node id prefix: shard ids are `<prefix>shard-<n>`, coordinators `<prefix>coord-<n>`. @default '' */
  idPrefix?: string;
}

export interface ChildHandle {
  readonly nodeId: string;
  readonly role: 'coordinator' | 'shard-node';
  readonly pid: number;
  readonly process: ChildProcess;
  /** Send a signal (default SIGTERM). No-op once exited. */
  kill(signal?: NodeJS.Signals): void;
  /** Exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
}

export interface LocalCluster {
  readonly natsUrl: string;
  readonly redisUrl: string;
  /** The configuration the children run with (their own ids aside). */
  readonly config: KvfConfig;
  /** The KVFABRIC_* variables every child gets (ids aside). */
  readonly env: Record<string, string>;
  readonly coordinators: ChildHandle[];
  readonly shards: ChildHandle[];
  /** The NATS cluster this cluster started (natsCluster > 1), for fault injection. */
  readonly natsCluster: NatsClusterHandle | undefined;
  /** The redis-server currently running (undefined between killRedis and restartRedis). */
  redisServer(): ServerHandle | undefined;
  /** Kill the redis-server (default SIGKILL); its data is gone (no persistence). */
  killRedis(signal?: NodeJS.Signals): Promise<void>;
  /** Start an empty redis-server on the same port after killRedis. */
  restartRedis(): Promise<void>;
  /** Start one more coordinator (does not wait for it to campaign). */
  addCoordinator(): Promise<ChildHandle>;
  /** Resolves with the table once it lists `nShards` live shard nodes of this cluster and every cell has a primary. */
  waitForPlacement(nShards: number, timeoutMs?: number): Promise<PlacementTable>;
  /** Start one more shard node (does not wait for placement). */
  addShard(): Promise<ChildHandle>;
  /** Stop children (SIGTERM, then SIGKILL), then the servers this cluster started. Idempotent. */
  stop(): Promise<void>;
}

export const LOCAL_CLUSTER_DEFAULTS = {
  coordinators: 1,
  models: ['tiny-test'],
  heartbeatIntervalMs: 250,
  readyTimeoutMs: 60_000,
  childStopTimeoutMs: 10_000,
} as const;

/** bin/kvfabric.js of this package (source and dist/ sit at different depths). */
function cliPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const up = path.basename(path.dirname(here)) === 'dist' ? ['..', '..'] : ['..'];
  return path.resolve(here, ...up, 'bin', 'kvfabric.js');
}

/** Every running child of every cluster in this process, for the exit hook. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

function forwardLines(child: ChildProcess, prefix: string, log: ((line: string) => void) | undefined): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      if (!log) return;
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        log(`${prefix}${buf.slice(0, nl)}`);
        buf = buf.slice(nl + 1);
      }
    });
    stream.on('end', () => {
      if (log && buf.length > 0) log(`${prefix}${buf}`);
    });
  }
}

function spawnChild(
  role: ChildHandle['role'],
  nodeId: string,
  env: Record<string, string>,
  log: ((line: string) => void) | undefined,
): ChildHandle {
  const child = spawn(process.execPath, [cliPath(), role], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      live.delete(child);
      resolve(code);
    });
    child.once('error', (err) => {
      live.delete(child);
      log?.(`[${nodeId}] spawn failed: ${err.message}`);
      resolve(null);
    });
  });
  forwardLines(child, `[${nodeId}] `, log);
  return {
    nodeId,
    role,
    pid: child.pid ?? -1,
    process: child,
    kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    exited,
  };
}

async function stopChild(h: ChildHandle, timeoutMs: number): Promise<void> {
  h.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const forced = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      h.kill('SIGKILL');
      resolve();
    }, timeoutMs);
  });
  await Promise.race([h.exited.then(() => undefined), forced]);
  clearTimeout(timer);
  await h.exited;
}

/** KVFABRIC_* variables for the children from the options (ids are added per child). */
export function clusterEnv(
  natsUrl: string,
  redisUrl: string,
  opts: LocalClusterOptions,
): Record<string, string> {
  const hb = opts.heartbeatIntervalMs ?? LOCAL_CLUSTER_DEFAULTS.heartbeatIntervalMs;
  const env: Record<string, string> = {
    [envNameFor('nats.servers')]: natsUrl,
    [envNameFor('redis.url')]: redisUrl,
    [envNameFor('models.builtin')]: (opts.models ?? LOCAL_CLUSTER_DEFAULTS.models).join(','),
    [envNameFor('coordinator.heartbeatIntervalMs')]: String(hb),
    [envNameFor('coordinator.nodeDeadAfterMs')]: String(opts.nodeDeadAfterMs ?? 4 * hb),
    [envNameFor('coordinator.leaderLeaseTtlMs')]: String(Math.max(4 * hb, 1000)),
  };
  if (opts.arenaBytes !== undefined) env[envNameFor('shard.arenaBytes')] = String(opts.arenaBytes);
  for (const [k, v] of Object.entries(opts.partition ?? {})) {
    if (v !== undefined) env[envNameFor(`partition.${k}`)] = String(v);
  }
  return { ...env, ...(opts.env ?? {}) };
}

/** Rejects when any of the children exits (never resolves otherwise). */
function firstExit(children: readonly ChildHandle[]): Promise<never> {
  return new Promise<never>((_resolve, reject) => {
    for (const h of children) {
      void h.exited.then((code) => {
        reject(
          new KvfError('INTERNAL', `${h.role} ${h.nodeId} exited during start-up (code ${code})`, {
            details: { nodeId: h.nodeId, code },
          }),
        );
      });
    }
  });
}

export async function startLocalCluster(opts: LocalClusterOptions): Promise<LocalCluster> {
  if (!Number.isInteger(opts.shards) || opts.shards < 0) {
    throw new KvfError('CONFIG_INVALID', `shards must be a non-negative integer, got ${opts.shards}`);
  }
  installExitHook();
  const ownNats = opts.nats === undefined;
  const ownRedis = opts.redis === undefined;
  const natsServers = opts.nats === undefined ? (opts.natsCluster ?? 1) : 1;
  const [natsOne, natsCluster, firstRedis] = await Promise.all([
    opts.nats || natsServers > 1 ? Promise.resolve(opts.nats) : startNatsServer(),
    natsServers > 1 ? startNatsCluster(natsServers) : Promise.resolve(undefined),
    opts.redis ? Promise.resolve(opts.redis) : startRedisServer(),
  ]);
  const nats: { url: string; urls: string[]; stop(): Promise<void> } = natsCluster
    ? { url: natsCluster.url, urls: natsCluster.urls, stop: () => natsCluster.stop() }
    : {
        url: (natsOne as ServerHandle).url,
        urls: [(natsOne as ServerHandle).url],
        stop: () => (natsOne as ServerHandle).stop(),
      };
  let redis: ServerHandle | undefined = firstRedis;
  const redisUrl = firstRedis.url;
  const jsReplicas = Math.min(3, natsServers);
  const env = clusterEnv(nats.url, redisUrl, {
    ...opts,
    env: {
      ...(jsReplicas > 1 ? { [envNameFor('nats.jetstreamReplicas')]: String(jsReplicas) } : {}),
      ...(opts.env ?? {}),
    },
  });
  const config = parseConfig({}, { ...process.env, ...env });
  const prefix = opts.idPrefix ?? '';
  const childStopMs = opts.childStopTimeoutMs ?? LOCAL_CLUSTER_DEFAULTS.childStopTimeoutMs;
  const coordinators: ChildHandle[] = [];
  const shards: ChildHandle[] = [];
  let nextShard = 1;
  let stopped = false;
  let nc: NatsConnection | undefined;
  let placement: PlacementCache | undefined;

  const startShard = (): ChildHandle => {
    const nodeId = `${prefix}shard-${nextShard++}`;
    const h = spawnChild('shard-node', nodeId, { ...env, [envNameFor('shard.id')]: nodeId }, opts.log);
    shards.push(h);
    return h;
  };

  let nextCoord = 1;
  const startCoordinator = (): ChildHandle => {
    const nodeId = `${prefix}coord-${nextCoord++}`;
    const h = spawnChild('coordinator', nodeId, { ...env, [envNameFor('coordinator.id')]: nodeId }, opts.log);
    coordinators.push(h);
    return h;
  };

  const cache = async (): Promise<PlacementCache> => {
    if (placement) return placement;
    nc = await connect({ servers: nats.urls, name: 'kvfabric-local-cluster', maxReconnectAttempts: -1 });
    const b = await ensureBuckets(nc, { replicas: jsReplicas });
    placement = await PlacementCache.open(b.placement);
    return placement;
  };

  const cluster: LocalCluster = {
    natsUrl: nats.url,
    redisUrl,
    config,
    env,
    coordinators,
    shards,
    natsCluster,
    redisServer: () => redis,
    async killRedis(signal: NodeJS.Signals = 'SIGKILL') {
      const r = redis;
      redis = undefined;
      await r?.stop(signal);
    },
    async restartRedis() {
      if (redis !== undefined) return;
      redis = await startRedisServer({ port: Number(new URL(redisUrl).port) });
    },
    addCoordinator() {
      if (stopped) return Promise.reject(new KvfError('CLOSED', 'local cluster is stopped'));
      return Promise.resolve(startCoordinator());
    },
    async waitForPlacement(
      nShards,
      timeoutMs = opts.readyTimeoutMs ?? LOCAL_CLUSTER_DEFAULTS.readyTimeoutMs,
    ) {
      const pc = await cache();
      const ours = (t: PlacementTable): number =>
        shards.filter((s) => Object.hasOwn(t.members, s.nodeId) && t.members[s.nodeId]?.role === 'shard')
          .length;
      const ready = (t: PlacementTable | undefined): t is PlacementTable =>
        t !== undefined && ours(t) >= nShards && Object.values(t.cells).every((c) => c.replicas.length > 0);
      const now = pc.current();
      if (ready(now)) return now;
      return new Promise<PlacementTable>((resolve, reject) => {
        const timer = setTimeout(() => {
          off();
          const t = pc.current();
          reject(
            new KvfError(
              'TIMEOUT',
              `placement did not list ${nShards} shard nodes within ${timeoutMs} ms (epoch ${t?.epoch ?? 0}, members ${Object.keys(t?.members ?? {}).join(',') || 'none'})`,
              { details: { timeoutMs } },
            ),
          );
        }, timeoutMs);
        const off = pc.onChange((t) => {
          if (!ready(t)) return;
          clearTimeout(timer);
          off();
          resolve(t);
        });
      });
    },
    addShard() {
      if (stopped) return Promise.reject(new KvfError('CLOSED', 'local cluster is stopped'));
      return Promise.resolve(startShard());
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      placement?.close();
      await nc?.close().catch(() => undefined);
      // Shards first (they delete their member records), then the coordinators.
      await Promise.all(shards.map((h) => stopChild(h, childStopMs)));
      await Promise.all(coordinators.map((h) => stopChild(h, childStopMs)));
      await Promise.all([ownNats ? nats.stop() : undefined, ownRedis ? redis?.stop() : undefined]);
    },
  };

  try {
    // Buckets first, with the cluster's JetStream replicas: actors that create them later bind.
    if (jsReplicas > 1) await cache();
    const nCoord = opts.coordinators ?? LOCAL_CLUSTER_DEFAULTS.coordinators;
    for (let i = 1; i <= nCoord; i++) startCoordinator();
    for (let i = 0; i < opts.shards; i++) startShard();
    if (opts.shards > 0) {
      // A child that exits during start-up fails the start at once instead of at the timeout.
      await Promise.race([cluster.waitForPlacement(opts.shards), firstExit([...coordinators, ...shards])]);
    }
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

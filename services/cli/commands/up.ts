/**
 * `kvfabric up`: a whole local cluster in one command. nats-server (JetStream) and redis-server on
 * free loopback ports, then coordinator(s) and N shard nodes as child processes
 * (shared/local-cluster.ts), the model registered, a status table and the connection info a
 * worker needs, and a state file (.kvfabric/cluster.json) for `kvfabric status`. With --demo it
 * runs the agent-loop demo (../demo/workload.ts) against the cluster and prints its summary.
 *
 * Runs until SIGINT (Ctrl-C) or SIGTERM, or right after the demo with --once; then stops every
 * child (SIGTERM, SIGKILL after a timeout), removes the servers' temp dirs and the state file,
 * and exits 0. A second Ctrl-C kills at once. Exit 1: start-up failed or the demo served a wrong
 * byte; 2: usage.
 */
import { parseSize, envNameFor } from '../../../shared/config.js';
import { toKvfError } from '../../../shared/errors.js';
import { startLocalCluster, type ChildHandle, type LocalCluster } from '../../../shared/local-cluster.js';
import { startNatsServer, startRedisServer, type ServerHandle } from '../../../shared/local-servers.js';
import { watchShutdown } from '../../../shared/process.js';
import { connect, type KvfClient } from '../../../shared/sdk/mod.js';
import { demoProfile, describeProfile, isBuiltinModel, DEMO_PROFILE } from '../demo/profile.js';
import { DEMO_DEFAULTS, formatSummary, runDemo, type DemoSummary } from '../demo/workload.js';
import { ProgressBar } from '../progress.js';
import { removeState, stateFilePath, writeState, type ClusterState } from './cluster-state.js';
import { gatherStatus } from './status-gather.js';
import { formatStatus, hitRateView } from './status.js';

export const UP_DEFAULTS = {
  shards: 3,
  /** Per shard node and served model (shard.arenaBytes): 256 MiB. */
  arenaBytes: 256 * 1024 ** 2,
  coordinators: 1,
  model: DEMO_PROFILE.id,
  requests: 100,
  /** Child log lines kept to print when start-up fails. */
  logLinesKept: 200,
} as const;

const USAGE = `usage: kvfabric up [--shards N] [--arena SIZE] [--coordinators N] [--model ID]
                   [--demo [--requests N]] [--once] [--state FILE] [--verbose]

Starts nats-server, redis-server, ${UP_DEFAULTS.coordinators} coordinator and N shard nodes on free loopback ports and
keeps them running until Ctrl-C / SIGTERM.

  --shards N        shard nodes (default ${UP_DEFAULTS.shards})
  --arena SIZE      arena per shard node and served model, e.g. 256MiB (default 256MiB)
  --coordinators N  coordinators; one leads, the others stand by (default 1)
  --nats-cluster N  run N routed nats-servers with JetStream replicas min(N, 3) (default 1)
  --model ID        model to register: ${DEMO_PROFILE.id} (the demo profile, default) or a built-in id
  --demo            run the demo workload (an agent loop over one long shared context)
  --requests N      demo requests (default ${UP_DEFAULTS.requests})
  --once            exit after the demo (or right after start-up) instead of waiting for Ctrl-C
  --state FILE      state file for \`kvfabric status\` (default .kvfabric/cluster.json)
  --verbose         print every child's log lines`;

interface UpArgs {
  shards: number;
  arenaBytes: number;
  coordinators: number;
  natsCluster: number;
  model: string;
  demo: boolean;
  requests: number;
  once: boolean;
  state: string | undefined;
  verbose: boolean;
}

function intArg(flag: string, v: string | undefined, min: number): number | string {
  const n = Number(v);
  return v !== undefined && Number.isInteger(n) && n >= min ? n : `${flag} needs an integer >= ${min}`;
}

export function parseUpArgs(argv: readonly string[]): UpArgs | string {
  const a: UpArgs = {
    ...UP_DEFAULTS,
    natsCluster: 1,
    demo: false,
    once: false,
    state: undefined,
    verbose: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] as string;
    const v = argv[i + 1];
    let r: number | string | undefined;
    switch (flag) {
      case '--demo':
      case '--once':
      case '--verbose':
        a[flag.slice(2) as 'demo' | 'once' | 'verbose'] = true;
        continue;
      case '--shards':
        r = intArg(flag, v, 1);
        if (typeof r === 'number') a.shards = r;
        break;
      case '--coordinators':
        r = intArg(flag, v, 1);
        if (typeof r === 'number') a.coordinators = r;
        break;
      case '--nats-cluster':
        r = intArg(flag, v, 1);
        if (typeof r === 'number') a.natsCluster = r;
        break;
      case '--requests':
        r = intArg(flag, v, 1);
        if (typeof r === 'number') a.requests = r;
        break;
      case '--arena': {
        const n = parseSize(v);
        r = n === undefined ? `--arena needs a size such as 256MiB, got ${String(v)}` : (a.arenaBytes = n);
        break;
      }
      case '--model':
      case '--state':
        if (v === undefined || v.startsWith('--')) return `${flag} needs a value`;
        if (flag === '--model') a.model = v;
        else a.state = v;
        break;
      default:
        return `unknown argument ${JSON.stringify(flag)}`;
    }
    if (typeof r === 'string') return r;
    i++;
  }
  if (a.model !== DEMO_PROFILE.id && !isBuiltinModel(a.model)) {
    return `--model: unknown model ${JSON.stringify(a.model)} (use ${DEMO_PROFILE.id} or a built-in id)`;
  }
  return a;
}

const say = (line: string): void => {
  process.stdout.write(line + '\n');
};

/** The lines a worker pastes: URLs and the KVFABRIC_* variables the SDK's config reads. */
function connectionInfo(state: ClusterState): string {
  return [
    'connection info (a worker needs only these):',
    `  NATS   ${state.natsUrl}`,
    `  Redis  ${state.redisUrl}   (index key prefix ${state.keyPrefix})`,
    `  model  ${state.model}`,
    '  env block (connect({ config: loadConfig(), model }) reads it):',
    ...Object.entries(state.env).map(([k, v]) => `    export ${k}=${v}`),
  ].join('\n');
}

async function printStatus(state: ClusterState): Promise<void> {
  try {
    const st = await gatherStatus({
      natsUrl: state.natsUrl,
      redisUrl: state.redisUrl,
      keyPrefix: state.keyPrefix,
    });
    say(formatStatus(st, hitRateView(state)));
  } catch (err) {
    say(`(status unavailable: ${toKvfError(err).message})`);
  }
}

function buildState(
  a: UpArgs,
  cluster: LocalCluster,
  nats: ServerHandle | undefined,
  redis: ServerHandle,
): ClusterState {
  const child = (h: ChildHandle): ClusterState['processes'][number] => ({
    name: h.nodeId,
    role: h.role,
    pid: h.pid,
  });
  return {
    version: 1,
    pid: process.pid,
    startedAt: new Date().toISOString(),
    natsUrl: cluster.natsUrl,
    redisUrl: cluster.redisUrl,
    keyPrefix: cluster.config.redis.keyPrefix,
    model: a.model,
    env: {
      [envNameFor('nats.servers')]: cluster.natsUrl,
      [envNameFor('redis.url')]: cluster.redisUrl,
      [envNameFor('redis.keyPrefix')]: cluster.config.redis.keyPrefix,
    },
    processes: [
      ...(nats
        ? [{ name: 'nats', role: 'nats-server' as const, pid: nats.pid }]
        : (cluster.natsCluster?.urls ?? []).map((_u, i) => ({
            name: `nats-${i + 1}`,
            role: 'nats-server' as const,
            pid: cluster.natsCluster?.server(i)?.pid ?? -1,
          }))),
      { name: 'redis', role: 'redis-server', pid: redis.pid },
      ...cluster.coordinators.map(child),
      ...cluster.shards.map(child),
    ],
  };
}

async function demo(a: UpArgs, kvf: KvfClient, interrupted: () => boolean): Promise<DemoSummary> {
  say(
    `\ndemo: one shared ${DEMO_DEFAULTS.contextTokens}-token context, ${a.requests} follow-up questions (model ${describeProfile(await kvf.profile())})`,
  );
  const bar = new ProgressBar({ total: a.requests, label: 'demo' });
  const s = await runDemo(kvf, {
    requests: a.requests,
    shouldStop: interrupted,
    onRequest: (done, _total, cur) => {
      const hit = cur.promptTokens === 0 ? 0 : cur.cachedTokens / cur.promptTokens;
      const fails = cur.verificationFailures > 0 ? `  VERIFY FAILURES ${cur.verificationFailures}` : '';
      bar.update(done, `hit ${(hit * 100).toFixed(1)}%${fails}`);
    },
  });
  bar.finish();
  return s;
}

/** Prints child log lines (--verbose) or keeps the last few for a start-up failure report. */
function childLog(verbose: boolean): { log: (l: string) => void; recent: string[] } {
  const recent: string[] = [];
  return {
    recent,
    log: (l) => {
      if (verbose) process.stderr.write(l + '\n');
      recent.push(l);
      if (recent.length > UP_DEFAULTS.logLinesKept) recent.shift();
    },
  };
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    say(USAGE);
    return 0;
  }
  const parsed = parseUpArgs(argv);
  if (typeof parsed === 'string') {
    process.stderr.write(`kvfabric up: ${parsed}\n${USAGE}\n`);
    return 2;
  }
  const a = parsed;
  // Watch signals before the first child starts: a Ctrl-C during start-up still cleans up.
  const watch = watchShutdown();
  let signal: NodeJS.Signals | undefined;
  void watch.signal.then((s) => {
    signal = s;
    say(`\n${s}: stopping the cluster...`);
  });
  const file = stateFilePath(a.state);
  const logs = childLog(a.verbose);
  let nats: ServerHandle | undefined;
  let redis: ServerHandle | undefined;
  let cluster: LocalCluster | undefined;
  let kvf: KvfClient | undefined;
  let code = 0;
  let stopping = false;
  try {
    say(
      `starting nats-server, redis-server, ${a.coordinators} coordinator(s) and ${a.shards} shard node(s)...`,
    );
    [nats, redis] = await Promise.all([
      a.natsCluster > 1 ? Promise.resolve(undefined) : startNatsServer(),
      startRedisServer(),
    ]);
    const builtin = isBuiltinModel(a.model);
    cluster = await startLocalCluster({
      shards: a.shards,
      arenaBytes: a.arenaBytes,
      coordinators: a.coordinators,
      // Nodes need a model at start to have capacity (their placement weight); a registered model
      // gets its own arena of the same size (see docs/operations.md "Local cluster").
      models: builtin ? [a.model] : ['tiny-test'],
      ...(nats ? { nats } : { natsCluster: a.natsCluster }),
      redis,
      log: logs.log,
    });
    for (const h of [...cluster.coordinators, ...cluster.shards]) {
      void h.exited.then((c) => {
        if (!stopping) say(`warning: ${h.role} ${h.nodeId} (pid ${h.pid}) exited (code ${c})`);
      });
    }
    kvf = await connect({
      natsServers: cluster.natsUrl,
      redisUrl: cluster.redisUrl,
      keyPrefix: cluster.config.redis.keyPrefix,
      model: a.model,
    });
    if (signal === undefined) await kvf.registerModel(demoProfile(a.model));
    const state = buildState(a, cluster, nats, redis);
    writeState(file, state);
    if (signal === undefined) {
      say('');
      await printStatus(state);
      say(`\n${connectionInfo(state)}\n  state file: ${file}`);
    }
    if (a.demo && signal === undefined) {
      const s = await demo(a, kvf, () => signal !== undefined);
      say(formatSummary(s));
      state.demo = { ...s, finishedAt: new Date().toISOString() };
      writeState(file, state);
      if (s.verificationFailures > 0) {
        process.stderr.write(
          `kvfabric up: the demo served ${s.verificationFailures} block(s) with wrong bytes\n`,
        );
        code = 1;
      } else if (signal === undefined) {
        say('');
        await printStatus(state);
      }
    }
    if (!a.once && code === 0 && signal === undefined) {
      say(`\ncluster running (up pid ${process.pid}); \`kvfabric status\` shows it; Ctrl-C stops it.`);
      await watch.signal;
    }
  } catch (err) {
    process.stderr.write(`kvfabric up: ${toKvfError(err).message}\n`);
    if (logs.recent.length > 0 && !a.verbose) {
      process.stderr.write(`last child log lines:\n${logs.recent.slice(-40).join('\n')}\n`);
    }
    code = 1;
  } finally {
    stopping = true;
    await kvf?.close().catch(() => undefined);
    await cluster?.stop().catch(() => undefined);
    await Promise.all([nats?.stop().catch(() => undefined), redis?.stop().catch(() => undefined)]);
    removeState(file, process.pid);
    watch.dispose();
  }
  say('cluster stopped.');
  return code;
}

/**
 * Entry point of the local agent (`kvfabric agent --socket <path> [--config <file>]`), one per
 * inference host. Holds the worker SDK's NATS, Redis and UCX connections and serves engines on a
 * unix socket (docs/agent-protocol.md). SIGTERM/SIGINT: stop accepting, end sessions (their
 * regions are freed), close the SDK.
 */
import { UcxWorker } from '../../native/index.js';
import { parseSize } from '../../shared/config.js';
import { bootActor, watchShutdown } from '../../shared/process.js';
import { startActorOps } from '../../shared/metrics/actor-ops.js';
import { instrumentClient } from '../../shared/metrics/sources.js';
import { applyUcxNetDevices } from '../../shared/ucx-env.js';
import { connect } from '../../shared/sdk/mod.js';
import { AgentServer, type AgentOptions } from './server.js';

const WHAT =
  'Runs the local agent: engines on this host talk to it over a unix socket and shared memory.\n' +
  'Agent flags: --socket <path> (required), --shm-dir <dir> (default /dev/shm),\n' +
  '  --region-bytes-max <size> (default 8GiB), --shm-bytes-max <size> (default 64GiB)';

interface AgentFlags {
  socketPath?: string;
  shmDir?: string;
  regionBytesMax?: number;
  shmBytesMax?: number;
  rest: string[];
}

/** Pulls the agent's own flags out of argv; the rest (--config, --help) goes to bootActor. */
export function parseAgentFlags(argv: readonly string[]): AgentFlags {
  const out: AgentFlags = { rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const [flag, inline] = a.includes('=')
      ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]
      : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === '--socket') out.socketPath = value();
    else if (flag === '--shm-dir') out.shmDir = value();
    else if (flag === '--region-bytes-max') out.regionBytesMax = sizeFlag(flag, value());
    else if (flag === '--shm-bytes-max') out.shmBytesMax = sizeFlag(flag, value());
    else out.rest.push(a);
  }
  return out;
}

function sizeFlag(flag: string, v: string): number {
  const n = parseSize(v);
  if (n === undefined || n <= 0) throw new Error(`${flag}: expected a size like 8GiB, got ${v}`);
  return n;
}

export async function main(argv: string[]): Promise<number> {
  const shutdown = watchShutdown();
  let flags: AgentFlags;
  try {
    flags = parseAgentFlags(argv);
  } catch (err) {
    process.stderr.write(`kvfabric agent: ${(err as Error).message}\n`);
    shutdown.dispose();
    return 2;
  }
  const boot = bootActor('agent', WHAT, flags.rest);
  if (typeof boot === 'number') return boot;
  const { config, log } = boot;
  if (flags.socketPath === undefined) {
    process.stderr.write('kvfabric agent: --socket <path> is required\n');
    shutdown.dispose();
    return 2;
  }
  const ops = await startActorOps(config, log).catch((err: unknown) => {
    log.error('cannot start the ops port', { err });
    return undefined;
  });
  if (ops === undefined) {
    shutdown.dispose();
    return 1;
  }
  applyUcxNetDevices(config, log);
  const worker = UcxWorker.create({
    opTimeoutMs: config.ucx.opTimeoutMs,
    syncWaitUs: config.ucx.syncWaitUs,
    ...(config.ucx.transports !== undefined ? { transports: config.ucx.transports } : {}),
  });
  let agent: AgentServer;
  const client = await connect({ config, logger: log, ucx: { worker } }).catch(async (err: unknown) => {
    log.error('cannot connect to the cluster', { err });
    await worker.close();
    return undefined;
  });
  if (client === undefined) {
    await ops.close();
    shutdown.dispose();
    return 1;
  }
  instrumentClient(client, ops.metrics);
  let listening = false;
  ops.readiness.add('socket', () => (listening ? undefined : 'not listening yet'));
  const opts: AgentOptions = { socketPath: flags.socketPath, logger: log };
  if (flags.shmDir !== undefined) opts.shmDir = flags.shmDir;
  if (flags.regionBytesMax !== undefined) opts.regionBytesMax = flags.regionBytesMax;
  if (flags.shmBytesMax !== undefined) opts.shmBytesMax = flags.shmBytesMax;
  try {
    agent = await AgentServer.start(client, worker, opts);
  } catch (err) {
    log.error('cannot listen', { socket: flags.socketPath, err });
    await client.close();
    await worker.close();
    await ops.close();
    shutdown.dispose();
    return 1;
  }
  listening = true;
  log.info('listening', { socket: flags.socketPath, pid: process.pid });
  const signal = await shutdown.signal;
  log.info('stopping', { signal });
  await ops.beginDrain();
  // In-flight engine requests answer (bounded); new ones are refused with CLOSED.
  await agent.close(config.shutdown.drainTimeoutMs);
  await client.close();
  await worker.close();
  await ops.close();
  return 0;
}

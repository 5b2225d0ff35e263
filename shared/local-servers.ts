/**
 * Starts real nats-server (with JetStream) and redis-server processes on free loopback ports.
 * Used by `kvfabric up` and by the integration/chaos test harness. Every server gets its own
 * temporary directory; `stop()` kills the process and removes the directory.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export class MissingBinaryError extends Error {
  override name = 'MissingBinaryError';
  constructor(
    readonly binary: string,
    readonly aptPackage: string,
  ) {
    super(`${binary} not found on PATH; install it with: apt-get install -y ${aptPackage}`);
  }
}

export interface ServerHandle {
  readonly port: number;
  readonly url: string;
  readonly pid: number;
  readonly dir: string;
  readonly process: ChildProcess;
  /** SIGKILL (or the given signal) and wait for exit; removes the temp dir unless keepDir. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export function findBinary(name: string, aptPackage: string): string {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/bin', '/usr/local/bin']);
  for (const d of dirs) {
    const p = path.join(d, name);
    const r = spawnSync('test', ['-x', p]);
    if (r.status === 0) return p;
  }
  throw new MissingBinaryError(name, aptPackage);
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

function makeHandle(
  child: ChildProcess,
  port: number,
  url: string,
  dir: string,
  removeDir = true,
): ServerHandle {
  return {
    port,
    url,
    pid: child.pid ?? -1,
    dir,
    process: child,
    async stop(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
        await waitForExit(child);
      }
      if (removeDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Resolve when `pattern` shows up on the child's output; reject on exit or timeout. */
function waitForOutput(
  child: ChildProcess,
  pattern: RegExp,
  timeoutMs: number,
  what: string,
): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const onData = (chunk: Buffer): void => {
      seen += chunk.toString();
      const m = seen.match(pattern);
      if (m) {
        cleanup();
        resolve(m);
      }
    };
    const onExit = (code: number | null): void => {
      cleanup();
      reject(new Error(`${what} exited (code ${code}) before it was ready:\n${seen.slice(-2000)}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${what} not ready after ${timeoutMs} ms:\n${seen.slice(-2000)}`));
    }, timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

export interface NatsServerOptions {
  /** Fixed client port; default: nats-server picks a free one (-p -1). */
  port?: number;
  /** Extra config file text (cluster routes, accounts, ...). */
  configText?: string;
  /** Server name (JetStream clusters need unique ones). */
  serverName?: string;
  /** Existing store dir to reuse (restart with data); default: a new temp dir. */
  storeDir?: string;
  readyTimeoutMs?: number;
}

export async function startNatsServer(opts: NatsServerOptions = {}): Promise<ServerHandle> {
  const bin = findBinary('nats-server', 'nats-server');
  const dir = opts.storeDir ?? mkdtempSync(path.join(os.tmpdir(), 'kvfabric-nats-'));
  const args = ['-js', '-a', '127.0.0.1', '-p', String(opts.port ?? -1), '-sd', dir];
  if (opts.serverName) args.push('-n', opts.serverName);
  if (opts.configText) {
    const conf = path.join(dir, 'server.conf');
    writeFileSync(conf, opts.configText);
    args.push('-c', conf);
  }
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    // Ready once it listens for clients and has logged "Server is ready" (JetStream is up).
    const m = await waitForOutput(
      child,
      /Listening for client connections on [\d.]+:(\d+)[\s\S]*Server is ready/,
      opts.readyTimeoutMs ?? 15_000,
      'nats-server',
    );
    const port = Number(m[1]);
    child.stdout?.resume();
    child.stderr?.resume();
    return makeHandle(child, port, `nats://127.0.0.1:${port}`, dir, opts.storeDir === undefined);
  } catch (err) {
    child.kill('SIGKILL');
    if (opts.storeDir === undefined) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

export interface RedisServerOptions {
  port?: number;
  password?: string;
  readyTimeoutMs?: number;
}

export async function startRedisServer(opts: RedisServerOptions = {}): Promise<ServerHandle> {
  const bin = findBinary('redis-server', 'redis-server');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kvfabric-redis-'));
  for (let attempt = 0; ; attempt++) {
    const port = opts.port ?? (await freePort());
    const args = [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--protected-mode',
      'no',
      '--loglevel',
      'notice',
    ];
    if (opts.password) args.push('--requirepass', opts.password);
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await waitForOutput(
        child,
        /Ready to accept connections/,
        opts.readyTimeoutMs ?? 15_000,
        'redis-server',
      );
      child.stdout?.resume();
      child.stderr?.resume();
      return makeHandle(child, port, `redis://127.0.0.1:${port}`, dir);
    } catch (err) {
      child.kill('SIGKILL');
      // A port grabbed by someone else between freePort() and bind: try another one.
      if (attempt < 3 && opts.port === undefined) continue;
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A three-server (or n-server) NATS cluster with JetStream, for `kvfabric up --nats-cluster 3` and
// the chaos suite (kill -9 one server, restart it with its store).

export interface NatsClusterOptions {
  /** Cluster name in the `cluster {}` block. @default 'kvf' */
  name?: string;
  /** Wait for one server's readiness line. @default 15000 */
  readyTimeoutMs?: number;
  /** Wait for a JetStream meta leader ($JS.API.INFO answering) after all servers are up. @default 30000 */
  metaLeaderTimeoutMs?: number;
}

export interface NatsClusterHandle {
  /** Client URLs, one per server, in server order (stable across restarts). */
  readonly urls: string[];
  /** The same, comma-separated (the form KVFABRIC_NATS_SERVERS takes). */
  readonly url: string;
  /** The live process of server i (undefined while it is down). */
  server(i: number): ServerHandle | undefined;
  /** Send a signal to server i (default SIGKILL) and wait for it to exit; keeps its store. */
  kill(i: number, signal?: NodeJS.Signals): Promise<void>;
  /** Start server i again on its ports with its store dir (after kill). */
  restart(i: number): Promise<void>;
  /** Resolves once the cluster's JetStream has a meta leader (rejects after timeoutMs). */
  waitForMetaLeader(timeoutMs?: number): Promise<void>;
  /** Kill every server and remove the store dirs. Idempotent. */
  stop(): Promise<void>;
}

export const NATS_CLUSTER_DEFAULTS = {
  name: 'kvf',
  readyTimeoutMs: 15_000,
  metaLeaderTimeoutMs: 30_000,
} as const;

function natsClusterConfig(
  name: string,
  serverName: string,
  clusterPort: number,
  routePorts: readonly number[],
): string {
  const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`).join(', ');
  return [
    `server_name: ${serverName}`,
    `cluster {`,
    `  name: ${name}`,
    `  listen: 127.0.0.1:${clusterPort}`,
    `  routes: [${routes}]`,
    `}`,
    '',
  ].join('\n');
}

/**
 * Ready once the meta group has a leader AND knows every peer: a probe stream with `replicas`
 * replicas can be created (right after the leader election it fails with "no suitable peers").
 */
async function jetStreamAnswers(urls: readonly string[], replicas: number, timeoutMs: number): Promise<void> {
  const { connect } = await import('@nats-io/transport-node');
  const deadline = Date.now() + timeoutMs;
  const probe = `KVF_READY_PROBE_${process.pid}_${Date.now()}`;
  const enc = new TextEncoder();
  let last = 'no answer';
  while (Date.now() < deadline) {
    const nc = await connect({ servers: [...urls], timeout: 2000 }).catch((err: unknown) => {
      last = (err as Error).message;
      return undefined;
    });
    if (nc) {
      try {
        const ask = async (subject: string, body?: unknown): Promise<string | undefined> => {
          const m = await nc.request(
            subject,
            body === undefined ? undefined : enc.encode(JSON.stringify(body)),
            {
              timeout: 2000,
            },
          );
          const r = JSON.parse(new TextDecoder().decode(m.data)) as { error?: { description?: string } };
          return r.error === undefined ? undefined : (r.error.description ?? 'error');
        };
        last = (await ask('$JS.API.INFO')) ?? 'ok';
        if (last === 'ok') {
          const created = await ask(`$JS.API.STREAM.CREATE.${probe}`, {
            name: probe,
            subjects: [`kvf.ready.${probe}`],
            num_replicas: replicas,
            storage: 'memory',
          });
          if (created === undefined) {
            await ask(`$JS.API.STREAM.DELETE.${probe}`).catch(() => undefined);
            return;
          }
          last = created;
        }
      } catch (err) {
        last = (err as Error).message;
      } finally {
        await nc.close().catch(() => undefined);
      }
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`JetStream not ready for replicas ${replicas} within ${timeoutMs} ms: ${last}`);
}

/**
 * Start `n` nats-server processes on loopback, routed into one cluster, JetStream on with one
 * store dir each and unique server names; resolves once a JetStream meta leader is elected.
 */
export async function startNatsCluster(n: number, opts: NatsClusterOptions = {}): Promise<NatsClusterHandle> {
  if (!Number.isInteger(n) || n < 1) throw new Error(`startNatsCluster: n must be >= 1, got ${n}`);
  const name = opts.name ?? NATS_CLUSTER_DEFAULTS.name;
  const readyTimeoutMs = opts.readyTimeoutMs ?? NATS_CLUSTER_DEFAULTS.readyTimeoutMs;
  const clientPorts: number[] = [];
  const clusterPorts: number[] = [];
  // Distinct ports (freePort may hand the same free port out twice in a row).
  while (clientPorts.length + clusterPorts.length < 2 * n) {
    const p = await freePort();
    if (clientPorts.includes(p) || clusterPorts.includes(p)) continue;
    if (clientPorts.length < n) clientPorts.push(p);
    else clusterPorts.push(p);
  }
  const dirs = clientPorts.map(() => mkdtempSync(path.join(os.tmpdir(), 'kvfabric-natsc-')));
  const servers: (ServerHandle | undefined)[] = new Array<ServerHandle | undefined>(n).fill(undefined);
  const urls = clientPorts.map((p) => `nats://127.0.0.1:${p}`);
  const startOne = async (i: number): Promise<void> => {
    const others = clusterPorts.filter((_p, k) => k !== i);
    servers[i] = await startNatsServer({
      port: clientPorts[i] as number,
      serverName: `${name}-n${i + 1}`,
      storeDir: dirs[i] as string,
      configText: natsClusterConfig(name, `${name}-n${i + 1}`, clusterPorts[i] as number, others),
      readyTimeoutMs,
    });
  };
  let stopped = false;
  const handle: NatsClusterHandle = {
    urls,
    url: urls.join(','),
    server: (i) => servers[i],
    async kill(i, signal = 'SIGKILL') {
      const s = servers[i];
      servers[i] = undefined;
      await s?.stop(signal);
    },
    async restart(i) {
      if (stopped) throw new Error('nats cluster is stopped');
      if (servers[i] !== undefined) return;
      await startOne(i);
    },
    waitForMetaLeader: (timeoutMs = opts.metaLeaderTimeoutMs ?? NATS_CLUSTER_DEFAULTS.metaLeaderTimeoutMs) =>
      jetStreamAnswers(urls, n, timeoutMs),
    async stop() {
      if (stopped) return;
      stopped = true;
      await Promise.all(servers.map((s) => (s ? s.stop('SIGKILL') : Promise.resolve())));
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    },
  };
  try {
    await Promise.all(clientPorts.map((_p, i) => startOne(i)));
    await handle.waitForMetaLeader();
  } catch (err) {
    await handle.stop();
    throw err;
  }
  return handle;
}

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

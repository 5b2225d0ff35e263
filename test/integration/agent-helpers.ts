/**
 * Helpers for the agent's integration tests: start `kvfabric agent` as a child process against a
 * local cluster, and a minimal framed-protocol client (the Python package is the real one).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LocalCluster } from '../../shared/local-cluster.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface AgentProcess {
  proc: ChildProcess;
  socketPath: string;
  logs: string[];
  stop(): Promise<void>;
}

/** The argv that starts an agent (the Python tests start their own with it). */
export function agentArgv(socketPath: string): string[] {
  return [process.execPath, path.join(ROOT, 'bin/kvfabric.js'), 'agent', '--socket', socketPath];
}

export async function startAgent(
  cluster: LocalCluster,
  socketPath: string,
  readyMs = 20_000,
): Promise<AgentProcess> {
  const [cmd, ...args] = agentArgv(socketPath) as [string, ...string[]];
  const proc = spawn(cmd, args, {
    env: { ...process.env, ...cluster.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  proc.stdout?.on('data', (d: Buffer) => logs.push(d.toString()));
  proc.stderr?.on('data', (d: Buffer) => logs.push(d.toString()));
  const deadline = Date.now() + readyMs;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`agent exited ${proc.exitCode}:\n${logs.join('')}`);
    try {
      const c = await AgentConn.open(socketPath);
      await c.request('hello', {});
      c.close();
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`agent not ready:\n${logs.join('')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    proc,
    socketPath,
    logs,
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

export interface Reply {
  v: number;
  id: number | null;
  ok?: boolean;
  result?: Record<string, unknown>;
  error?: { code: number; name: string; message: string };
  event?: string;
  [k: string]: unknown;
}

/** One framed connection; replies and events are queued per request id. */
export class AgentConn {
  private buf = Buffer.alloc(0);
  private readonly frames: Reply[] = [];
  private waiters: (() => void)[] = [];
  private nextId = 1;
  closed = false;

  private constructor(readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readUInt32BE(0)) {
        const n = this.buf.readUInt32BE(0);
        this.frames.push(JSON.parse(this.buf.subarray(4, 4 + n).toString()) as Reply);
        this.buf = this.buf.subarray(4 + n);
      }
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', () => undefined);
  }

  static open(socketPath: string): Promise<AgentConn> {
    return new Promise((resolve, reject) => {
      const s = connect(socketPath);
      s.once('connect', () => resolve(new AgentConn(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  sendRaw(bytes: Buffer): void {
    this.sock.write(bytes);
  }

  sendBody(body: string | Buffer): void {
    const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(b.length, 0);
    this.sock.write(Buffer.concat([head, b]));
  }

  send(op: string, args: Record<string, unknown>, extra: Record<string, unknown> = {}): number {
    const id = this.nextId++;
    this.sendBody(JSON.stringify({ v: 1, id, op, ...args, ...extra }));
    return id;
  }

  /** The next frame matching `pred` (removed from the queue); rejects after timeoutMs or on close. */
  async next(pred: (r: Reply) => boolean, timeoutMs = 10_000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(pred);
      if (i >= 0) return this.frames.splice(i, 1)[0] as Reply;
      if (this.closed) throw new Error('connection closed');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a frame');
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  async request(op: string, args: Record<string, unknown>, timeoutMs?: number): Promise<Reply> {
    const id = this.send(op, args);
    return this.next((r) => r.id === id && r.event === undefined, timeoutMs);
  }

  /** The result of an ok reply; throws with the error name otherwise. */
  async ok(op: string, args: Record<string, unknown>): Promise<Record<string, unknown>> {
    const r = await this.request(op, args);
    if (!r.ok) throw new Error(`${op}: ${r.error?.name}: ${r.error?.message}`);
    return r.result as Record<string, unknown>;
  }

  close(): void {
    this.sock.destroy();
  }
}

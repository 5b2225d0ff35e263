/**
 * The agent's socket server: one Session per engine connection, each with its own regions and
 * in-flight operations. A session that breaks (bad framing, a crashed engine) is torn down alone:
 * its operations settle, then its regions are deregistered and unlinked; no other session sees
 * anything. See docs/agent-protocol.md.
 */
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import { chmodSync, unlinkSync } from 'node:fs';
import { KvfError, toKvfError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import {
  AGENT_LIMITS,
  AGENT_PROTOCOL_VERSION,
  agentEnvelopeSchema,
  agentOpSchemas,
  isAgentOp,
} from '../../shared/protocol/agent.js';
import type { KvfClient } from '../../shared/sdk/mod.js';
import type { UcxWorker } from '../../native/index.js';
import { encodeFrame, FrameDecoder } from './framing.js';
import { HANDLERS, type OpContext } from './ops.js';
import { REGION_DEFAULTS, RegionTable, type RegionLimits } from './regions.js';

export interface AgentOptions extends Partial<RegionLimits> {
  socketPath: string;
  /** Requests one connection may have in flight; more are refused (BATCH_TOO_LARGE). @default 256 */
  inFlightPerConnectionMax?: number;
  /** @default AGENT_LIMITS.frameBytesMax (16 MiB) */
  frameBytesMax?: number;
  /** Socket file mode. @default 0o660 */
  socketMode?: number;
  logger?: Logger;
}

export const AGENT_DEFAULTS = { inFlightPerConnectionMax: 256, socketMode: 0o660 } as const;

interface Counters {
  connections: number;
  connectionsTotal: number;
  requests: number;
  errors: number;
}

export class AgentServer {
  private readonly sessions = new Set<Session>();
  private readonly counters: Counters = { connections: 0, connectionsTotal: 0, requests: 0, errors: 0 };
  private nextConn = 1;

  private constructor(
    private readonly server: Server,
    readonly regions: RegionTable,
    private readonly client: KvfClient,
    private readonly opts: Required<Pick<AgentOptions, 'inFlightPerConnectionMax' | 'frameBytesMax'>> &
      AgentOptions,
  ) {}

  static async start(client: KvfClient, worker: UcxWorker, options: AgentOptions): Promise<AgentServer> {
    const opts = {
      ...options,
      inFlightPerConnectionMax: options.inFlightPerConnectionMax ?? AGENT_DEFAULTS.inFlightPerConnectionMax,
      frameBytesMax: options.frameBytesMax ?? AGENT_LIMITS.frameBytesMax,
    };
    const limits: RegionLimits = {
      shmDir: options.shmDir ?? REGION_DEFAULTS.shmDir,
      regionBytesMax: options.regionBytesMax ?? REGION_DEFAULTS.regionBytesMax,
      regionsPerConnectionMax: options.regionsPerConnectionMax ?? REGION_DEFAULTS.regionsPerConnectionMax,
      shmBytesMax: options.shmBytesMax ?? REGION_DEFAULTS.shmBytesMax,
    };
    await removeStaleSocket(options.socketPath);
    const server = createServer();
    const agent = new AgentServer(server, new RegionTable(worker, limits), client, opts);
    server.on('connection', (sock) => agent.accept(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(options.socketPath, options.socketMode ?? AGENT_DEFAULTS.socketMode);
    return agent;
  }

  stats(): Record<string, unknown> {
    return { ...this.counters, regions: this.regions.count, shmBytes: this.regions.bytes };
  }

  /** Stops accepting, ends every session (their regions are freed), unlinks the socket. */
  /**
   * Stop: no new connections; each session refuses new requests (CLOSED) and gets up to
   * `drainTimeoutMs` for the ones in flight to answer before its socket is ended (0: end now).
   */
  async close(drainTimeoutMs = 0): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    await Promise.allSettled([...this.sessions].map((s) => s.drain(drainTimeoutMs)));
    await closed;
    this.regions.freeAll();
    try {
      unlinkSync(this.opts.socketPath);
    } catch {
      // already gone
    }
  }

  private accept(sock: Socket): void {
    const conn = this.nextConn++;
    this.counters.connections++;
    this.counters.connectionsTotal++;
    const session = new Session(conn, sock, this);
    this.sessions.add(session);
    void session.closed.then(() => {
      this.sessions.delete(session);
      this.counters.connections--;
      const freed = this.regions.freeOwner(conn);
      this.opts.logger?.debug('connection closed', { conn, regionsFreed: freed });
    });
  }

  /** @internal for Session */
  contextFor(conn: number, emit: OpContext['emit']): OpContext {
    return { client: this.client, regions: this.regions, conn, emit, agentStats: () => this.stats() };
  }
  /** @internal */
  count(kind: 'requests' | 'errors'): void {
    this.counters[kind]++;
  }
  /** @internal */
  get limits(): { inFlightPerConnectionMax: number; frameBytesMax: number } {
    return this.opts;
  }
}

class Session {
  private readonly decoder: FrameDecoder;
  private readonly inFlight = new Set<Promise<void>>();
  private open = true;
  private draining = false;
  /** Resolves once the socket closed and every operation of this session settled. */
  readonly closed: Promise<void>;

  constructor(
    readonly conn: number,
    private readonly sock: Socket,
    private readonly agent: AgentServer,
  ) {
    this.decoder = new FrameDecoder(agent.limits.frameBytesMax);
    this.closed = new Promise((resolve) => {
      const done = (): void => {
        this.open = false;
        void Promise.allSettled([...this.inFlight]).then(() => resolve());
      };
      sock.once('close', done);
    });
    sock.on('error', () => undefined); // 'close' follows; a reset engine is not the agent's error
    sock.on('data', (data: Buffer) => this.onData(data));
  }

  async end(): Promise<void> {
    this.sock.end();
    this.sock.destroySoon();
    await this.closed;
  }

  /** Refuse new requests, let in-flight ones answer for up to `timeoutMs`, then end. */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    if (timeoutMs > 0 && this.inFlight.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.inFlight]),
        new Promise<void>((r) => (timer = setTimeout(r, timeoutMs))),
      ]);
      clearTimeout(timer);
    }
    await this.end();
  }

  private onData(data: Buffer): void {
    for (const d of this.decoder.push(data)) {
      if (d.kind === 'fatal') {
        this.agent.count('errors');
        this.send({ v: AGENT_PROTOCOL_VERSION, id: null, ok: false, error: d.error.toJSON() });
        this.sock.end(); // the stream cannot be resynchronised
        return;
      }
      this.onFrame(d.body);
    }
  }

  private onFrame(body: Buffer): void {
    this.agent.count('requests');
    let id: number | null = null;
    try {
      const msg = parseJson(body);
      const raw = msg as { id?: unknown };
      if (typeof raw.id === 'number' && Number.isSafeInteger(raw.id) && raw.id >= 0) id = raw.id;
      const { v, op, args } = envelope(msg);
      if (v !== AGENT_PROTOCOL_VERSION) {
        throw new KvfError(
          'VERSION_MISMATCH',
          `agent protocol v${AGENT_PROTOCOL_VERSION}, frame says v${v}`,
          {
            details: { supported: AGENT_PROTOCOL_VERSION },
          },
        );
      }
      if (!isAgentOp(op)) throw new KvfError('UNKNOWN_OPERATION', `unknown operation ${JSON.stringify(op)}`);
      if (this.draining) throw new KvfError('CLOSED', 'the agent is shutting down');
      if (this.inFlight.size >= this.agent.limits.inFlightPerConnectionMax) {
        throw new KvfError(
          'BATCH_TOO_LARGE',
          `more than ${this.agent.limits.inFlightPerConnectionMax} requests in flight`,
        );
      }
      const parsed = agentOpSchemas[op].parse(args);
      const reqId = id as number;
      const ctx = this.agent.contextFor(this.conn, (event) =>
        this.send({ v: AGENT_PROTOCOL_VERSION, id: reqId, ...event }),
      );
      const handler = HANDLERS[op] as (c: OpContext, a: unknown) => Promise<unknown>;
      const p = handler(ctx, parsed).then(
        (result) => this.send({ v: AGENT_PROTOCOL_VERSION, id: reqId, ok: true, result }),
        (err: unknown) => this.fail(reqId, err),
      );
      this.inFlight.add(p);
      void p.finally(() => this.inFlight.delete(p));
    } catch (err) {
      this.fail(id, err);
    }
  }

  private fail(id: number | null, err: unknown): void {
    this.agent.count('errors');
    this.send({ v: AGENT_PROTOCOL_VERSION, id, ok: false, error: toKvfError(err).toJSON() });
  }

  private send(frame: Record<string, unknown>): void {
    if (!this.open || this.sock.destroyed) return;
    this.sock.write(encodeFrame(frame, bigintSafe));
  }
}

function bigintSafe(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new KvfError('MALFORMED', 'frame body is not JSON');
  }
}

function envelope(msg: unknown): { v: number; op: string; args: Record<string, unknown> } {
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
    throw new KvfError('MALFORMED', 'frame body must be a JSON object');
  }
  const { v, id, op, ...args } = msg as Record<string, unknown>;
  const env = agentEnvelopeSchema.parse({ v, id, op });
  return { v: env.v, op: env.op, args };
}

/** A socket file nobody listens on (a crashed agent's) is removed; a live one is EADDRINUSE. */
async function removeStaleSocket(file: string): Promise<void> {
  const live = await new Promise<boolean>((resolve) => {
    const s = netConnect(file);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (live) throw new KvfError('BAD_REQUEST', `another agent is listening on ${file}`);
  try {
    unlinkSync(file);
  } catch {
    // not there
  }
}

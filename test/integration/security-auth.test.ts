/**
 * NATS and Redis authentication and TLS from config, on real servers: what natsConnectOptions()
 * and redisOptions() (used by every actor and the SDK) produce must get through servers that
 * require it, and a client without the credentials must be refused.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createUser } from '@nats-io/nkeys';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type DeepPartial, type KvfConfig } from '../../shared/config.js';
import { PrefixIndex } from '../../shared/index/prefix-index.js';
import { freePort, startNatsServer, type ServerHandle } from '../../shared/local-servers.js';
import { natsConnectOptions } from '../../shared/nats-connect.js';
import { redisOptions } from '../../shared/redis-options.js';
import { buildDist } from '../harness/cluster.js';
import { makeTestCerts, type TestCerts } from './tls-helpers.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'kvf-auth-'));
let certs: TestCerts;
const handles: ServerHandle[] = [];
const conns: NatsConnection[] = [];

beforeAll(() => {
  certs = makeTestCerts();
});

afterAll(async () => {
  await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
  await Promise.all(handles.map((h) => h.stop()));
  rmSync(tmp, { recursive: true, force: true });
  rmSync(certs.dir, { recursive: true, force: true });
});

async function nats(configText: string): Promise<ServerHandle> {
  const h = await startNatsServer({ configText });
  handles.push(h);
  return h;
}

/** Connect the way actors do: natsConnectOptions(config), but fail fast instead of reconnecting. */
async function connectAs(servers: string, nats: DeepPartial<KvfConfig['nats']>): Promise<NatsConnection> {
  const cfg = parseConfig({ nats: { servers: [servers], ...nats } });
  const nc = await connect(natsConnectOptions(cfg, 'kvfabric-test', { reconnect: false, timeout: 3000 }));
  conns.push(nc);
  return nc;
}

async function roundTrip(nc: NatsConnection): Promise<string> {
  const sub = nc.subscribe('kvf.test.echo', { callback: (_e, m) => void m.respond(m.data) });
  try {
    return (await nc.request('kvf.test.echo', 'ping', { timeout: 3000 })).string();
  } finally {
    sub.unsubscribe();
  }
}

describe('NATS authentication from config', () => {
  it('user and password: the configured user gets in, no or wrong credentials are refused', async () => {
    const s = await nats('authorization { users: [ { user: worker, password: "w-s3cret" } ] }\n');
    expect(await roundTrip(await connectAs(s.url, { user: 'worker', pass: 'w-s3cret' }))).toBe('ping');
    await expect(connectAs(s.url, {})).rejects.toThrow(/authorization/i);
    await expect(connectAs(s.url, { user: 'worker', pass: 'nope' })).rejects.toThrow(/authorization/i);
  });

  it('token: the configured token gets in, another is refused', async () => {
    const s = await nats('authorization { token: "t0ken-s3cret" }\n');
    expect(await roundTrip(await connectAs(s.url, { token: 't0ken-s3cret' }))).toBe('ping');
    await expect(connectAs(s.url, { token: 'guess' })).rejects.toThrow(/authorization/i);
    await expect(connectAs(s.url, {})).rejects.toThrow(/authorization/i);
  });

  it('nkey: a seed file signs the server nonce; another key is refused', async () => {
    const user = createUser();
    const stranger = createUser();
    const seedFile = path.join(tmp, 'worker.nk');
    const strangerFile = path.join(tmp, 'stranger.nk');
    writeFileSync(seedFile, `# worker nkey seed\n${new TextDecoder().decode(user.getSeed())}\n`, {
      mode: 0o600,
    });
    writeFileSync(strangerFile, new TextDecoder().decode(stranger.getSeed()) + '\n', { mode: 0o600 });
    const s = await nats(`authorization { users: [ { nkey: "${user.getPublicKey()}" } ] }\n`);
    expect(await roundTrip(await connectAs(s.url, { nkeySeedFile: seedFile }))).toBe('ping');
    await expect(connectAs(s.url, { nkeySeedFile: strangerFile })).rejects.toThrow(/authorization/i);
    await expect(connectAs(s.url, {})).rejects.toThrow(/authorization/i);
  });
});

describe('kvfabric status with the deployment credentials', () => {
  beforeAll(() => buildDist());
  it('connects with the configured token (then finds no coordinator); without it NATS refuses', async () => {
    const s = await nats('authorization { token: "st4tus-s3cret" }\n');
    const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'kvfabric.js');
    const run = (env: Record<string, string>): Promise<{ code: number | null; stderr: string }> =>
      new Promise((resolve) => {
        const child = spawn(
          process.execPath,
          [bin, 'status', '--nats', s.url, '--redis', 'redis://127.0.0.1:1'],
          {
            env: { PATH: process.env.PATH ?? '', ...env },
            stdio: ['ignore', 'ignore', 'pipe'],
          },
        );
        let stderr = '';
        child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
        child.once('exit', (code) => resolve({ code, stderr }));
      });
    const without = await run({});
    expect(without.code).toBe(1);
    expect(without.stderr).toMatch(/cannot reach NATS .*authorization/i);
    const withToken = await run({ KVFABRIC_NATS_TOKEN: 'st4tus-s3cret' });
    expect(withToken.code).toBe(1);
    // Past authentication: the request found no coordinator (none runs on this server).
    expect(withToken.stderr).toMatch(/no coordinator leader answered/);
    expect(withToken.stderr).not.toMatch(/authorization/i);
  }, 30_000);
});

describe('NATS TLS from config', () => {
  const tlsBlock = (verify: boolean): string =>
    `tls {\n  cert_file: "${certs.serverCert}"\n  key_file: "${certs.serverKey}"\n  ca_file: "${certs.caFile}"\n  verify: ${verify}\n  timeout: 2\n}\n`;

  it('verifies the server with nats.tlsCaFile; a client trusting another CA is refused', async () => {
    const s = await nats(tlsBlock(false));
    const nc = await connectAs(s.url, { tlsCaFile: certs.caFile });
    expect(nc.info?.tls_required).toBe(true);
    expect(await roundTrip(nc)).toBe('ping');
    await expect(connectAs(s.url, { tlsCaFile: certs.otherCaFile })).rejects.toThrow(
      /certificate|self.signed|verify/i,
    );
  });

  it('mutual TLS: a client certificate from the config is required and accepted', async () => {
    const s = await nats(tlsBlock(true));
    const nc = await connectAs(s.url, {
      tlsCaFile: certs.caFile,
      tlsCertFile: certs.clientCert,
      tlsKeyFile: certs.clientKey,
    });
    expect(await roundTrip(nc)).toBe('ping');
    await expect(connectAs(s.url, { tlsCaFile: certs.caFile })).rejects.toThrow();
  });

  it('TLS and a password together (both checked)', async () => {
    const s = await nats(
      tlsBlock(false) + 'authorization { users: [ { user: shard, password: "s-pw" } ] }\n',
    );
    const nc = await connectAs(s.url, { tlsCaFile: certs.caFile, user: 'shard', pass: 's-pw' });
    expect(await roundTrip(nc)).toBe('ping');
    await expect(connectAs(s.url, { tlsCaFile: certs.caFile })).rejects.toThrow(/authorization/i);
  });
});

// ---- Redis -----------------------------------------------------------------------------------------

interface RedisProc {
  url: string;
  stop(): Promise<void>;
}

/** redis-server with the given extra arguments (ACL, TLS), on a free loopback port. */
async function redisServer(args: (port: number) => string[], scheme = 'redis'): Promise<RedisProc> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmp, 'redis-'));
  const child = spawn('redis-server', ['--bind', '127.0.0.1', '--save', '', '--dir', dir, ...args(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    let seen = '';
    const t = setTimeout(() => reject(new Error(`redis-server not ready:\n${seen}`)), 15_000);
    const on = (b: Buffer): void => {
      seen += b.toString();
      if (/Ready to accept connections/.test(seen)) {
        clearTimeout(t);
        resolve();
      }
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.once('exit', (code) => reject(new Error(`redis-server exited ${code}:\n${seen}`)));
  });
  child.stdout.resume();
  child.stderr.resume();
  return {
    url: `${scheme}://127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
    },
  };
}

const H = (n: number): string => n.toString(16).padStart(64, '0');

describe('Redis authentication and TLS from config', () => {
  it('an ACL user from redis.username/redis.password gets in; no credentials: NOAUTH, never a hit', async () => {
    const r = await redisServer((port) => ['--port', String(port), '--requirepass', 'admin-pw']);
    const admin = new Redis(r.url, { password: 'admin-pw' });
    await admin.call(
      'ACL',
      ...'SETUSER kvfabric on >r-s3cret ~kvf:* resetchannels -@all +@connection +info +get +set +del +exists +pexpire +evalsha +eval +script|load'.split(
        ' ',
      ),
    );
    admin.disconnect();
    try {
      const cfg = parseConfig({ redis: { url: r.url, username: 'kvfabric', password: 'r-s3cret' } });
      const idx = new PrefixIndex({ url: r.url, redis: redisOptions(cfg) });
      expect(await idx.ready(5000)).toBe(true);
      expect(await idx.publish([{ hash: H(1), meta: { m: 'tiny-test', i: 0 } }])).toBe(true);
      expect(await idx.longestPrefix([H(1), H(2)])).toEqual({ chunks: 1, degraded: false });
      await idx.close();

      const anon = new PrefixIndex({ url: r.url, commandTimeoutMs: 500 });
      await anon.ready(1000);
      expect(await anon.longestPrefix([H(1)])).toEqual({ chunks: 0, degraded: true });
      await anon.close();
      const raw = new Redis(r.url, { lazyConnect: true, maxRetriesPerRequest: 0, enableReadyCheck: false });
      await raw.connect().catch(() => undefined);
      await expect(raw.exists(`kvf:idx:${H(1)}`)).rejects.toThrow(/NOAUTH|NOPERM/);
      raw.disconnect();
    } finally {
      await r.stop();
    }
  });

  it('TLS: redis.tlsCaFile verifies the server; the wrong CA is refused', async () => {
    const r = await redisServer(
      (port) => [
        '--port',
        '0',
        '--tls-port',
        String(port),
        '--tls-cert-file',
        certs.serverCert,
        '--tls-key-file',
        certs.serverKey,
        '--tls-ca-cert-file',
        certs.caFile,
        '--tls-auth-clients',
        'no',
        '--requirepass',
        'tls-pw',
      ],
      'rediss',
    );
    try {
      const cfg = parseConfig({ redis: { url: r.url, password: 'tls-pw', tlsCaFile: certs.caFile } });
      const idx = new PrefixIndex({ url: r.url, redis: redisOptions(cfg) });
      expect(await idx.ready(5000)).toBe(true);
      expect(await idx.publish([{ hash: H(7), meta: { m: 'tiny-test', i: 0 } }])).toBe(true);
      expect(await idx.longestPrefix([H(7)])).toEqual({ chunks: 1, degraded: false });
      await idx.close();
      const wrong = parseConfig({ redis: { url: r.url, password: 'tls-pw', tlsCaFile: certs.otherCaFile } });
      const bad = new PrefixIndex({ url: r.url, redis: redisOptions(wrong), commandTimeoutMs: 500 });
      expect(await bad.ready(1500)).toBe(false);
      expect((await bad.longestPrefix([H(7)])).chunks).toBe(0);
      await bad.close();
    } finally {
      await r.stop();
    }
  });
});

/**
 * The deployment files, exercised as far as this machine allows (no Docker engine, no GPU):
 * - docker-compose.yml validated by Debian's docker-compose and resolved by it; every kvfabric
 *   service runs a real subcommand with a config `kvfabric config validate` accepts (with the
 *   image's and the service's environment); the Dockerfile's runtime layout runs the CLI.
 * - the systemd units: keys, systemd-analyze verify, configs valid with the units' environment.
 * - the bare-metal NATS config as a real three-server loopback cluster (routes rewritten to
 *   127.0.0.1 ports; `sync_interval` stripped because Debian's nats-server 2.9 rejects it) with the
 *   per-role users and permissions; the bare-metal redis.conf on a real redis-server.
 */
import { spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Kvm } from '@nats-io/kv';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';

import { COMMANDS } from '../../services/cli/main.js';
import { ensureBuckets } from '../../shared/cluster/buckets.js';
import { PrefixIndex } from '../../shared/index/prefix-index.js';
import { freePort, startNatsServer, type ServerHandle } from '../../shared/local-servers.js';
import { uniq } from '../harness/servers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const baremetal = path.join(repo, 'cluster-config/baremetal');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'kvf-deploy-'));

function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KVFABRIC_')));
  return { ...env, ...extra };
}

function kvfabric(args: string[], env: Record<string, string>, cwd = repo) {
  return spawnSync(process.execPath, [path.join(cwd, 'bin/kvfabric.js'), ...args], {
    cwd,
    env: cleanEnv(env),
    encoding: 'utf8',
    timeout: 30_000,
  });
}

/** `KEY=value` lines of an env file (comments and blanks ignored). */
function envFile(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out[m[1] as string] = m[2] as string;
  }
  return out;
}

/** ENV of the Dockerfile's final stage (`ENV A=1 \ B=2`). */
function dockerfileEnv(text: string): Record<string, string> {
  const runtime = text.slice(text.lastIndexOf('\nFROM '));
  const out: Record<string, string> = {};
  for (const m of runtime.replace(/\\\n/g, ' ').matchAll(/^ENV (.+)$/gm)) {
    for (const kv of (m[1] as string).matchAll(/([A-Z_][A-Z0-9_]*)=(\S+)/g))
      out[kv[1] as string] = kv[2] as string;
  }
  return out;
}

beforeAll(() => {
  const tsc = path.join(repo, 'node_modules/typescript/bin/tsc');
  spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: repo, encoding: 'utf8' });
  if (!existsSync(path.join(repo, 'dist/services/cli/main.js')))
    throw new Error('TypeScript build produced no CLI');
}, 120_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// ---- docker-compose.yml and the Dockerfile --------------------------------------------------

const compose = spawnSync('docker-compose', ['version'], { encoding: 'utf8' });
const composeMissing = compose.error !== undefined;
if (composeMissing) {
  console.warn(
    'deploy-configs: docker-compose is not installed (scripts/bootstrap.sh installs it): compose validation SKIPPED',
  );
}

interface ComposeService {
  image?: string;
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  healthcheck?: { test?: string[] };
  profiles?: string[];
  deploy?: {
    resources?: {
      reservations?: { devices?: { driver?: string; device_ids?: string[]; capabilities?: string[] }[] };
    };
  };
}

function composeConfig(): Record<string, ComposeService> {
  const r = spawnSync(
    'docker-compose',
    ['--profile', 'gpu', '--profile', 'host', '--profile', 'tools', 'config'],
    {
      cwd: repo,
      encoding: 'utf8',
      env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KVF_'))),
    },
  );
  expect(r.stderr).not.toMatch(/error|invalid/i);
  expect(r.status).toBe(0);
  return (parseYaml(r.stdout) as { services: Record<string, ComposeService> }).services;
}

describe.skipIf(composeMissing)('docker-compose.yml (validated by docker-compose)', () => {
  it('docker-compose config -q accepts it', () => {
    const r = spawnSync('docker-compose', ['config', '-q'], { cwd: repo, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('has three NATS servers, Redis, two coordinators and three shard nodes per profile, all health-checked', () => {
    const services = composeConfig();
    for (const [name, svc] of Object.entries(services)) {
      expect(svc.healthcheck?.test?.length, `${name} has a healthcheck`).toBeGreaterThan(0);
    }
    const nats = Object.entries(services).filter(([n]) => /^nats-\d$/.test(n));
    expect(nats.map(([, s]) => s.environment?.KVF_NATS_SERVER_NAME).sort()).toEqual([
      'nats-1',
      'nats-2',
      'nats-3',
    ]);
    for (const [, s] of nats) {
      expect(s.image).toMatch(/^nats:2\.(1[2-9]|[2-9]\d)\./); // >= 2.12 (sync_interval)
      const mounts = (s.volumes ?? []).map((v) => v.split(':'));
      for (const [host, inContainer] of mounts.filter(([h]) => h?.startsWith('/'))) {
        expect(existsSync(host as string), `${host} -> ${inContainer}`).toBe(true);
      }
      expect(mounts.map(([, c]) => c)).toEqual(
        expect.arrayContaining(['/etc/nats/nats.conf', '/etc/nats/auth.conf']),
      );
    }
    expect(readFileSync(path.join(repo, 'cluster-config/docker/nats.conf'), 'utf8')).toMatch(
      /^\s*sync_interval: always$/m,
    );
    expect(services.redis?.volumes?.[0]).toMatch(/cluster-config\/baremetal\/redis\/redis\.conf:/);
    const ofImage = Object.entries(services).filter(([, s]) => s.image?.startsWith('kvfabric:'));
    const bySub = (sub: string, profile?: string) =>
      ofImage.filter(([, s]) => s.command?.[0] === sub && (s.profiles ?? [])[0] === profile);
    expect(bySub('coordinator')).toHaveLength(2);
    for (const profile of ['gpu', 'host']) {
      const shards = bySub('shard-node', profile);
      expect(shards).toHaveLength(3);
      expect(new Set(shards.map(([, s]) => s.environment?.KVFABRIC_SHARD_ID)).size).toBe(3);
    }
    for (const [name, s] of bySub('shard-node', 'gpu')) {
      const devices = s.deploy?.resources?.reservations?.devices ?? [];
      expect(devices, name).toEqual([expect.objectContaining({ driver: 'nvidia', capabilities: ['gpu'] })]);
    }
    const gpuIds = bySub('shard-node', 'gpu').map(
      ([, s]) => s.deploy?.resources?.reservations?.devices?.[0]?.device_ids?.[0],
    );
    expect(new Set(gpuIds).size).toBe(3);
  });

  it('every kvfabric service runs a real subcommand with a mounted config that validates under its environment', () => {
    const services = composeConfig();
    const imageEnv = dockerfileEnv(readFileSync(path.join(repo, 'Dockerfile'), 'utf8'));
    expect(imageEnv).toMatchObject({ UCX_MEM_MMAP_HOOK_MODE: 'none', KVFABRIC_METRICS_PORT: '9400' });
    const ours = Object.entries(services).filter(([, s]) => s.image?.startsWith('kvfabric:'));
    expect(ours.length).toBeGreaterThanOrEqual(8);
    for (const [name, svc] of ours) {
      const [sub, flag, file, ...rest] = svc.command ?? [];
      expect(
        COMMANDS.map((c) => c.name),
        name,
      ).toContain(sub);
      expect([flag, rest], name).toEqual(['--config', []]);
      const mount = (svc.volumes ?? []).map((v) => v.split(':')).find(([, c]) => c === '/etc/kvfabric');
      expect(mount?.[0], name).toBe(baremetal);
      const local = path.join(baremetal, path.relative('/etc/kvfabric', file as string));
      expect(existsSync(local), `${name}: ${local}`).toBe(true);
      const env = { ...imageEnv, ...(svc.environment ?? {}) };
      const r = kvfabric(['config', 'validate', local], env);
      expect(r.stderr, name).toBe('');
      expect(r.status, name).toBe(0);
      // The health check probes the metrics port the service actually serves on.
      expect(JSON.stringify(svc.healthcheck?.test), name).toContain(
        `127.0.0.1:${env.KVFABRIC_METRICS_PORT}/healthz`,
      );
    }
  });
});

describe('Dockerfile', () => {
  const text = readFileSync(path.join(repo, 'Dockerfile'), 'utf8');

  it('builds in one stage and runs as a non-root user from a slim Debian stage with libucx0', () => {
    const froms = [...text.matchAll(/^FROM (\S+)(?: AS (\S+))?$/gm)].map((m) => [m[1], m[2]]);
    expect(froms).toEqual([
      ['node:${NODE_VERSION}-bookworm', 'build'],
      ['node:${NODE_VERSION}-bookworm-slim', 'runtime'],
    ]);
    const runtime = text.slice(text.indexOf('AS runtime'));
    expect(runtime).toMatch(/install -y --no-install-recommends libucx0/);
    expect(runtime).not.toMatch(/libucx-dev|cmake|g\+\+/);
    expect(runtime).toMatch(/^USER kvfabric:kvfabric$/m);
    expect(runtime).toMatch(/^ENTRYPOINT \["node", "bin\/kvfabric\.js"\]$/m);
    expect(runtime).toMatch(/^HEALTHCHECK [\s\S]*\/healthz/m);
  });

  it("the runtime stage's files run the CLI: version and a config validation from a copy of that layout", () => {
    const root = path.join(tmp, 'image');
    mkdirSync(root);
    const copies = [...text.matchAll(/^COPY --from=build \/src\/(\S+) \.\/(\S+)$/gm)];
    expect(copies.map((m) => m[1])).toEqual(
      expect.arrayContaining([
        'package.json',
        'node_modules',
        'dist',
        'bin',
        'native/build/Release/kvfabric_native.node',
      ]),
    );
    for (const [, from, to] of copies) {
      const src = path.join(repo, from as string);
      expect(existsSync(src), `${from as string} is built here`).toBe(true);
      const dst = path.join(root, to as string);
      mkdirSync(path.dirname(dst), { recursive: true });
      if (from === 'node_modules') symlinkSync(src, dst);
      else cpSync(src, dst, { recursive: true });
    }
    cpSync(path.join(repo, 'cluster-config'), path.join(root, 'cluster-config'), { recursive: true });
    const env = dockerfileEnv(text);
    const v = kvfabric(['version'], env, root);
    expect(v.stderr).toBe('');
    expect(v.stdout).toMatch(/^kvfabric \d+\.\d+\.\d+$/m);
    const c = kvfabric(
      ['config', 'validate', 'cluster-config/baremetal/coordinator.yaml'],
      { ...env, KVFABRIC_NATS_PASS: 'x' },
      root,
    );
    expect(c.status).toBe(0);
    expect(c.stdout).toMatch(/metrics 0\.0\.0\.0:9400/);
  });
});

// ---- systemd units ------------------------------------------------------------------------------

const unitsDir = path.join(baremetal, 'systemd');

function unitKeys(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) out.set(m[1] as string, [...(out.get(m[1] as string) ?? []), m[2] as string]);
  }
  return out;
}

describe('systemd units', () => {
  const units = readdirSync(unitsDir).filter((f) => f.endsWith('.service'));

  it('every unit restarts on failure; kvfabric units pin memory without limit and disable UCX mmap hooks', () => {
    expect(units.sort()).toEqual([
      'kvfabric-coordinator.service',
      'kvfabric-nats.service',
      'kvfabric-replica.service',
      'kvfabric-shard-node@.service',
    ]);
    for (const u of units) {
      const k = unitKeys(readFileSync(path.join(unitsDir, u), 'utf8'));
      expect(k.get('Restart'), u).toEqual(['on-failure']);
      if (u === 'kvfabric-nats.service') continue;
      expect(k.get('LimitMEMLOCK'), u).toEqual(['infinity']);
      expect(k.get('Environment'), u).toContain('UCX_MEM_MMAP_HOOK_MODE=none');
      expect(k.get('KillSignal'), u).toEqual(['SIGTERM']);
    }
  });

  it('systemd-analyze verify finds no unknown keys or bad values (when systemd is installed)', () => {
    const probe = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (probe.error) {
      console.warn('deploy-configs: systemd-analyze not installed: unit syntax verification not run');
      return;
    }
    for (const u of units) {
      const copy = path.join(tmp, u.replace('@.service', '@0.service'));
      cpSync(path.join(unitsDir, u), copy);
      const r = spawnSync('systemd-analyze', ['verify', '--man=no', copy], { encoding: 'utf8' });
      const problems = (r.stderr + r.stdout)
        .split('\n')
        .filter((l) => l.trim() !== '' && !/is not executable|No such file or directory/.test(l));
      expect(problems, u).toEqual([]);
    }
  });

  it("each kvfabric unit's ExecStart is a real subcommand whose config validates with the unit's environment", () => {
    const host = envFile(path.join(unitsDir, 'host.env.example'));
    for (const u of units.filter((x) => x.startsWith('kvfabric-') && x !== 'kvfabric-nats.service')) {
      const text = readFileSync(path.join(unitsDir, u), 'utf8').replace(/%i/g, '0');
      const k = unitKeys(text);
      const env: Record<string, string> = {};
      for (const f of k.get('EnvironmentFile') ?? []) {
        Object.assign(env, envFile(path.join(unitsDir, `${path.basename(f)}.example`)));
      }
      for (const e of k.get('Environment') ?? []) {
        const [name, ...value] = e.split('=');
        env[name as string] = value.join('=');
      }
      const exec = (k.get('ExecStart')?.[0] ?? '').replace(/\$\{(\w+)\}/g, (_m, v: string) => host[v] ?? '');
      const words = exec.split(/\s+/);
      const node = words.indexOf('/usr/bin/node');
      for (const w of words.slice(0, node)) {
        const m = /^([A-Z_]+)=(.*)$/.exec(w);
        if (m) env[m[1] as string] = m[2] as string;
      }
      const [script, sub, flag, file] = words.slice(node + 1);
      expect(script, u).toBe('/opt/kvfabric/bin/kvfabric.js');
      expect(
        COMMANDS.map((c) => c.name),
        u,
      ).toContain(sub);
      expect(flag, u).toBe('--config');
      const local = path.join(baremetal, path.relative('/etc/kvfabric', file as string));
      const r = kvfabric(['config', 'validate', local], env);
      expect(r.stderr, u).toBe('');
      expect(r.status, u).toBe(0);
      if (sub === 'shard-node') expect(env.KVFABRIC_SHARD_ID).toBe(`${host.KVF_HOST_ID}-gpu0`);
    }
  });
});

// ---- NATS: the bare-metal cluster config on loopback ---------------------------------------------

const PASS = {
  KVF_NATS_COORDINATOR_PASS: 'coord-secret',
  KVF_NATS_SHARD_PASS: 'shard-secret',
  KVF_NATS_REPLICA_PASS: 'replica-secret',
  KVF_NATS_WORKER_PASS: 'worker-secret',
  KVF_NATS_SYS_PASS: 'sys-secret',
  KVF_NATS_SERVER_NAME: 'overridden-by-n-flag',
};

/** The bare-metal server config with loopback addresses; the only semantic change is sync_interval. */
function loopbackNatsConfig(clientPort: number, clusterPort: number, routePorts: number[]): string {
  const text = readFileSync(path.join(baremetal, 'nats/nats-server.conf'), 'utf8');
  expect(text).toMatch(/^\s*sync_interval: always$/m);
  return text
    .replace(/^\s*sync_interval: always\n/m, '') // Debian's 2.9 rejects it; production pins >= 2.12.3
    .replace(/^\s*store_dir: .*\n/m, '') // the harness passes a temp store dir (-sd)
    .replace(/^listen: .*$/m, `listen: 127.0.0.1:${clientPort}`)
    .replace(/^http: .*$/m, '') // monitoring port not needed here
    .replace(/^(\s*)listen: 0\.0\.0\.0:6222$/m, `$1listen: 127.0.0.1:${clusterPort}`)
    .replace(
      /routes: \[[^\]]*\]/,
      `routes: [${routePorts.map((p) => `nats-route://127.0.0.1:${p}`).join(', ')}]`,
    );
}

describe('bare-metal NATS cluster config (three servers on loopback, per-role users)', () => {
  const servers: ServerHandle[] = [];
  const conns: NatsConnection[] = [];
  let url = '';
  const saved = { ...process.env };

  beforeAll(async () => {
    Object.assign(process.env, PASS); // nats-server resolves $KVF_NATS_* from its environment
    const clientPorts = [await freePort(), await freePort(), await freePort()];
    const clusterPorts = [await freePort(), await freePort(), await freePort()];
    const started = await Promise.all(
      [0, 1, 2].map((i) => {
        const dir = mkdtempSync(path.join(tmp, `nats${i}-`));
        cpSync(path.join(baremetal, 'nats/auth.conf'), path.join(dir, 'auth.conf'));
        return startNatsServer({
          port: clientPorts[i] as number,
          serverName: `gpu-${i + 1}`,
          storeDir: dir,
          configText: loopbackNatsConfig(clientPorts[i] as number, clusterPorts[i] as number, clusterPorts),
        });
      }),
    );
    servers.push(...started);
    url = started[0]?.url as string;
    // JetStream in a cluster answers once the meta group has a leader.
    const nc = await connect({ servers: url, user: 'coordinator', pass: PASS.KVF_NATS_COORDINATOR_PASS });
    conns.push(nc);
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await (await jetstreamManager(nc)).getAccountInfo();
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }, 60_000);

  afterAll(async () => {
    await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
    await Promise.all(servers.map((s) => s.stop()));
    for (const k of Object.keys(PASS)) if (!(k in saved)) delete process.env[k];
  });

  const as = async (user: string, pass: string): Promise<NatsConnection> => {
    const nc = await connect({ servers: url, user, pass });
    conns.push(nc);
    return nc;
  };

  it('refuses a client without credentials and a worker with a wrong password', async () => {
    await expect(connect({ servers: url, reconnect: false })).rejects.toThrow(/authorization/i);
    await expect(connect({ servers: url, user: 'worker', pass: 'nope', reconnect: false })).rejects.toThrow(
      /authorization/i,
    );
  });

  it('forms a three-server JetStream cluster: the coordinator creates the buckets with replicas 3', async () => {
    const coord = conns[0] as NatsConnection;
    expect(coord.info?.cluster).toBe('kvfabric');
    // Right after the meta leader is elected the servers may not all be placement peers yet.
    const deadline = Date.now() + 30_000;
    let b: Awaited<ReturnType<typeof ensureBuckets>>;
    for (;;) {
      try {
        b = await ensureBuckets(coord, { replicas: 3 });
        break;
      } catch (err) {
        if (Date.now() > deadline || !/no suitable peers/.test(String((err as Error).cause))) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    const si = await b.jsm.streams.info('KV_kvf_placement');
    expect(si.config.num_replicas).toBe(3);
    expect((si.cluster?.replicas ?? []).length).toBe(2); // leader + 2 replicas
    await b.placement.put('table', JSON.stringify({ epoch: 1 }));
  });

  it('a worker binds the buckets read-only and watches placement, but cannot write a bucket', async () => {
    const worker = await as('worker', PASS.KVF_NATS_WORKER_PASS);
    const b = await ensureBuckets(worker); // the SDK's own path: info only, never create
    expect((await b.placement.get('table'))?.string()).toBe(JSON.stringify({ epoch: 1 }));
    const w = await b.placement.watch({ key: 'table' });
    const first = await w[Symbol.asyncIterator]().next();
    expect(first.value?.string()).toBe(JSON.stringify({ epoch: 1 }));
    w.stop();
    await expect(b.placement.put('table', 'hijack')).rejects.toThrow(/permission|timeout/i);
    await expect(new Kvm(jetstream(worker)).create('kvf_evil')).rejects.toThrow();
    const coord = conns[0] as NatsConnection;
    expect((await (await ensureBuckets(coord)).placement.get('table'))?.string()).toBe(
      JSON.stringify({ epoch: 1 }),
    );
  });

  it('a worker may send shard data requests but is refused on shard admin subjects', async () => {
    const node = uniq('n');
    const shard = await as('shard-node', PASS.KVF_NATS_SHARD_PASS);
    const locate = shard.subscribe(`kvf.v1.shard.${node}.locate`, {
      callback: (_e, m) => void m.respond('located'),
    });
    const adminSeen: string[] = [];
    const admin = shard.subscribe(`kvf.v1.shard.${node}.admin.>`, {
      callback: (_e, m) => void adminSeen.push(m.subject),
    });
    await shard.flush();

    const worker = await as('worker', PASS.KVF_NATS_WORKER_PASS);
    const reply = await worker.request(`kvf.v1.shard.${node}.locate`, '{}', { timeout: 3000 });
    expect(reply.string()).toBe('located');

    const violations: string[] = [];
    void (async () => {
      for await (const s of worker.status()) {
        if (s.type === 'error') violations.push(String((s as { error?: Error }).error?.message));
      }
    })();
    // Administration and node-to-node replication subjects are refused to workers.
    const forbidden = ['admin.drain', 'replicate', 'resync', 'drop_copies', 'list_cell', 'debug_corrupt'];
    for (const op of forbidden) worker.publish(`kvf.v1.shard.${node}.${op}`, '{}');
    await worker.flush();
    await new Promise((r) => setTimeout(r, 300));
    for (const op of forbidden) {
      expect(violations.join('\n')).toContain(
        `Permissions Violation for Publish to "kvf.v1.shard.${node}.${op}"`,
      );
    }
    // report_corrupt is a worker's to send (a reader that saw a bad checksum tells the node).
    const corrupt = shard.subscribe(`kvf.v1.shard.${node}.report_corrupt`, {
      callback: (_e, m) => void m.respond('noted'),
    });
    await shard.flush();
    expect(
      (await worker.request(`kvf.v1.shard.${node}.report_corrupt`, '{}', { timeout: 3000 })).string(),
    ).toBe('noted');
    corrupt.unsubscribe();

    // The coordinator may administer shard nodes: the same subject reaches the shard.
    const coord = conns[0] as NatsConnection;
    coord.publish(`kvf.v1.shard.${node}.admin.drain`, '{}');
    await coord.flush();
    await new Promise((r) => setTimeout(r, 300));
    expect(adminSeen).toEqual([`kvf.v1.shard.${node}.admin.drain`]); // only the coordinator's
    locate.unsubscribe();
    admin.unsubscribe();
  });

  it('a shard node cannot write placement or the leader lease; it may heartbeat into members', async () => {
    const shard = await as('shard-node', PASS.KVF_NATS_SHARD_PASS);
    const b = await ensureBuckets(shard);
    await b.members.put(uniq('node'), 'alive');
    await expect(b.placement.put('table', 'mine')).rejects.toThrow(/permission|timeout/i);
    await expect(b.leader.put('lease', 'mine')).rejects.toThrow(/permission|timeout/i);
  });
});

// ---- Redis: the bare-metal redis.conf ------------------------------------------------------------

describe('bare-metal redis.conf (ACL users)', () => {
  let redisHandle: { url: string; port: number; stop: () => Promise<void> } | undefined;
  const password = 'kvfabric-dev-password'; // the documented development password redis.conf hashes

  beforeAll(async () => {
    // The harness starts redis-server with flags; run it from the config file instead.
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmp, 'redis-'));
    const { spawn } = await import('node:child_process');
    const child = spawn(
      'redis-server',
      [
        path.join(baremetal, 'redis/redis.conf'),
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--maxmemory',
        '64mb',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server not ready:\n${out}`)), 15_000);
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => reject(new Error(`redis-server exited ${code}:\n${out}`)));
    });
    redisHandle = {
      url: `redis://127.0.0.1:${port}`,
      port,
      stop: () =>
        new Promise((r) => {
          child.once('exit', () => r());
          child.kill('SIGKILL');
        }),
    };
  }, 30_000);
  afterAll(async () => {
    await redisHandle?.stop();
  });

  const client = (user: string, pass: string): Redis =>
    new Redis(redisHandle?.port as number, '127.0.0.1', {
      username: user,
      password: pass,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });

  it('the kvfabric ACL user runs the prefix index (publish, longest prefix, remove) on kvf:* keys', async () => {
    // As the configs do it: the ACL user and password in redis.url (KVFABRIC_REDIS_URL).
    const idx = new PrefixIndex({
      url: `redis://kvfabric:${password}@127.0.0.1:${redisHandle?.port}`,
      keyPrefix: 'kvf',
    });
    try {
      expect(await idx.ready(5000)).toBe(true);
      const hashes = [uniq('h'), uniq('h'), uniq('h')];
      expect(
        await idx.publish(hashes.slice(0, 2).map((hash, i) => ({ hash, meta: { m: 'tiny-test', i } }))),
      ).toBe(true);
      expect(await idx.longestPrefix(hashes)).toEqual({ chunks: 2, degraded: false });
      expect(await idx.remove(hashes)).toBe(true);
      expect(await idx.longestPrefix(hashes)).toEqual({ chunks: 0, degraded: false });
    } finally {
      await idx.close();
    }
  });

  it('refuses a wrong password, no authentication, keys outside kvf:* and admin commands', async () => {
    // ioredis rejects connect() with "Connection is closed" and reports the cause as an error event.
    const wrong = client('kvfabric', 'wrong');
    const causes: string[] = [];
    wrong.on('error', (err: Error) => causes.push(err.message));
    await expect(wrong.connect()).rejects.toThrow();
    expect(causes.join('\n')).toMatch(/WRONGPASS/);
    wrong.disconnect();

    const anon = new Redis(redisHandle?.port as number, '127.0.0.1', {
      lazyConnect: true,
      enableReadyCheck: false, // the ready check's INFO would already fail with NOAUTH
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    anon.on('error', () => undefined);
    await anon.connect();
    await expect(anon.get('kvf:idx:x')).rejects.toThrow(/NOAUTH/);
    anon.disconnect();

    const ok = client('kvfabric', password);
    await ok.connect();
    await expect(ok.set('other:key', '1')).rejects.toThrow(/NOPERM/);
    await expect(ok.flushall()).rejects.toThrow(/NOPERM/);
    await expect(ok.config('GET', 'requirepass')).rejects.toThrow(/NOPERM/);
    await expect(ok.eval('return redis.call("SET", KEYS[1], "1")', 1, 'other:key')).rejects.toThrow(/NOPERM/);
    ok.disconnect();

    const probe = client('probe', 'anything');
    await probe.connect();
    expect(await probe.ping()).toBe('PONG');
    await expect(probe.get('kvf:idx:x')).rejects.toThrow(/NOPERM/);
    probe.disconnect();
  });
});

// ---- Grafana dashboard vs the metrics contract of docs/operations.md ----------------------------

/** Metric names of the "Metrics" table in docs/operations.md (the contract), with their types. */
function metricsContract(): Map<string, string> {
  const doc = readFileSync(path.join(repo, 'docs/operations.md'), 'utf8');
  const start = doc.indexOf('\n## Metrics\n');
  expect(start).toBeGreaterThan(0);
  const section = doc.slice(start, doc.indexOf('\n## ', start + 5));
  const out = new Map<string, string>();
  for (const m of section.matchAll(/^\| `(kvfabric_[a-z_]+)` +\| (counter|gauge|histogram) /gm)) {
    out.set(m[1] as string, m[2] as string);
  }
  return out;
}

/** PromQL words that are not metric names: functions, keywords, label names, variables. */
const PROMQL_WORDS = new Set([
  'sum',
  'rate',
  'increase',
  'histogram_quantile',
  'clamp_min',
  'max',
  'min',
  'avg',
  'by',
  'without',
  'le',
  'instance',
  'direction',
  'model',
  'reason',
  'label_values',
  'e',
  'job',
]);

describe('cluster-config/grafana-dashboard.json', () => {
  const dash = JSON.parse(readFileSync(path.join(repo, 'cluster-config/grafana-dashboard.json'), 'utf8')) as {
    panels: { title: string; targets?: { expr: string }[] }[];
    templating: { list: { query?: unknown }[] };
  };
  const exprs = [
    ...dash.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: p.title, expr: t.expr }))),
    ...dash.templating.list
      .filter((v) => typeof v.query === 'string' && v.query.includes('('))
      .map((v) => ({ where: 'templating', expr: v.query as string })),
  ];

  it('every expression references only metrics of the contract (histograms by _bucket/_sum/_count)', () => {
    const contract = metricsContract();
    expect(contract.size).toBe(12);
    expect(exprs.length).toBeGreaterThanOrEqual(12);
    for (const { where, expr } of exprs) {
      const body = expr
        .replace(/"[^"]*"/g, '""') // label values
        .replace(/\$\w+/g, '') // Grafana variables ($instance, $__rate_interval)
        .replace(/\[[^\]]*\]/g, ''); // range selectors
      const words = [...body.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)].map((m) => m[0]);
      for (const w of words) {
        if (PROMQL_WORDS.has(w)) continue;
        const base = w.replace(/_(bucket|sum|count)$/, '');
        const known =
          contract.get(w) ?? (base !== w && contract.get(base) === 'histogram' ? 'histogram' : undefined);
        expect(known, `${where}: ${w} in ${expr}`).toBeDefined();
        if (contract.get(w) === 'histogram')
          throw new Error(`${where}: histogram ${w} used without a suffix`);
      }
    }
  });

  it('has a panel for every metric of the contract: hit rate, bytes/s, p50/p99, fill, evictions, checksums, failovers, epoch', () => {
    const all = exprs.map((e) => e.expr).join('\n');
    for (const name of metricsContract().keys()) expect(all, name).toContain(name);
    expect(all).toMatch(
      /kvfabric_prefix_cache_hits_total[^/]*\/ clamp_min\(sum\(rate\(kvfabric_prefix_cache_queries_total/,
    );
    for (const op of ['get', 'put']) {
      for (const q of ['0.5', '0.99']) {
        expect(all).toContain(
          `histogram_quantile(${q}, sum by (le) (rate(kvfabric_${op}_latency_seconds_bucket`,
        );
      }
    }
  });
});

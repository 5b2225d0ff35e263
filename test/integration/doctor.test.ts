/**
 * `kvfabric doctor` as users run it (the built CLI), against real nats-server and redis-server:
 * a healthy setup exits 0; NATS unreachable or JetStream off exits 1 with the fix; a Redis with
 * the wrong password is a warning (lookups degrade), not a failure.
 */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  missingTransports,
  parseUcxInfo,
  lockedMemoryLimit,
  checkMemlock,
} from '../../services/cli/doctor/host.js';
import { versionLess } from '../../services/cli/doctor/types.js';
import { ensureBuckets } from '../../shared/cluster/buckets.js';
import { findBinary, freePort, startRedisServer, type ServerHandle } from '../../shared/local-servers.js';
import { useServers } from '../harness/servers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.join(repo, 'bin/kvfabric.js');

interface Report {
  ok: boolean;
  checks: { id: string; status: string; summary: string; fix?: string }[];
}

function doctor(args: string[], env: Record<string, string>): SpawnSyncReturns<string> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KVFABRIC_')));
  return spawnSync(process.execPath, [bin, 'doctor', ...args], {
    cwd: repo,
    // No GPU on the test machine: host arenas, so the CUDA check is not what decides the result.
    env: { ...base, UCX_NET_DEVICES: 'lo', KVFABRIC_SHARD_ARENA_KIND: 'host', ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
}

function byId(r: Report): Record<string, { status: string; summary: string; fix?: string }> {
  return Object.fromEntries(r.checks.map((c) => [c.id, c]));
}

beforeAll(() => {
  const tsc = path.join(repo, 'node_modules/typescript/bin/tsc');
  spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: repo, encoding: 'utf8' });
  if (!existsSync(path.join(repo, 'dist/services/cli/commands/doctor.js')))
    throw new Error('doctor not built');
}, 120_000);

describe('kvfabric doctor', () => {
  const fx = useServers();

  beforeAll(async () => {
    // A cluster that has run: the kvfabric streams exist, so the clock check has a clock to read.
    const nc = await connect({ servers: fx.nats.url });
    await ensureBuckets(nc);
    await nc.close();
  });

  it('all good: every check ok or a warning, exit 0, JSON lists each check', () => {
    const r = doctor(['--config', 'cluster-config/local.yaml', '--json'], {
      KVFABRIC_NATS_SERVERS: fx.nats.url,
      KVFABRIC_REDIS_URL: fx.redis.url,
    });
    expect(r.stderr).toBe('');
    const report = JSON.parse(r.stdout) as Report;
    const c = byId(report);
    expect(Object.keys(c)).toEqual([
      'native',
      'ucx-mmap-hook',
      'cuda',
      'ucx-transports',
      'ucx-probe',
      'memlock',
      'nats',
      'jetstream',
      'clock',
      'redis',
    ]);
    expect(r.status).toBe(0);
    expect(report.ok).toBe(true);
    for (const id of [
      'native',
      'ucx-mmap-hook',
      'cuda',
      'ucx-transports',
      'memlock',
      'jetstream',
      'clock',
      'redis',
    ]) {
      expect(c[id]?.status, `${id}: ${c[id]?.summary}`).toBe('ok');
    }
    expect(c['ucx-probe']?.summary).toMatch(/loopback get \d+\.\d+ GB\/s/);
    expect(['ok', 'warn']).toContain(c['ucx-probe']?.status);
    // Debian's nats-server 2.9 is reachable but older than production needs: a warning with the reason.
    expect(c.nats?.status).toBe('warn');
    expect(c.nats?.summary).toMatch(/nats-server 2\.\d+\.\d+/);
    expect(c.nats?.fix).toMatch(/2\.12\.3.*sync_interval: always/);
    expect(c.jetstream?.summary).toMatch(/KV_kvf_placement R1/);
    expect(c.clock?.summary).toMatch(/NATS server by \d+ ms/);
    expect(c.redis?.summary).toMatch(/read\/write\/script on kvf:\* allowed/);
  });

  it('NATS unreachable: exit 1, a FAIL line for nats with the fix, JetStream and clock skipped', async () => {
    const port = await freePort(); // nothing listens there
    const r = doctor(['--config', 'cluster-config/local.yaml'], {
      KVFABRIC_NATS_SERVERS: `nats://127.0.0.1:${port}`,
      KVFABRIC_REDIS_URL: fx.redis.url,
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(
      new RegExp(`^  FAIL +nats +cannot connect to NATS at nats://127\\.0\\.0\\.1:${port}`, 'm'),
    );
    expect(r.stdout).toMatch(/fix: start nats-server \(systemctl status kvfabric-nats/);
    expect(r.stdout).toMatch(/^ {2}skip +jetstream +needs NATS$/m);
    expect(r.stdout).toMatch(/^result: this node CANNOT serve \(1 failed/m);
  });

  it('JetStream disabled on the server: exit 1 with the JetStream fix', async () => {
    const port = await freePort();
    const child = spawn(findBinary('nats-server', 'nats-server'), ['-a', '127.0.0.1', '-p', String(port)], {
      stdio: 'ignore',
    });
    try {
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          await (await connect({ servers: `nats://127.0.0.1:${port}` })).close();
          break;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((res) => setTimeout(res, 100));
        }
      }
      const r = doctor(['--json'], {
        KVFABRIC_NATS_SERVERS: `nats://127.0.0.1:${port}`,
        KVFABRIC_REDIS_URL: fx.redis.url,
      });
      expect(r.status).toBe(1);
      const c = byId(JSON.parse(r.stdout) as Report);
      expect(c.jetstream?.status).toBe('fail');
      expect(c.jetstream?.fix).toMatch(/enable JetStream/);
      expect(c.nats?.status).toBe('warn'); // reachable (old version), not the failure
    } finally {
      child.kill('SIGKILL');
    }
  });

  describe('Redis with a password', () => {
    let redis: ServerHandle | undefined;
    beforeAll(async () => {
      redis = await startRedisServer({ password: 'right-password' });
    });
    afterAll(async () => {
      await redis?.stop();
    });

    it('a wrong password is a warning with the credentials fix; exit stays 0', () => {
      const r = doctor(['--json'], {
        KVFABRIC_NATS_SERVERS: fx.nats.url,
        KVFABRIC_REDIS_URL: redis?.url as string,
        KVFABRIC_REDIS_PASSWORD: 'wrong-password',
      });
      expect(r.status).toBe(0);
      const c = byId(JSON.parse(r.stdout) as Report);
      expect(c.redis?.status).toBe('warn');
      expect(c.redis?.summary).toMatch(/WRONGPASS/);
      expect(c.redis?.fix).toMatch(/KVFABRIC_REDIS_URL=redis:\/\/kvfabric:<password>@host:6379/);
      const good = doctor(['--json'], {
        KVFABRIC_NATS_SERVERS: fx.nats.url,
        KVFABRIC_REDIS_URL: redis?.url as string,
        KVFABRIC_REDIS_PASSWORD: 'right-password',
      });
      expect(byId(JSON.parse(good.stdout) as Report).redis?.status).toBe('ok');
    });
  });

  it('an invalid config is one failed check and exit 1; the mmap hook mode is enforced', () => {
    const bad = doctor([], { KVFABRIC_LOG_LEVEL: 'chatty' });
    expect(bad.status).toBe(1);
    expect(bad.stdout).toMatch(/FAIL +config .*log\.level \(from KVFABRIC_LOG_LEVEL\)/);
    const hooks = doctor(['--json'], {
      UCX_MEM_MMAP_HOOK_MODE: 'reloc',
      KVFABRIC_NATS_SERVERS: fx.nats.url,
      KVFABRIC_REDIS_URL: fx.redis.url,
    });
    // bin/kvfabric.js only defaults the variable: an explicit other mode reaches doctor, which fails
    // it and does not load the addon (UCX with mmap hooks under V8 crashes or hangs the process).
    const c = byId(JSON.parse(hooks.stdout) as Report);
    expect(c['ucx-mmap-hook']?.status).toBe('fail');
    expect(c['ucx-mmap-hook']?.fix).toMatch(/UCX_MEM_MMAP_HOOK_MODE=none/);
    expect(c.native?.status).toBe('skip');
    expect(c['ucx-probe']?.status).toBe('skip');
    expect(hooks.status).toBe(1);
  });
});

describe('doctor helpers (pure)', () => {
  it('parses ucx_info -d and matches UCX_TLS aliases against concrete transports', () => {
    const ucx = parseUcxInfo(
      '#      Transport: tcp\n#         Device: lo\n#      Transport: posix\n#         Device: memory\n#      Transport: rc_mlx5\n#         Device: mlx5_0:1\n',
    );
    expect(ucx).toEqual({ transports: ['tcp', 'posix', 'rc_mlx5'], devices: ['lo', 'memory', 'mlx5_0:1'] });
    expect(missingTransports('tcp,sm,rc,self', ['tcp', 'posix', 'rc_mlx5'])).toEqual(['self']);
    expect(missingTransports('^ud', ['tcp'])).toEqual([]);
    expect(missingTransports(undefined, [])).toEqual([]);
  });

  it('compares versions numerically and reads the locked-memory limit', () => {
    expect(versionLess('2.9.10', '2.12.3')).toBe(true);
    expect(versionLess('2.12.3', '2.12.3')).toBe(false);
    expect(versionLess('v2.12.10-beta', '2.12.3')).toBe(false);
    const limits = 'Max locked memory         8388608              8388608              bytes\n';
    expect(lockedMemoryLimit(limits)).toBe(8388608);
    expect(lockedMemoryLimit('Max locked memory unlimited unlimited bytes\n')).toBe(Infinity);
    expect(checkMemlock({ transports: ['rc_mlx5'], devices: [] }, limits).status).toBe('warn');
    expect(checkMemlock({ transports: ['tcp'], devices: [] }, limits).status).toBe('ok');
  });
});

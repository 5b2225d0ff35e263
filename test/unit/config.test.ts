import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import {
  configToYaml,
  DEFAULT_CONFIG,
  describeConfig,
  envNameFor,
  KEYS,
  loadConfig,
  parseConfig,
  parseSize,
  redactConfig,
} from '../../shared/config.js';
import { KvfError } from '../../shared/errors.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'kvf-config-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function writeYaml(name: string, text: string): string {
  const p = path.join(tmp, name);
  writeFileSync(p, text);
  return p;
}

/** The problems of a config that must be rejected, one per line. */
function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(KvfError);
    expect((err as KvfError).codeName).toBe('CONFIG_INVALID');
    const lines = (err as KvfError).message.split('\n');
    expect((err as KvfError).details?.problems).toEqual(lines);
    return lines;
  }
  throw new Error('expected CONFIG_INVALID, but the config was accepted');
}

describe('config defaults', () => {
  it('an empty object, an empty file and a comment-only file give the documented defaults', () => {
    expect(parseConfig({})).toEqual(DEFAULT_CONFIG);
    expect(parseConfig(null)).toEqual(DEFAULT_CONFIG);
    expect(loadConfig({ file: writeYaml('empty.yaml', ''), env: {} })).toEqual(DEFAULT_CONFIG);
    expect(loadConfig({ file: writeYaml('comment.yaml', '# nothing\n'), env: {} })).toEqual(DEFAULT_CONFIG);
  });

  it('has the documented default values', () => {
    expect(DEFAULT_CONFIG).toEqual({
      cluster: { name: 'local' },
      nats: { servers: ['nats://127.0.0.1:4222'], tls: false, requestTimeoutMs: 5000 },
      redis: { url: 'redis://127.0.0.1:6379', keyPrefix: 'kvf', indexTtlSeconds: 86400, tls: false },
      tenant: {},
      partition: { layerGroups: 4, seqBuckets: 16, seqBucketTokens: 4096 },
      coordinator: {
        heartbeatIntervalMs: 1000,
        nodeDeadAfterMs: 6000,
        leaderLeaseTtlMs: 5000,
        replicationFactor: 2,
        indexCheckIntervalMs: 2000,
      },
      shard: {
        arenaBytes: 256 * 1024 * 1024,
        arenaKind: 'auto',
        prefault: true,
        allocTimeoutMs: 30000,
        readLeaseMs: 10000,
        blockTtlSeconds: 86400,
        batchBlocksMax: 4096,
        replicationAckTimeoutMs: 2000,
        selfFenceAfterMs: 3000,
        hotReadsPerSec: 200,
        hotCopiesMax: 2,
        hotCopyTtlMs: 10000,
      },
      ucx: { opTimeoutMs: 10000, direct: true, syncWaitUs: 200 },
      models: { builtin: ['tiny-test', 'llama-3-8b'] },
      log: { level: 'info' },
      metrics: { port: 0, host: '127.0.0.1' },
      shutdown: { drainTimeoutMs: 5000, unreadyDelayMs: 0 },
    });
  });

  it('describeConfig documents every key with its env variable and default; durations end in Ms', () => {
    const docs = describeConfig();
    expect(docs.map((d) => d.key)).toEqual(KEYS.map((k) => k.key));
    for (const d of docs) {
      expect(d.doc.length).toBeGreaterThan(10);
      expect(d.env).toBe(envNameFor(d.key));
      const spec = KEYS.find((k) => k.key === d.key);
      if (spec?.kind.t === 'duration') expect(d.key).toMatch(/Ms$/);
    }
    expect(docs.find((d) => d.key === 'shard.arenaBytes')?.default).toBe('256MiB');
    expect(docs.find((d) => d.key === 'nats.token')).toMatchObject({ default: '(unset)', secret: true });
  });
});

describe('docs/operations.md', () => {
  it('documents exactly the keys, variables and defaults of the code', () => {
    const doc = readFileSync(path.join(repo, 'docs/operations.md'), 'utf8');
    const rows = doc
      .split('\n')
      // Key rows only (other tables in the file may start with a dotted file name).
      .filter((l) => /^\| `[a-z]+\.[A-Za-z]+` +\| `KVFABRIC_/.test(l))
      .map((l) =>
        l
          .slice(1, -1)
          .split(/(?<!\\)\|/)
          .map((c) => c.trim().replace(/\\\|/g, '|')),
      );
    const expected = describeConfig().map((d) => [
      `\`${d.key}\``,
      `\`${d.env}\``,
      d.default,
      d.expected,
      d.doc + (d.secret ? ' (secret)' : ''),
    ]);
    expect(rows).toEqual(expected);
  });
});

describe('config files', () => {
  it('loads YAML and keeps unspecified keys at their defaults', () => {
    const file = writeYaml(
      'a.yaml',
      'cluster: { name: prod-1 }\nshard:\n  arenaBytes: 2GiB\n  arenaKind: host\nnats:\n  servers: [nats://10.0.0.1:4222, nats://10.0.0.2:4222]\n',
    );
    const cfg = loadConfig({ file, env: {} });
    expect(cfg.cluster.name).toBe('prod-1');
    expect(cfg.shard.arenaBytes).toBe(2 * 1024 ** 3);
    expect(cfg.shard.arenaKind).toBe('host');
    expect(cfg.shard.readLeaseMs).toBe(10000);
    expect(cfg.nats.servers).toEqual(['nats://10.0.0.1:4222', 'nats://10.0.0.2:4222']);
  });

  it('cluster-config/local.yaml validates', () => {
    const cfg = loadConfig({ file: path.join(repo, 'cluster-config/local.yaml'), env: {} });
    expect(cfg.cluster.name).toBe('local');
    expect(cfg.models.builtin).toContain('tiny-test');
  });

  it('a missing file and a YAML syntax error are CONFIG_INVALID naming the file', () => {
    const missing = path.join(tmp, 'nope.yaml');
    expect(problemsOf(() => loadConfig({ file: missing, env: {} }))).toEqual([
      `${missing}: cannot read config file (no such file)`,
    ]);
    const broken = writeYaml('broken.yaml', 'shard:\n  arenaBytes: [1\nlog: {level: info}\n');
    const lines = problemsOf(() => loadConfig({ file: broken, env: {} }));
    expect(lines[0]).toMatch(
      new RegExp(`^${broken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: YAML .*line \\d+`),
    );
    const dup = writeYaml('dup.yaml', 'log:\n  level: info\n  level: debug\n');
    expect(problemsOf(() => loadConfig({ file: dup, env: {} }))[0]).toMatch(/unique/);
  });
});

describe('environment overrides', () => {
  it('maps camelCase keys to KVFABRIC_SCREAMING_SNAKE names', () => {
    expect(envNameFor('shard.arenaBytes')).toBe('KVFABRIC_SHARD_ARENA_BYTES');
    expect(envNameFor('nats.requestTimeoutMs')).toBe('KVFABRIC_NATS_REQUEST_TIMEOUT_MS');
    expect(envNameFor('partition.seqBucketTokens')).toBe('KVFABRIC_PARTITION_SEQ_BUCKET_TOKENS');
  });

  it('overrides the file: sizes, integers, booleans, enums and comma-separated arrays', () => {
    const file = writeYaml('b.yaml', 'shard: { arenaBytes: 1GiB }\nlog: { level: warn }\n');
    const cfg = loadConfig({
      file,
      env: {
        KVFABRIC_SHARD_ARENA_BYTES: '64MiB',
        KVFABRIC_SHARD_BATCH_BLOCKS_MAX: '128',
        KVFABRIC_NATS_TLS: 'true',
        KVFABRIC_LOG_LEVEL: 'debug',
        KVFABRIC_NATS_SERVERS: 'nats://a:4222, nats://b:4222,',
        KVFABRIC_MODELS_BUILTIN: 'tiny-test',
        KVFABRIC_NATS_TOKEN: 's3cret',
        KVFABRIC_CONFIG: '/ignored/not/a/key.yaml',
        PATH: '/usr/bin',
      },
    });
    expect(cfg.shard.arenaBytes).toBe(64 * 1024 ** 2);
    expect(cfg.shard.batchBlocksMax).toBe(128);
    expect(cfg.nats.tls).toBe(true);
    expect(cfg.log.level).toBe('debug');
    expect(cfg.nats.servers).toEqual(['nats://a:4222', 'nats://b:4222']);
    expect(cfg.models.builtin).toEqual(['tiny-test']);
    expect(cfg.nats.token).toBe('s3cret');
    expect(parseConfig({}, { KVFABRIC_NATS_TLS: '0' }).nats.tls).toBe(false);
  });

  it('an empty variable clears an optional key', () => {
    const cfg = parseConfig({ nats: { token: 'abc' } }, { KVFABRIC_NATS_TOKEN: '' });
    expect(cfg.nats.token).toBeUndefined();
  });

  it('programmatic overrides beat the environment', () => {
    const cfg = loadConfig({
      env: { KVFABRIC_SHARD_ARENA_BYTES: '1GiB' },
      overrides: { shard: { arenaBytes: 4096 } },
    });
    expect(cfg.shard.arenaBytes).toBe(4096);
  });
});

describe('sizes', () => {
  it('accepts integers and binary/decimal units, rejects the rest', () => {
    expect(parseSize(4096)).toBe(4096);
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('1KiB')).toBe(1024);
    expect(parseSize('1 kb')).toBe(1000);
    expect(parseSize('1.5GiB')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('2MB')).toBe(2_000_000);
    for (const bad of ['lots', '0', 0, -1, 1.5, '1 parsec', '', 'GiB', true, null])
      expect(parseSize(bad)).toBeUndefined();
  });
});

describe('validation messages', () => {
  it('name the key, the expected value and what was found, for every kind', () => {
    const lines = problemsOf(() =>
      parseConfig({
        cluster: { name: 'has.dots' },
        nats: { servers: 'nats://x:1', tls: 'yes', requestTimeoutMs: -5 },
        redis: { url: 'http://x' },
        partition: { layerGroups: 0 },
        shard: { arenaBytes: 'lots', arenaKind: 'gpu' },
        models: { builtin: ['tiny-test', 3] },
        metrics: { port: 70000 },
      }),
    );
    expect(lines).toEqual([
      'cluster.name: expected a string (1-64 of A-Z a-z 0-9 _ -), got "has.dots"',
      'nats.servers: expected a list of nats://host:port URLs (at least 1), got "nats://x:1"',
      'nats.tls: expected true or false, got "yes"',
      'nats.requestTimeoutMs: expected a duration in milliseconds (integer >= 1), got -5',
      'redis.url: expected a string (a redis:// or rediss:// URL), got "http://x"',
      'partition.layerGroups: expected an integer in [1, 256], got 0',
      'shard.arenaBytes: expected a size like 1GiB or a positive integer, got "lots"',
      'shard.arenaKind: expected one of "auto", "host", "cuda", got "gpu"',
      'models.builtin[1]: expected model profile ids, got 3',
      'metrics.port: expected an integer in [0, 65535], got 70000',
    ]);
  });

  it('environment problems name the variable too', () => {
    const lines = problemsOf(() =>
      parseConfig(
        {},
        {
          KVFABRIC_SHARD_ARENA_BYTES: 'lots',
          KVFABRIC_NATS_TLS: 'maybe',
          KVFABRIC_SHARD_READ_LEASE_MS: '10s',
        },
      ),
    );
    expect(lines).toEqual([
      'nats.tls (from KVFABRIC_NATS_TLS): expected true or false, got "maybe"',
      'shard.arenaBytes (from KVFABRIC_SHARD_ARENA_BYTES): expected a size like 1GiB or a positive integer, got "lots"',
      'shard.readLeaseMs (from KVFABRIC_SHARD_READ_LEASE_MS): expected a duration in milliseconds (integer >= 1), got "10s"',
    ]);
  });

  it('rejects unknown sections, keys and KVFABRIC_ variables, suggesting the near miss', () => {
    const lines = problemsOf(() =>
      parseConfig(
        { shard: { arenaByte: 1 }, shrad: {}, log: 'debug' },
        { KVFABRIC_SHARD_ARENA_BYTE: '1GiB', KVFABRIC_SOMETOOL_FLAG: '1' },
      ),
    );
    expect(lines).toEqual([
      'shard.arenaByte: unknown key (did you mean arenaBytes?)',
      'shrad: unknown section (did you mean shard?)',
      'log: expected a mapping of keys, got "debug"',
      'KVFABRIC_SHARD_ARENA_BYTE: unknown setting (did you mean KVFABRIC_SHARD_ARENA_BYTES?)',
    ]);
    expect(problemsOf(() => parseConfig([1, 2]))).toEqual([
      '<root>: expected a mapping of sections (cluster, nats, redis, tenant, partition, coordinator, shard, ucx, models, log, metrics, shutdown), got a list',
    ]);
    expect(problemsOf(() => parseConfig({}, {}, { shard: { bogus: 1 } } as never))).toEqual([
      'shard.bogus (override): unknown key',
    ]);
  });

  it('lists all problems at once across file and environment', () => {
    const lines = problemsOf(() =>
      parseConfig(
        { shard: { arenaBytes: 'lots', readLeaseMs: 'soon' }, ucx: { transports: 'TCP SM' } },
        { KVFABRIC_PARTITION_SEQ_BUCKETS: '-1' },
      ),
    );
    expect(lines).toHaveLength(4);
    expect(lines.map((l) => l.split(/[ :]/)[0])).toEqual([
      'partition.seqBuckets',
      'shard.arenaBytes',
      'shard.readLeaseMs',
      'ucx.transports',
    ]);
  });

  it('checks keys against each other once each is valid', () => {
    expect(
      problemsOf(() => parseConfig({ coordinator: { heartbeatIntervalMs: 1000, nodeDeadAfterMs: 1500 } })),
    ).toEqual([
      'coordinator.nodeDeadAfterMs: expected at least 2 x coordinator.heartbeatIntervalMs (2000), got 1500',
    ]);
    expect(problemsOf(() => parseConfig({ coordinator: { leaderLeaseTtlMs: 1000 } }))).toEqual([
      'coordinator.leaderLeaseTtlMs: expected more than coordinator.heartbeatIntervalMs (1000), got 1000',
    ]);
    expect(problemsOf(() => parseConfig({ nats: { token: 't', user: 'u', pass: 'p' } }))).toEqual([
      'nats.token: expected either nats.token or nats.user/nats.pass, not both',
    ]);
    const models = problemsOf(() => parseConfig({ models: { builtin: ['tiny-test', 'llama-9-1b'] } }));
    expect(models).toHaveLength(1);
    expect(models[0]).toMatch(
      /^models\.builtin\[1\]: expected a built-in profile id \(.*\btiny-test\b.*\), got "llama-9-1b"$/,
    );
    expect(problemsOf(() => parseConfig({ nats: { user: 'u' } }))).toEqual([
      'nats.user: expected nats.user and nats.pass to be set together',
    ]);
  });
});

describe('redaction and YAML output', () => {
  it('redacts secrets and URL credentials, and config show output loads back', () => {
    const cfg = parseConfig({
      nats: { servers: ['nats://alice:pw@h:4222'], user: 'alice', pass: 'pw' },
      redis: { url: 'redis://:hunter2@h:6379', password: 'hunter2' },
      shard: { arenaBytes: '1GiB' },
    });
    const red = redactConfig(cfg);
    expect(JSON.stringify(red)).not.toMatch(/hunter2|:pw/);
    expect(red.nats.user).toBe('alice');
    expect(cfg.redis.password).toBe('hunter2'); // the original is untouched
    const yaml = configToYaml(cfg, { redact: false });
    expect(yaml).toMatch(/arenaBytes: 1GiB/);
    expect(loadConfig({ file: writeYaml('show.yaml', yaml), env: {} })).toEqual(cfg);
    expect(configToYaml(cfg)).not.toMatch(/hunter2/);
  });
});

/**
 * Deployment configuration: one YAML file per deployment, every key overridable by a `KVFABRIC_*`
 * environment variable, every value validated against one table of keys (KEYS below), which is
 * also what `describeConfig()` and docs/operations.md are generated from.
 *
 * Precedence, lowest to highest: built-in defaults < YAML file < environment < programmatic
 * overrides (CLI flags). Validation collects every problem before throwing, so an operator fixes
 * a config in one pass instead of one error per restart.
 */
import { readFileSync } from 'node:fs';
import { parseDocument, stringify } from 'yaml';
import { KvfError } from './errors.js';
import { BUILTIN_PROFILES } from './profiles.js';
import {
  describeKind,
  envNameFor,
  formatDefault,
  formatGot,
  parseEnvValue,
  parseValue,
  type KeySpec,
} from './config-keys.js';

export { envNameFor, formatSize, parseSize } from './config-keys.js';

export type ArenaKind = 'auto' | 'host' | 'cuda';
export type ConfigLogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface KvfConfig {
  cluster: { name: string };
  nats: {
    servers: string[];
    user?: string;
    pass?: string;
    token?: string;
    tls: boolean;
    requestTimeoutMs: number;
    jetstreamReplicas?: number;
    nkeySeedFile?: string;
    tlsCaFile?: string;
    tlsCertFile?: string;
    tlsKeyFile?: string;
  };
  redis: {
    url: string;
    keyPrefix: string;
    indexTtlSeconds: number;
    password?: string;
    username?: string;
    tls: boolean;
    tlsCaFile?: string;
    tlsCertFile?: string;
    tlsKeyFile?: string;
  };
  tenant: { id?: string };
  partition: { layerGroups: number; seqBuckets: number; seqBucketTokens: number };
  coordinator: {
    id?: string;
    heartbeatIntervalMs: number;
    nodeDeadAfterMs: number;
    leaderLeaseTtlMs: number;
    replicationFactor: number;
    indexCheckIntervalMs: number;
  };
  shard: {
    id?: string;
    arenaBytes: number;
    arenaKind: ArenaKind;
    prefault: boolean;
    allocTimeoutMs: number;
    readLeaseMs: number;
    blockTtlSeconds: number;
    batchBlocksMax: number;
    replicationAckTimeoutMs: number;
    selfFenceAfterMs: number;
    hotReadsPerSec: number;
    hotCopiesMax: number;
    hotCopyTtlMs: number;
  };
  ucx: { transports?: string; opTimeoutMs: number; direct: boolean; syncWaitUs: number; netDevices?: string };
  models: { builtin: string[] };
  log: { level: ConfigLogLevel };
  metrics: { port: number; host: string };
  shutdown: { drainTimeoutMs: number; unreadyDelayMs: number };
}

export type DeepPartial<T> = {
  [K in keyof T]?: T[K] extends readonly unknown[] ? T[K] : T[K] extends object ? DeepPartial<T[K]> : T[K];
};

/** Ids that end up as NATS subject tokens and JetStream bucket names: no dots, no spaces. */
const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const ID_DOC = '1-64 of A-Z a-z 0-9 _ -';

/** Every config key, in the order docs list them. Adding a key here is all it takes. */
export const KEYS: readonly KeySpec[] = [
  {
    key: 'cluster.name',
    kind: { t: 'string', pattern: ID_RE, patternDoc: ID_DOC },
    default: 'local',
    doc: 'Cluster name, for logs and status; restricted to subject-safe characters so it can later namespace subjects and buckets.',
  },
  {
    key: 'nats.servers',
    kind: {
      t: 'list',
      pattern: /^(nats|tls|ws|wss):\/\/\S+$/,
      patternDoc: 'nats://host:port URLs',
      minItems: 1,
    },
    default: ['nats://127.0.0.1:4222'],
    doc: 'NATS seed servers (a list, or comma-separated in the environment).',
  },
  { key: 'nats.user', kind: { t: 'string' }, optional: true, doc: 'NATS user (with nats.pass).' },
  { key: 'nats.pass', kind: { t: 'string' }, optional: true, secret: true, doc: 'NATS password.' },
  {
    key: 'nats.token',
    kind: { t: 'string' },
    optional: true,
    secret: true,
    doc: 'NATS token (instead of user and password).',
  },
  {
    key: 'nats.tls',
    kind: { t: 'bool' },
    default: false,
    doc: 'Require TLS on NATS connections (tls:// server URLs imply it).',
  },
  {
    key: 'nats.requestTimeoutMs',
    kind: { t: 'duration', min: 1 },
    default: 5000,
    doc: 'Timeout of one control-plane request/reply.',
  },
  {
    key: 'nats.jetstreamReplicas',
    kind: { t: 'int', min: 1, max: 5 },
    optional: true,
    doc: 'JetStream replicas of every kvfabric bucket and stream (3 with a three-server NATS cluster); unset = 1; applies when they are created.',
  },
  {
    key: 'nats.nkeySeedFile',
    kind: { t: 'string' },
    optional: true,
    doc: 'File holding an nkey user seed (SU...): NKEY authentication instead of a password or token; the seed never leaves the host.',
  },
  {
    key: 'nats.tlsCaFile',
    kind: { t: 'string' },
    optional: true,
    doc: 'PEM CA bundle that verifies the NATS servers (implies TLS); unset = the system CAs.',
  },
  {
    key: 'nats.tlsCertFile',
    kind: { t: 'string' },
    optional: true,
    doc: 'PEM client certificate for NATS mutual TLS (with nats.tlsKeyFile; implies TLS).',
  },
  {
    key: 'nats.tlsKeyFile',
    kind: { t: 'string' },
    optional: true,
    doc: 'PEM private key of nats.tlsCertFile.',
  },
  {
    key: 'redis.url',
    kind: { t: 'string', pattern: /^rediss?:\/\/\S+$/, patternDoc: 'a redis:// or rediss:// URL' },
    default: 'redis://127.0.0.1:6379',
    doc: 'Redis holding the prefix index (rediss:// for TLS).',
  },
  {
    key: 'redis.keyPrefix',
    kind: { t: 'string', pattern: /^[A-Za-z0-9_:.-]{1,64}$/, patternDoc: '1-64 of A-Z a-z 0-9 _ : . -' },
    default: 'kvf',
    doc: 'Prefix of every Redis key kvfabric writes.',
  },
  {
    key: 'redis.indexTtlSeconds',
    kind: { t: 'int', min: 1, max: 365 * 86400 },
    default: 86400,
    doc: 'TTL of a prefix-index entry; slides on every hit.',
  },
  { key: 'redis.password', kind: { t: 'string' }, optional: true, secret: true, doc: 'Redis password.' },
  {
    key: 'redis.username',
    kind: { t: 'string' },
    optional: true,
    doc: 'Redis ACL user (with redis.password); unset = the default user (or the user in redis.url).',
  },
  {
    key: 'redis.tls',
    kind: { t: 'bool' },
    default: false,
    doc: 'Connect to Redis over TLS (a rediss:// URL implies it).',
  },
  {
    key: 'redis.tlsCaFile',
    kind: { t: 'string' },
    optional: true,
    doc: 'PEM CA bundle that verifies the Redis server (implies TLS); unset = the system CAs.',
  },
  {
    key: 'redis.tlsCertFile',
    kind: { t: 'string' },
    optional: true,
    doc: 'PEM client certificate for Redis (tls-auth-clients yes; with redis.tlsKeyFile).',
  },
  {
    key: 'redis.tlsKeyFile',
    kind: { t: 'string' },
    optional: true,
    doc: 'PEM private key of redis.tlsCertFile.',
  },
  {
    key: 'tenant.id',
    kind: { t: 'string', pattern: ID_RE, patternDoc: ID_DOC },
    optional: true,
    doc: "Tenant whose credentials this process holds (workers): its index keys are <keyPrefix>:idx:<tenant>:<hash> and its shard requests go to kvf.v1.t.<tenant>.shard.<node>.<op>; the servers' ACLs bind both to the tenant's credentials (docs/security.md). Unset = the default tenant.",
  },
  {
    key: 'partition.layerGroups',
    kind: { t: 'int', min: 1, max: 256 },
    default: 4,
    doc: "Layer groups a model's layers are split into (one block per chunk per group).",
  },
  {
    key: 'partition.seqBuckets',
    kind: { t: 'int', min: 1, max: 4096 },
    default: 16,
    doc: 'Sequence buckets per layer group; cells = layerGroups x seqBuckets.',
  },
  {
    key: 'partition.seqBucketTokens',
    kind: { t: 'int', min: 1, max: 1 << 24 },
    default: 4096,
    doc: 'Consecutive tokens of a prompt that share a sequence bucket.',
  },
  {
    key: 'coordinator.id',
    kind: { t: 'string', pattern: ID_RE, patternDoc: ID_DOC },
    optional: true,
    doc: 'Coordinator instance id; unset = derived from hostname and pid.',
  },
  {
    key: 'coordinator.heartbeatIntervalMs',
    kind: { t: 'duration', min: 10 },
    default: 1000,
    doc: 'How often shard nodes heartbeat and the leader renews its lease.',
  },
  {
    key: 'coordinator.nodeDeadAfterMs',
    kind: { t: 'duration', min: 20 },
    default: 6000,
    doc: 'Silence after which a shard node is declared dead (at least 2 heartbeats).',
  },
  {
    key: 'coordinator.leaderLeaseTtlMs',
    kind: { t: 'duration', min: 20 },
    default: 5000,
    doc: 'Leader lease TTL; a standby takes over after it lapses (more than one heartbeat).',
  },
  {
    key: 'coordinator.replicationFactor',
    kind: { t: 'int', min: 1, max: 8 },
    default: 2,
    doc: 'Copies of each block (primary included).',
  },
  {
    key: 'coordinator.indexCheckIntervalMs',
    kind: { t: 'duration', min: 10 },
    default: 2000,
    doc: 'How often the leader checks that the Redis index is intact; an emptied index is rebuilt from the shards.',
  },
  {
    key: 'shard.id',
    kind: { t: 'string', pattern: ID_RE, patternDoc: ID_DOC },
    optional: true,
    doc: 'Shard node id; unset = derived from hostname and pid.',
  },
  {
    key: 'shard.arenaBytes',
    kind: { t: 'size' },
    default: 256 * 1024 ** 2,
    doc: 'Memory arena size of a shard node.',
  },
  {
    key: 'shard.arenaKind',
    kind: { t: 'enum', values: ['auto', 'host', 'cuda'] },
    default: 'auto',
    doc: 'Arena memory: cuda (device), host, or auto (cuda when a GPU is present).',
  },
  {
    key: 'shard.prefault',
    kind: { t: 'bool' },
    default: true,
    doc: 'Fault in every page of a host arena at start, on a background thread, so the first transfers into it do not pay a page fault per 4 KiB (the node serves meanwhile).',
  },
  {
    key: 'shard.allocTimeoutMs',
    kind: { t: 'duration', min: 1 },
    default: 30000,
    doc: 'An allocation not committed within this time is freed.',
  },
  {
    key: 'shard.readLeaseMs',
    kind: { t: 'duration', min: 1 },
    default: 10000,
    doc: 'Read lease granted by locate; a leased block is never evicted.',
  },
  {
    key: 'shard.blockTtlSeconds',
    kind: { t: 'int', min: 1, max: 365 * 86400 },
    default: 86400,
    doc: 'A block unused this long is evicted even when there is room.',
  },
  {
    key: 'shard.batchBlocksMax',
    kind: { t: 'int', min: 1, max: 1 << 20 },
    default: 4096,
    doc: 'Most blocks in one allocate/commit/locate request.',
  },
  {
    key: 'shard.replicationAckTimeoutMs',
    kind: { t: 'duration', min: 1 },
    default: 2000,
    doc: 'How long a commit with ack all waits for a replica; one that misses it is marked out of sync.',
  },
  {
    key: 'shard.selfFenceAfterMs',
    kind: { t: 'duration', min: 1 },
    default: 3000,
    doc: 'A node whose last heartbeat succeeded longer ago refuses writes (FENCED) until one succeeds; keep below coordinator.nodeDeadAfterMs.',
  },
  {
    key: 'shard.hotReadsPerSec',
    kind: { t: 'int', min: 1, max: 1 << 30 },
    default: 200,
    doc: 'Locates per second of one block above which it gets extra read copies on other nodes.',
  },
  {
    key: 'shard.hotCopiesMax',
    kind: { t: 'int', min: 0, max: 16 },
    default: 2,
    doc: 'Most extra read copies of a hot block (0 = off).',
  },
  {
    key: 'shard.hotCopyTtlMs',
    kind: { t: 'duration', min: 1 },
    default: 10000,
    doc: 'A hot copy not read for this long is dropped by its holder (and a block that cooled this long loses its copies).',
  },
  {
    key: 'ucx.transports',
    kind: { t: 'string', pattern: /^\^?[a-z0-9_]+(,[a-z0-9_]+)*$/, patternDoc: 'a UCX_TLS list like tcp,sm' },
    optional: true,
    doc: 'UCX transports (UCX_TLS syntax); unset = UCX chooses.',
  },
  {
    key: 'ucx.opTimeoutMs',
    kind: { t: 'duration', min: 1 },
    default: 10000,
    doc: 'Timeout of one UCX get/put batch.',
  },
  {
    key: 'ucx.direct',
    kind: { t: 'bool' },
    default: true,
    doc: "Same-host peers over shared memory: SDK transfers memcpy through the peer's memory as UCX maps it (ucp_rkey_ptr) on several thread-pool threads instead of ucp_get/ucp_put on the progress thread. Other peers always use ucp_get/ucp_put.",
  },
  {
    key: 'ucx.syncWaitUs',
    kind: { t: 'int', min: 0, max: 1000000 },
    default: 200,
    doc: 'A get/put batch of at most 2 MiB to a same-host peer over shared memory: the caller waits this many microseconds at most for it to finish before yielding to the event loop, saving the loop wake-up per op (0 = always yield).',
  },
  {
    key: 'ucx.netDevices',
    kind: {
      t: 'string',
      pattern: /^[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*$/,
      patternDoc: 'a UCX_NET_DEVICES list like eth1 or mlx5_0:1',
    },
    optional: true,
    doc: "Network devices UCX may use and listen on (UCX_NET_DEVICES syntax), applied before the first UCX worker starts; unset = $UCX_NET_DEVICES if set, else lo (loopback only); 'all' lets UCX use every device.",
  },
  {
    key: 'models.builtin',
    kind: { t: 'list', pattern: /^[a-z0-9][a-z0-9._-]{0,63}$/, patternDoc: 'model profile ids' },
    default: ['tiny-test', 'llama-3-8b'],
    doc: 'Built-in model profiles registered at startup.',
  },
  {
    key: 'log.level',
    kind: { t: 'enum', values: ['debug', 'info', 'warn', 'error'] },
    default: 'info',
    doc: 'Least severe log level written (JSON lines on stderr).',
  },
  {
    key: 'metrics.port',
    kind: { t: 'int', min: 0, max: 65535 },
    default: 0,
    doc: 'Port of /metrics, /healthz and /readyz; 0 = disabled.',
  },
  {
    key: 'metrics.host',
    kind: { t: 'string', minLength: 1 },
    default: '127.0.0.1',
    doc: 'Address the metrics port binds to (0.0.0.0 to expose it).',
  },
  {
    key: 'shutdown.drainTimeoutMs',
    kind: { t: 'duration', min: 0 },
    default: 5000,
    doc: 'On SIGTERM, how long in-flight requests may take to finish before the process closes anyway.',
  },
  {
    key: 'shutdown.unreadyDelayMs',
    kind: { t: 'duration', min: 0 },
    default: 0,
    doc: 'On SIGTERM, how long /readyz reports not-ready (while still serving) before the actor stops taking requests; set it above your probe period for load-balanced deployments.',
  },
];

const KEY_BY_NAME = new Map(KEYS.map((k) => [k.key, k]));
const SECTIONS = [...new Set(KEYS.map((k) => k.key.split('.')[0] as string))];
/** KVFABRIC_* variables that are not config keys. */
const NON_KEY_ENV = new Set(['KVFABRIC_CONFIG']);

type Raw = Record<string, unknown>;

function isMapping(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Edit distance, for "did you mean" on unknown keys (typos are the common config bug). */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j] as number;
      row[j] = Math.min(cur + 1, (row[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length] as number;
}

function suggest(name: string, candidates: readonly string[]): string {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = distance(name.toLowerCase(), c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(name.length / 4))
    ? ` (did you mean ${best}?)`
    : '';
}

/** Reports unknown sections and keys of a YAML/override layer; returns the known raw values. */
function flattenLayer(obj: unknown, label: string, problems: string[]): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (obj === undefined || obj === null) return out;
  if (!isMapping(obj)) {
    problems.push(
      `<root>${label}: expected a mapping of sections (${SECTIONS.join(', ')}), got ${formatGot(obj)}`,
    );
    return out;
  }
  for (const [section, body] of Object.entries(obj)) {
    if (!SECTIONS.includes(section)) {
      problems.push(`${section}${label}: unknown section${suggest(section, SECTIONS)}`);
      continue;
    }
    if (body === null || body === undefined) continue; // `shard:` with nothing under it
    if (!isMapping(body)) {
      problems.push(`${section}${label}: expected a mapping of keys, got ${formatGot(body)}`);
      continue;
    }
    const known = KEYS.filter((k) => k.key.startsWith(section + '.')).map((k) =>
      k.key.slice(section.length + 1),
    );
    for (const [name, value] of Object.entries(body)) {
      const key = `${section}.${name}`;
      if (!KEY_BY_NAME.has(key)) problems.push(`${key}${label}: unknown key${suggest(name, known)}`);
      else if (value !== undefined) out.set(key, value);
    }
  }
  return out;
}

function envLayer(env: NodeJS.ProcessEnv, problems: string[]): Map<string, { raw: string; name: string }> {
  const out = new Map<string, { raw: string; name: string }>();
  const byEnv = new Map(KEYS.map((k) => [envNameFor(k.key), k.key]));
  const sectionPrefixes = SECTIONS.map((s) => envNameFor(s) + '_');
  for (const [name, raw] of Object.entries(env)) {
    if (raw === undefined || !name.startsWith('KVFABRIC_') || NON_KEY_ENV.has(name)) continue;
    const key = byEnv.get(name);
    if (key) out.set(key, { raw, name });
    // Only variables in a config section's namespace are ours; others may belong to tools.
    else if (sectionPrefixes.some((p) => name.startsWith(p))) {
      problems.push(`${name}: unknown setting${suggest(name, [...byEnv.keys()])}`);
    }
  }
  return out;
}

function setPath(target: Raw, key: string, value: unknown): void {
  const [section, name] = key.split('.') as [string, string];
  const sec = (target[section] ??= {}) as Raw;
  sec[name] = value;
}

function crossChecks(cfg: KvfConfig, problems: string[]): void {
  const { nats, coordinator: c } = cfg;
  const builtin = Object.keys(BUILTIN_PROFILES);
  cfg.models.builtin.forEach((id, i) => {
    if (!Object.hasOwn(BUILTIN_PROFILES, id)) {
      problems.push(
        `models.builtin[${i}]: expected a built-in profile id (${builtin.join(', ')}), got "${id}"`,
      );
    }
  });
  if (nats.token !== undefined && (nats.user !== undefined || nats.pass !== undefined)) {
    problems.push('nats.token: expected either nats.token or nats.user/nats.pass, not both');
  }
  if ((nats.user === undefined) !== (nats.pass === undefined)) {
    problems.push('nats.user: expected nats.user and nats.pass to be set together');
  }
  if (nats.nkeySeedFile !== undefined && (nats.token !== undefined || nats.user !== undefined)) {
    problems.push('nats.nkeySeedFile: expected one of nats.nkeySeedFile, nats.token, nats.user/nats.pass');
  }
  for (const t of [nats, cfg.redis] as const) {
    if ((t.tlsCertFile === undefined) !== (t.tlsKeyFile === undefined)) {
      const section = t === nats ? 'nats' : 'redis';
      problems.push(
        `${section}.tlsCertFile: expected ${section}.tlsCertFile and ${section}.tlsKeyFile together`,
      );
    }
  }
  if (c.nodeDeadAfterMs < 2 * c.heartbeatIntervalMs) {
    problems.push(
      `coordinator.nodeDeadAfterMs: expected at least 2 x coordinator.heartbeatIntervalMs (${2 * c.heartbeatIntervalMs}), got ${c.nodeDeadAfterMs}`,
    );
  }
  if (c.leaderLeaseTtlMs <= c.heartbeatIntervalMs) {
    problems.push(
      `coordinator.leaderLeaseTtlMs: expected more than coordinator.heartbeatIntervalMs (${c.heartbeatIntervalMs}), got ${c.leaderLeaseTtlMs}`,
    );
  }
}

/**
 * Validate a parsed YAML object (or `{}`), apply environment overrides, then `overrides`.
 * Throws KvfError('CONFIG_INVALID') whose message lists every problem, one per line.
 */
export function parseConfig(
  obj: unknown,
  env: NodeJS.ProcessEnv = {},
  overrides?: DeepPartial<KvfConfig>,
): KvfConfig {
  const problems: string[] = [];
  const file = flattenLayer(obj, '', problems);
  const fromEnv = envLayer(env, problems);
  const over = flattenLayer(overrides, ' (override)', problems);
  const out: Raw = {};
  for (const spec of KEYS) {
    let value: unknown = spec.default;
    const report =
      (label: string) =>
      (msg: string, sub = ''): void => {
        problems.push(`${spec.key}${sub}${label}: ${msg}`);
      };
    if (file.has(spec.key)) value = parseValue(spec, file.get(spec.key), report(''));
    const e = fromEnv.get(spec.key);
    if (e) value = parseEnvValue(spec, e.raw, report(` (from ${e.name})`));
    if (over.has(spec.key)) value = parseValue(spec, over.get(spec.key), report(' (override)'));
    setPath(out, spec.key, value);
  }
  for (const s of SECTIONS) out[s] = stripUndefined(out[s] as Raw);
  const cfg = out as unknown as KvfConfig;
  if (problems.length === 0) crossChecks(cfg, problems);
  if (problems.length > 0) {
    throw new KvfError('CONFIG_INVALID', problems.join('\n'), { details: { problems } });
  }
  return cfg;
}

function stripUndefined(o: Raw): Raw {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

export interface LoadConfigOptions {
  /** YAML file; unset = defaults plus environment. */
  file?: string;
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Highest precedence, e.g. CLI flags. */
  overrides?: DeepPartial<KvfConfig>;
}

/** Read, parse and validate a YAML config file (YAML syntax errors are CONFIG_INVALID too). */
export function loadConfig(opts: LoadConfigOptions = {}): KvfConfig {
  const env = opts.env ?? process.env;
  let obj: unknown = {};
  if (opts.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(opts.file, 'utf8');
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : String(err);
      const problem = `${opts.file}: cannot read config file (${why})`;
      throw new KvfError('CONFIG_INVALID', problem, { cause: err, details: { problems: [problem] } });
    }
    const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length > 0) {
      const problems = doc.errors.map((e) => `${opts.file}: YAML ${e.message.split('\n')[0] ?? ''}`);
      throw new KvfError('CONFIG_INVALID', problems.join('\n'), { details: { problems } });
    }
    obj = doc.toJS();
  }
  return parseConfig(obj, env, opts.overrides);
}

export const DEFAULT_CONFIG: Readonly<KvfConfig> = Object.freeze(parseConfig({}, {}));

export interface ConfigKeyDoc {
  key: string;
  env: string;
  expected: string;
  default: string;
  doc: string;
  secret: boolean;
}

/** Every key with its environment variable, expected value, default and meaning (for docs). */
export function describeConfig(): ConfigKeyDoc[] {
  return KEYS.map((k) => ({
    key: k.key,
    env: envNameFor(k.key),
    expected: describeKind(k.kind),
    default: formatDefault(k),
    doc: k.doc,
    secret: k.secret === true,
  }));
}

const REDACTED = '<redacted>';

function redactUrl(u: string): string {
  return u.replace(/^([a-z]+:\/\/)([^@/]*)@/i, (_m, scheme: string) => `${scheme}${REDACTED}@`);
}

/** A copy safe to log: secrets replaced, credentials in URLs removed. */
export function redactConfig(cfg: KvfConfig): KvfConfig {
  const copy = structuredClone(cfg);
  for (const k of KEYS) {
    if (!k.secret) continue;
    const [section, name] = k.key.split('.') as [string, string];
    const sec = (copy as unknown as Record<string, Raw>)[section] as Raw;
    if (sec[name] !== undefined) sec[name] = REDACTED;
  }
  copy.nats.servers = copy.nats.servers.map(redactUrl);
  copy.redis.url = redactUrl(copy.redis.url);
  return copy;
}

/** The effective config as YAML that loadConfig accepts back (sizes written with units). */
export function configToYaml(cfg: KvfConfig, opts: { redact?: boolean } = {}): string {
  const c = opts.redact === false ? structuredClone(cfg) : redactConfig(cfg);
  const out = c as unknown as Record<string, Raw>;
  for (const k of KEYS) {
    if (k.kind.t !== 'size') continue;
    const [section, name] = k.key.split('.') as [string, string];
    const v = out[section]?.[name];
    if (typeof v === 'number') (out[section] as Raw)[name] = formatDefault({ ...k, default: v });
  }
  return stringify(out);
}

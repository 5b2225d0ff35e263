/**
 * `kvfabric config validate <file>` / `config show [file]` / `config keys`: the same loader the
 * actors use, so "validate passes" means "the actor will start with this config".
 */
import {
  configToYaml,
  describeConfig,
  loadConfig,
  redactConfig,
  type KvfConfig,
} from '../../../shared/config.js';
import { isKvfError } from '../../../shared/errors.js';

const USAGE = `usage:
  kvfabric config validate <file>            check a config (environment overrides applied); exit 1 if invalid
  kvfabric config show [file] [--secrets]    print the effective config as YAML (secrets redacted unless --secrets)
  kvfabric config keys [--markdown]          list every key, its environment variable and default`;

function fail(problems: string[], file: string | undefined): number {
  process.stderr.write(`kvfabric config: ${file ?? '(defaults)'} is invalid:\n`);
  for (const p of problems) process.stderr.write(`  ${p}\n`);
  return 1;
}

/** Load, or print every problem and return the exit code. */
function tryLoad(file: string | undefined): KvfConfig | number {
  try {
    return loadConfig(file === undefined ? {} : { file });
  } catch (err) {
    if (!isKvfError(err, 'CONFIG_INVALID')) throw err;
    return fail((err.details?.problems as string[] | undefined) ?? err.message.split('\n'), file);
  }
}

function summary(cfg: KvfConfig): string[] {
  const r = redactConfig(cfg);
  const mib = (b: number): string => `${(b / 1024 ** 2).toFixed(b % 1024 ** 2 === 0 ? 0 : 1)} MiB`;
  return [
    `cluster      ${r.cluster.name}`,
    `nats         ${r.nats.servers.join(', ')}${r.nats.token || r.nats.user ? ' (auth)' : ''}${r.nats.tls ? ' (tls)' : ''}`,
    `redis        ${r.redis.url} prefix=${r.redis.keyPrefix} ttl=${r.redis.indexTtlSeconds}s`,
    `partition    ${r.partition.layerGroups} layer groups x ${r.partition.seqBuckets} seq buckets of ${r.partition.seqBucketTokens} tokens`,
    `coordinator  heartbeat ${r.coordinator.heartbeatIntervalMs} ms, dead after ${r.coordinator.nodeDeadAfterMs} ms, replication ${r.coordinator.replicationFactor}`,
    `shard        arena ${mib(r.shard.arenaBytes)} (${r.shard.arenaKind}), batch <= ${r.shard.batchBlocksMax} blocks`,
    `models       ${r.models.builtin.join(', ')}`,
    `log          ${r.log.level}; metrics ${r.metrics.port === 0 ? 'disabled' : `${r.metrics.host}:${r.metrics.port}`}`,
  ];
}

function validate(args: string[]): number {
  const file = args[0];
  if (file === undefined || args.length > 1) {
    process.stderr.write(USAGE + '\n');
    return 2;
  }
  const cfg = tryLoad(file);
  if (typeof cfg === 'number') return cfg;
  process.stdout.write(
    `${file}: valid\n${summary(cfg)
      .map((l) => `  ${l}\n`)
      .join('')}`,
  );
  return 0;
}

function show(args: string[]): number {
  const secrets = args.includes('--secrets');
  const rest = args.filter((a) => a !== '--secrets');
  if (rest.length > 1 || rest.some((a) => a.startsWith('-'))) {
    process.stderr.write(USAGE + '\n');
    return 2;
  }
  const cfg = tryLoad(rest[0] ?? (process.env.KVFABRIC_CONFIG || undefined));
  if (typeof cfg === 'number') return cfg;
  process.stdout.write(configToYaml(cfg, { redact: !secrets }));
  return 0;
}

/** The key table of docs/operations.md (a test checks the doc contains exactly this). */
export function keysMarkdown(): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|');
  const rows = describeConfig().map(
    (r) =>
      `| \`${r.key}\` | \`${r.env}\` | ${esc(r.default)} | ${esc(r.expected)} | ${esc(r.doc)}${r.secret ? ' (secret)' : ''} |`,
  );
  return [
    '| key | environment variable | default | expected | meaning |',
    '|---|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}

function keys(args: string[]): number {
  if (args.includes('--markdown')) {
    process.stdout.write(keysMarkdown());
    return 0;
  }
  for (const r of describeConfig())
    process.stdout.write(`${r.key.padEnd(32)} ${r.env.padEnd(42)} ${r.default}\n`);
  return 0;
}

export function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'validate':
      return Promise.resolve(validate(rest));
    case 'show':
      return Promise.resolve(show(rest));
    case 'keys':
      return Promise.resolve(keys(rest));
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(USAGE + '\n');
      return Promise.resolve(0);
    default:
      process.stderr.write(
        `${sub === undefined ? '' : `kvfabric config: unknown subcommand ${JSON.stringify(sub)}\n`}${USAGE}\n`,
      );
      return Promise.resolve(2);
  }
}

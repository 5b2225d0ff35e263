/**
 * `kvfabric status [--nats URL] [--redis URL] [--key-prefix P] [--state FILE] [--json]`: members,
 * the placement grid, fill per node, epoch, leader, hit rate and stranded bytes of a running
 * cluster. Where to connect: the flags, else the state file `kvfabric up` wrote
 * (.kvfabric/cluster.json), else the deployment config (KVFABRIC_CONFIG / KVFABRIC_* variables).
 * Exit 0: the cluster answered; 1: it could not be reached (or the index could not); 2: usage.
 */
import type { ConnectionOptions } from '@nats-io/transport-node';
import type { RedisOptions } from 'ioredis';
import { loadConfig } from '../../../shared/config.js';
import { natsSecurityOptions } from '../../../shared/nats-connect.js';
import { redisOptions } from '../../../shared/redis-options.js';
import { toKvfError } from '../../../shared/errors.js';
import { pidAlive, readState, stateFilePath, type ClusterState } from './cluster-state.js';
import { gatherStatus, type ClusterStatus } from './status-gather.js';

const USAGE = `usage: kvfabric status [--nats URL] [--redis URL] [--key-prefix P] [--state FILE] [--json]

Shows members, the placement grid, fill per node, epoch, leader, hit rate and stranded bytes.
Without --nats it reads the state file of \`kvfabric up\` (default .kvfabric/cluster.json), else
the config (KVFABRIC_CONFIG, KVFABRIC_NATS_SERVERS, KVFABRIC_REDIS_URL...).`;

interface StatusArgs {
  nats?: string;
  redis?: string;
  keyPrefix?: string;
  state?: string;
  json: boolean;
}

function parseArgs(argv: readonly string[]): StatusArgs | string {
  const a: StatusArgs = { json: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] as string;
    if (flag === '--json') {
      a.json = true;
      continue;
    }
    const value = argv[i + 1];
    const key = { '--nats': 'nats', '--redis': 'redis', '--key-prefix': 'keyPrefix', '--state': 'state' }[
      flag
    ] as 'nats' | 'redis' | 'keyPrefix' | 'state' | undefined;
    if (key === undefined) return `unknown argument ${JSON.stringify(flag)}`;
    if (value === undefined || value.startsWith('--')) return `${flag} needs a value`;
    a[key] = value;
    i++;
  }
  return a;
}

interface Target {
  /** Authentication and TLS from the deployment config (KVFABRIC_CONFIG and KVFABRIC_* variables). */
  natsSecurity: Partial<ConnectionOptions>;
  redisSecurity: RedisOptions;
  natsUrl: string;
  redisUrl: string;
  keyPrefix: string;
  source: string;
  state?: ClusterState;
}

function resolveTarget(a: StatusArgs): Target {
  const file = stateFilePath(a.state);
  const state = a.nats === undefined || a.state !== undefined ? readState(file) : undefined;
  if (state !== undefined && !pidAlive(state.pid)) {
    throw new Error(
      `${file} names a cluster whose \`kvfabric up\` (pid ${state.pid}) is no longer running; start one with \`kvfabric up\``,
    );
  }
  // Credentials and TLS always come from the deployment config, whichever URLs are used.
  const cfg = loadConfig(process.env.KVFABRIC_CONFIG ? { file: process.env.KVFABRIC_CONFIG } : {});
  const security = { natsSecurity: natsSecurityOptions(cfg), redisSecurity: redisOptions(cfg) };
  if (a.nats !== undefined || state === undefined) {
    return {
      ...security,
      natsUrl: a.nats ?? cfg.nats.servers.join(','),
      redisUrl: a.redis ?? cfg.redis.url,
      keyPrefix: a.keyPrefix ?? cfg.redis.keyPrefix,
      source: a.nats !== undefined ? 'flags' : 'config (no state file)',
    };
  }
  return {
    ...security,
    natsUrl: state.natsUrl,
    redisUrl: a.redis ?? state.redisUrl,
    keyPrefix: a.keyPrefix ?? state.keyPrefix,
    source: file,
    state,
  };
}

/** Hit rate with where it comes from: shard nodes count requests, not hits, so only a client can. */
export interface HitRateView {
  value: number | null;
  source: string;
  cachedTokens?: number;
  promptTokens?: number;
  requests?: number;
  at?: string;
}

export function hitRateView(state: ClusterState | undefined): HitRateView {
  const d = state?.demo;
  if (d === undefined) {
    return {
      value: null,
      source:
        'none recorded: shard nodes count requests, not hits; the SDK counts hits per client (KvfClient.stats()). `kvfabric up --demo` records its client counters here',
    };
  }
  return {
    value: d.hitRate,
    source: `demo client counters (${d.completed} requests, tokens from cache / prompt tokens), recorded by \`kvfabric up --demo\` at ${d.finishedAt}`,
    cachedTokens: d.cachedTokens,
    promptTokens: d.promptTokens,
    requests: d.completed,
    at: d.finishedAt,
  };
}

const size = (b: number): string => {
  if (b >= 1024 ** 3) return `${(b / 1024 ** 3).toFixed(2)} GiB`;
  if (b >= 1024 ** 2) return `${(b / 1024 ** 2).toFixed(1)} MiB`;
  if (b >= 1024) return `${(b / 1024).toFixed(1)} KiB`;
  return `${b} B`;
};
const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;

function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
  return rows.map(
    (r) =>
      '  ' +
      r
        .map((cell, c) => cell.padEnd(widths[c] ?? 0))
        .join('  ')
        .trimEnd(),
  );
}

function membersSection(st: ClusterStatus): string[] {
  const rows = [['node', 'role', 'capacity', 'used', 'fill', 'primary cells', 'silent', 'models']];
  for (const m of st.members) {
    rows.push([
      m.nodeId,
      m.role,
      size(m.capacityBytes),
      size(m.usedBytes),
      pct(m.fill),
      `${m.primaryCells}/${m.cells}`,
      `${Math.round(m.silentMs)} ms`,
      m.models.join(',') || '-',
    ]);
  }
  return [`members (${st.members.length})`, ...table(rows)];
}

function placementSection(st: ClusterStatus): string[] {
  const p = st.placement;
  const nodes = [...new Set(p.grid.flat().filter((x): x is string => x !== null))].sort();
  const letter = new Map(nodes.map((n, i) => [n, i < 26 ? String.fromCharCode(65 + i) : `${i}`]));
  const out = [
    `placement grid: ${p.layerGroups} layer groups x ${p.seqBuckets} sequence buckets of ${p.seqBucketTokens} tokens (primary per cell)`,
  ];
  p.grid.forEach((row, g) =>
    out.push(`  g${g}`.padEnd(6) + row.map((n) => (n === null ? '-' : letter.get(n))).join('')),
  );
  out.push(
    '  ' + nodes.map((n) => `${letter.get(n)}=${n} (${p.primaryCells[n] ?? 0} cells)`).join('  ') ||
      '  (no cells placed)',
  );
  return out;
}

function fillSection(st: ClusterStatus): string[] {
  const rows = [['node', 'model', 'block', 'used/capacity blocks', 'committed', 'evicted']];
  for (const m of st.members) {
    if (m.statsError !== undefined) rows.push([m.nodeId, `stats failed: ${m.statsError}`, '', '', '', '']);
    for (const f of m.modelFill ?? []) {
      rows.push([
        m.nodeId,
        f.model,
        size(f.blockBytes),
        `${f.usedBlocks}/${f.capacityBlocks}`,
        String(f.committedBlocks),
        String(f.evictedTotal),
      ]);
    }
  }
  return ['fill per node', ...table(rows)];
}

function strandedSection(st: ClusterStatus): string[] {
  const s = st.stranded;
  const r = s.byReason;
  const out = [
    `stranded bytes: ${size(s.stranded.bytes)} in ${s.stranded.blocks} blocks (${s.stranded.chunks} chunks) of ${size(s.stored.bytes)} stored${s.complete ? '' : ' (lower bound)'}`,
    `  cached blocks no lookup can reach: earlier chunk gone ${size(r.ancestorMissing.bytes)}, layer group missing ${size(r.groupMissing.bytes)}, not indexed ${size(r.notIndexed.bytes)}`,
    `  reachable: ${s.reachable.chunks} chunks, ${size(s.reachable.bytes)}`,
  ];
  for (const n of s.notes) out.push(`  note: ${n}`);
  return out;
}

export function formatStatus(st: ClusterStatus, hit: HitRateView): string {
  const q = st.shardRequests;
  return [
    `cluster  nats ${st.natsUrl}  redis ${st.redisUrl}${st.index === 'unreachable' ? ' (UNREACHABLE)' : ''}`,
    `leader   ${st.leader.id} (term ${st.leader.term})   epoch ${st.epoch}   replication ${st.replicationFactor}   models ${st.models.join(', ') || '-'}`,
    '',
    ...membersSection(st),
    '',
    ...placementSection(st),
    '',
    ...fillSection(st),
    '',
    `hit rate: ${hit.value === null ? 'n/a' : pct(hit.value)}  (${hit.source})`,
    `shard requests: allocate ${q.allocate}, commit ${q.commit}, locate ${q.locate}, errors ${q.errors}`,
    ...strandedSection(st),
  ].join('\n');
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const a = parseArgs(argv);
  if (typeof a === 'string') {
    process.stderr.write(`kvfabric status: ${a}\n${USAGE}\n`);
    return 2;
  }
  let target: Target;
  let st: ClusterStatus;
  try {
    target = resolveTarget(a);
    st = await gatherStatus({
      natsUrl: target.natsUrl,
      redisUrl: target.redisUrl,
      keyPrefix: target.keyPrefix,
      natsSecurity: target.natsSecurity,
      redisSecurity: target.redisSecurity,
    });
  } catch (err) {
    process.stderr.write(`kvfabric status: cannot reach the cluster: ${toKvfError(err).message}\n`);
    return 1;
  }
  const hit = hitRateView(target.state);
  if (a.json)
    process.stdout.write(JSON.stringify({ ...st, hitRate: hit, source: target.source }, null, 2) + '\n');
  else process.stdout.write(formatStatus(st, hit) + '\n');
  if (st.index === 'unreachable') {
    process.stderr.write(`kvfabric status: the prefix index at ${st.redisUrl} is unreachable\n`);
    return 1;
  }
  return 0;
}

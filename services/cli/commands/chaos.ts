/**
 * `kvfabric chaos [--scenario NAME...] [--duration 10m] [--json] [--seed N] [--shards N]
 * [--history FILE] [--verbose]`: starts a local cluster (>= 4 shard nodes, replication factor 2,
 * 2 coordinators, three nats-servers), runs each scenario (a mixed workload, a fault, a history
 * check) and prints a table, or with --json one object
 * {"seed":N,"scenarios":[{"name","ops","acknowledgedLost","corruptServed","detectMs","failoverMs","restoreMs","errorRate","passed",...}]}.
 * With --duration the scenario list repeats (repeated faults) until the time is up.
 * Exit 0: every scenario passed; 1: one failed; 2: usage.
 */
import { connect } from '../../../shared/sdk/mod.js';
import { Corpus } from '../chaos/corpus.js';
import { hangAfterUcxPut, type WriterChildSpec } from '../chaos/faults.js';
import { Rng } from '../chaos/rng.js';
import { runChaos, type ChaosOptions, type ChaosReport } from '../chaos/runner.js';
import { SCENARIO_NAMES, type ScenarioName } from '../chaos/types.js';

const USAGE = `usage: kvfabric chaos [--scenario NAME...] [--duration 10m] [--json] [--seed N] [--shards N]
                      [--history FILE] [--verbose]

Runs fault scenarios against a local cluster and checks that nothing acknowledged is lost and
nothing corrupt is served. Scenarios (default: all): ${SCENARIO_NAMES.join(', ')}.
--duration repeats them until the time is up (e.g. 10m, 90s). --history appends every operation
as a JSON line. --verbose forwards the cluster's logs to stderr.`;

interface ChaosArgs {
  scenarios: ScenarioName[];
  durationMs?: number;
  json: boolean;
  seed?: number;
  shards?: number;
  history?: string;
  verbose: boolean;
  writerChild?: string;
}

export function parseDurationMs(v: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(m[1]) * unit);
}

export function parseChaosArgs(argv: readonly string[]): ChaosArgs | string {
  const a: ChaosArgs = { scenarios: [], json: false, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] as string;
    if (flag === '--json' || flag === '--verbose') {
      a[flag === '--json' ? 'json' : 'verbose'] = true;
      continue;
    }
    const value = argv[i + 1];
    if (value === undefined || value.startsWith('--')) return `${flag} needs a value`;
    i++;
    if (flag === '--scenario') {
      for (const n of value.split(',')) {
        if (!(SCENARIO_NAMES as readonly string[]).includes(n))
          return `unknown scenario ${JSON.stringify(n)}`;
        a.scenarios.push(n as ScenarioName);
      }
    } else if (flag === '--duration') {
      const ms = parseDurationMs(value);
      if (ms === undefined || ms <= 0)
        return `--duration: expected e.g. 10m or 90s, got ${JSON.stringify(value)}`;
      a.durationMs = ms;
    } else if (flag === '--seed' || flag === '--shards') {
      const n = Number(value);
      if (!Number.isSafeInteger(n) || n < 0) return `${flag}: expected a non-negative integer`;
      if (flag === '--shards' && n < 4) return '--shards: at least 4';
      a[flag === '--seed' ? 'seed' : 'shards'] = n;
    } else if (flag === '--history') a.history = value;
    else if (flag === '--writer-child') a.writerChild = value;
    else return `unknown argument ${JSON.stringify(flag)}`;
  }
  if (a.scenarios.length === 0) a.scenarios = [...SCENARIO_NAMES];
  return a;
}

/** The writer process the kill-writer scenario kills between its UCX put and its commit. */
async function writerChild(b64: string): Promise<number> {
  const spec = JSON.parse(Buffer.from(b64, 'base64').toString('utf8')) as WriterChildSpec;
  const client = await connect({
    natsServers: spec.natsServers,
    redisUrl: spec.redisUrl,
    model: spec.model,
    namespace: spec.namespace,
  });
  const layout = await client.layout(spec.model);
  const corpus = new Corpus(layout, spec.model, spec.namespace, new Rng(spec.seed), {
    families: 1,
    promptsPerFamily: 1,
  });
  const prompt = corpus.prompts[spec.promptId];
  if (!prompt) throw new Error(`no prompt ${spec.promptId}`);
  hangAfterUcxPut(client);
  await client.put(prompt.tokens, corpus.kvFor(prompt), { namespace: spec.namespace });
  process.stderr.write('writer child: put returned without writing (nothing was allocated)\n');
  return 1;
}

function table(report: ChaosReport): string {
  const head = [
    'scenario',
    'ops',
    'lost',
    'corrupt',
    'detectMs',
    'failoverMs',
    'restoreMs',
    'errorRate',
    'result',
  ];
  const rows = report.scenarios.map((s) => [
    s.name,
    String(s.ops),
    String(s.acknowledgedLost),
    String(s.corruptServed),
    String(s.detectMs),
    String(s.failoverMs),
    String(s.restoreMs),
    s.errorRate.toFixed(3),
    s.passed ? 'PASS' : 'FAIL',
  ]);
  const w = head.map((h, k) => Math.max(h.length, ...rows.map((r) => (r[k] as string).length)));
  const line = (r: string[]): string => r.map((c, k) => c.padEnd(w[k] as number)).join('  ');
  const notes = report.scenarios.flatMap((s) => s.notes.map((n) => `  ${s.name}: ${n}`));
  return [
    `seed ${report.seed}`,
    line(head),
    ...rows.map(line),
    ...(notes.length ? ['notes:', ...notes] : []),
  ].join('\n');
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const a = parseChaosArgs(argv);
  if (typeof a === 'string') {
    process.stderr.write(`kvfabric chaos: ${a}\n${USAGE}\n`);
    return 2;
  }
  if (a.writerChild !== undefined) return writerChild(a.writerChild);
  const opts: ChaosOptions = {
    scenarios: a.scenarios,
    log: (l) => process.stderr.write(`${l}\n`),
    ...(a.seed !== undefined ? { seed: a.seed } : {}),
    ...(a.durationMs !== undefined ? { durationMs: a.durationMs } : {}),
    ...(a.shards !== undefined ? { shards: a.shards } : {}),
    ...(a.history !== undefined ? { historyFile: a.history } : {}),
    ...(a.verbose ? { clusterLog: (l: string) => process.stderr.write(`${l}\n`) } : {}),
  };
  const report = await runChaos(opts);
  process.stdout.write(a.json ? `${JSON.stringify(report)}\n` : `${table(report)}\n`);
  return report.scenarios.every((s) => s.passed) ? 0 : 1;
}

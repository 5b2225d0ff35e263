/**
 * `kvfabric bench [--quick] [--json] [--out DIR] [parts...]`: caching strategies side by side,
 * the trace replay and capacity sweep, the compute model and the physical limits
 * (services/cli/bench/). `kvfabric bench transfer ...` goes to the UCX transfer bench.
 *
 * stdout carries the tables, or with --json exactly one JSON object; progress and logs go to
 * stderr. Each run writes results.json and chart.svg into --out (default bench-results/<time>/).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { renderChart } from '../bench/chart.js';
import { BENCH_USAGE, parseBenchOptions, type BenchOptions } from '../bench/options.js';
import { buildReport, formatReport } from '../bench/report.js';
import { runBench } from '../bench/run.js';

export async function run(argv: string[]): Promise<number> {
  if (argv[0] === 'transfer') {
    const { benchTransfer } = await import('./bench-transfer.js');
    return benchTransfer(argv.slice(1));
  }
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${BENCH_USAGE}\n`);
    return 0;
  }
  const startedAt = new Date();
  let o: BenchOptions;
  try {
    o = parseBenchOptions(argv, startedAt);
  } catch (err) {
    process.stderr.write(`kvfabric bench: ${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
  const log = (line: string): void => void process.stderr.write(`${line}\n`);
  const results = await runBench(o, log);
  const report = buildReport(results, o, `kvfabric bench ${argv.join(' ')}`.trim(), startedAt);
  mkdirSync(o.outDir, { recursive: true });
  const jsonPath = path.join(o.outDir, 'results.json');
  const svgPath = path.join(o.outDir, 'chart.svg');
  writeFileSync(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(svgPath, renderChart(report));
  const text = formatReport(report);
  if (o.json) {
    process.stderr.write(text);
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } else {
    process.stdout.write(text);
  }
  log(`results: ${jsonPath}, chart: ${svgPath} (${(results.wallMs / 1000).toFixed(1)} s)`);
  const bad = results.workloads.reduce((n, w) => n + w.verifyFailures, 0);
  return bad > 0 ? 1 : 0;
}

/**
 * A short run of every chaos scenario (issue 5, section 4) against one shared local cluster:
 * 4 shard nodes with replication factor 2, 2 coordinators, three nats-servers with JetStream
 * replicas 3, Redis; test hooks on. Each scenario must lose no acknowledged chunk, serve no
 * corrupt byte, and meet its timing targets (see docs/reliability.md). The long run with repeated
 * faults is `kvfabric chaos --duration 10m`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runChaos, type ChaosReport } from '../../services/cli/chaos/runner.js';
import { SCENARIO_NAMES, type ScenarioResult } from '../../services/cli/chaos/types.js';
import { buildDist } from '../harness/cluster.js';

/** The whole short run (cluster start, 9 scenarios, heals) stays well under the 5-minute budget. */
const RUN_BUDGET_MS = 240_000;

describe('chaos scenarios (short run)', () => {
  let report: ChaosReport | undefined;
  let runError: unknown;
  const logs: string[] = [];

  beforeAll(async () => {
    buildDist();
    const started = Date.now();
    try {
      report = await runChaos({
        scenarios: SCENARIO_NAMES,
        seed: 20_241_105,
        warmupMs: 1000,
        faultPhaseMs: 2500,
        failoverWaitMs: 8000,
        restoreWaitMs: 30_000,
        log: (l) => logs.push(l),
      });
    } catch (err) {
      runError = err;
    }
    logs.push(`short run took ${Date.now() - started} ms`);
  }, RUN_BUDGET_MS + 60_000);

  afterAll(() => {
    // The figures docs/reliability.md records, one line per scenario.
    for (const r of report?.scenarios ?? []) console.log(`chaos ${JSON.stringify(r)}`);
  });

  const result = (name: string): ScenarioResult => {
    if (!report) throw new Error(`chaos run failed: ${String(runError)}\n${logs.join('\n')}`);
    const r = report.scenarios.find((s) => s.name === name);
    if (!r) throw new Error(`no result for ${name}`);
    return r;
  };

  for (const name of SCENARIO_NAMES) {
    it(name, () => {
      const r = result(name);
      const why = `${name}: ${JSON.stringify(r)}`;
      expect(r.ops, why).toBeGreaterThan(0);
      expect(r.acknowledgedLost, why).toBe(0);
      expect(r.corruptServed, why).toBe(0);
      expect(r.evictions, why).toBe(0);
      expect(r.passed, why).toBe(true);
    });
  }

  it('prints the report shape kvfabric chaos --json prints', () => {
    const r = result('kill-shard');
    for (const k of [
      'name',
      'ops',
      'acknowledgedLost',
      'corruptServed',
      'detectMs',
      'failoverMs',
      'restoreMs',
      'errorRate',
      'passed',
    ]) {
      expect(r).toHaveProperty(k);
    }
    expect(report?.scenarios.map((s) => s.name)).toEqual([...SCENARIO_NAMES]);
  });
});

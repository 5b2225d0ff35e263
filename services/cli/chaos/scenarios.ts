/**
 * The faults, one function per scenario. Each injects its fault while the workload runs, times
 * detection / failover / restoration, and records target misses in run.failures. Timings are
 * from the fault (t0); -1 means not applicable or not reached within the wait (see notes).
 * docs/reliability.md describes each scenario and its targets.
 */
import { ensureBuckets } from '../../../shared/cluster/buckets.js';
import { decodeLeaderLease, LEADER_KEY, type PlacementTable } from '../../../shared/protocol/cluster.js';
import { Corpus } from './corpus.js';
import {
  argMax,
  blocksByCell,
  blocksPerNode,
  corruptPutsInFlight,
  debugCorrupt,
  killWriterMidPut,
  promptsOnNode,
  shardHandle,
} from './faults.js';
import { acknowledgedPrompts, checkHistory, History } from './history.js';
import { pollUntil, rfRestored, shardStats, sleep, type SeenEvent } from './observe.js';
import { Rng } from './rng.js';
import type { ChaosContext, ScenarioRun } from './runner.js';
import type { ScenarioName } from './types.js';
import { getPrompt, putPrompt } from './workload.js';

/** Targets of issue 5. */
export const TARGETS = { failoverMs: 3000, restoreMs: 30_000, leaderMs: 5000 } as const;

type Scenario = (ctx: ChaosContext, run: ScenarioRun) => Promise<void>;

function table(ctx: ChaosContext): PlacementTable {
  const t = ctx.placement.current();
  if (!t) throw new Error('no placement table');
  return t;
}

const since = (t0: number, at: number | undefined): number => (at === undefined ? -1 : at - t0);

const memberDead =
  (node: string) =>
  (e: SeenEvent): boolean =>
    e.subject.endsWith('.member') && e.body.event === 'dead' && e.body.nodeId === node;

const replicationEvent =
  (kind: string, node?: string) =>
  (e: SeenEvent): boolean =>
    e.subject.endsWith('.replication') &&
    e.body.event === kind &&
    (node === undefined || e.body.nodeId === node);

function checkTarget(run: ScenarioRun, what: string, ms: number, target: number): void {
  if (ms < 0) run.failures.push(`${what}: not reached within the wait`);
  else if (ms > target) run.failures.push(`${what}: ${ms} ms > target ${target} ms`);
}

/** Time restoration of the replication factor with `gone` nodes excluded. */
async function timeRestore(
  ctx: ChaosContext,
  run: ScenarioRun,
  t0: number,
  gone: ReadonlySet<string>,
): Promise<void> {
  let reported = false;
  const at = await pollUntil(
    async () => {
      const r = await rfRestored(ctx.nc, ctx.placement, gone);
      reported ||= r.replicationReported;
      return r.restored;
    },
    ctx.opts.restoreWaitMs,
    250,
  );
  run.restoreMs = since(t0, at);
  if (!reported)
    run.notes.push('no node reports replication state: restoreMs is from the placement table alone');
}

/** kill -9 or SIGSTOP a shard node chosen by role of the workload's blocks, and time everything. */
async function nodeFault(
  ctx: ChaosContext,
  run: ScenarioRun,
  role: 'primary' | 'replica',
  fault: 'kill' | 'pause',
): Promise<void> {
  const t = table(ctx);
  const acked = acknowledgedPrompts(run.history);
  const per = blocksPerNode(t, run.corpus, acked);
  const victim = argMax(role === 'primary' ? per.primary : per.replica);
  if (victim === undefined) throw new Error(`no node holds a ${role} copy of acknowledged blocks`);
  const affected = promptsOnNode(t, run.corpus, acked, victim);
  const h = shardHandle(ctx.cluster, victim);
  run.notes.push(
    `victim ${victim} (${role} of ${(role === 'primary' ? per.primary : per.replica).get(victim)} acked blocks, ${affected.length} prompts)`,
  );
  const pauseMs =
    ctx.cluster.config.shard.readLeaseMs + ctx.cluster.config.coordinator.nodeDeadAfterMs + 1000;
  const t0 = Date.now();
  h.kill(fault === 'kill' ? 'SIGKILL' : 'SIGSTOP');
  const gone = new Set(ctx.gone);
  if (fault === 'kill') gone.add(victim);
  await Promise.all([
    sleep(Math.max(ctx.opts.faultPhaseMs, fault === 'pause' ? pauseMs : 0)),
    ctx.events
      .waitFor(t0, memberDead(victim), ctx.opts.failoverWaitMs)
      .then((at) => (run.detectMs = since(t0, at))),
    run.probeServed(affected, t0, ctx.opts.failoverWaitMs).then((ms) => (run.failoverMs = ms ?? -1)),
    (async () => {
      if (fault === 'pause') {
        await sleep(pauseMs);
        const cont = Date.now();
        h.kill('SIGCONT');
        const fenced = await ctx.events.waitFor(
          cont,
          replicationEvent('fenced', victim),
          ctx.opts.failoverWaitMs,
        );
        if (fenced === undefined)
          run.failures.push(`${victim} resumed after ${pauseMs} ms but published no 'fenced' event`);
      }
      await timeRestore(ctx, run, t0, gone);
    })(),
  ]);
  if (fault === 'kill') ctx.gone.add(victim);
  if (run.detectMs < 0) run.failures.push(`no member 'dead' event for ${victim}`);
  checkTarget(run, "failover (reads of the node's blocks served again)", run.failoverMs, TARGETS.failoverMs);
  checkTarget(run, 'replication factor restored', run.restoreMs, TARGETS.restoreMs);
}

const killShard: Scenario = (ctx, run) => nodeFault(ctx, run, 'primary', 'kill');
const killReplica: Scenario = (ctx, run) => nodeFault(ctx, run, 'replica', 'kill');
const pauseShard: Scenario = (ctx, run) => nodeFault(ctx, run, 'primary', 'pause');

const killCoordinatorLeader: Scenario = async (ctx, run) => {
  const b = await ensureBuckets(ctx.nc);
  const e = await b.leader.get(LEADER_KEY);
  if (!e || e.operation !== 'PUT') throw new Error('no leader lease');
  const lease = decodeLeaderLease(e.value);
  const victim = ctx.cluster.coordinators.find((c) => c.nodeId === lease.id);
  if (!victim) throw new Error(`leader ${lease.id} is not a coordinator of this cluster`);
  run.notes.push(`victim ${lease.id} (term ${lease.term})`);
  ctx.gone.add(lease.id);
  const acked = [...acknowledgedPrompts(run.history).keys()].slice(0, 16);
  const t0 = Date.now();
  victim.kill('SIGKILL');
  await Promise.all([
    sleep(ctx.opts.faultPhaseMs),
    ctx.events
      .waitFor(
        t0,
        (ev) => ev.subject.endsWith('.leader') && ev.body.event === 'elected' && ev.body.id !== lease.id,
        ctx.opts.failoverWaitMs,
      )
      .then((at) => (run.detectMs = since(t0, at))),
    run.probeServed(acked, t0, ctx.opts.failoverWaitMs).then((ms) => (run.failoverMs = ms ?? -1)),
    pollUntil(
      async () => {
        const cur = await b.leader.get(LEADER_KEY);
        if (!cur || cur.operation !== 'PUT') return false;
        const l = decodeLeaderLease(cur.value);
        return l.id !== lease.id && l.term > lease.term;
      },
      ctx.opts.failoverWaitMs,
      50,
    ).then((at) => (run.restoreMs = since(t0, at))),
  ]);
  checkTarget(run, 'new coordinator leader', run.restoreMs, TARGETS.leaderMs);
};

const killNatsServer: Scenario = async (ctx, run) => {
  const nats = ctx.cluster.natsCluster;
  if (!nats) throw new Error('this cluster runs a single nats-server');
  const acked = [...acknowledgedPrompts(run.history).keys()].slice(0, 16);
  const victim = run.rng.int(nats.urls.length);
  run.notes.push(`victim ${nats.urls[victim]}`);
  const t0 = Date.now();
  await nats.kill(victim);
  await Promise.all([
    sleep(ctx.opts.faultPhaseMs),
    run.probeServed(acked, t0, ctx.opts.failoverWaitMs).then((ms) => (run.failoverMs = ms ?? -1)),
  ]);
  const restart = Date.now();
  await nats.restart(victim);
  await nats.waitForMetaLeader(ctx.opts.restoreWaitMs);
  run.restoreMs = Date.now() - t0;
  run.notes.push(`server restarted ${restart - t0} ms after the kill; restoreMs includes that wait`);
  const dead = [...ctx.cluster.shards, ...ctx.cluster.coordinators].filter(
    (c) => !ctx.gone.has(c.nodeId) && (c.process.exitCode !== null || c.process.signalCode !== null),
  );
  if (dead.length > 0)
    run.failures.push(`actors exited after losing one nats-server: ${dead.map((d) => d.nodeId).join(',')}`);
  if (run.history.ops.some((o) => o.startMs >= t0 && o.endMs > 0 && !o.ok)) {
    run.notes.push('some operations failed while the server was down (see errorRate)');
  }
  // The issue sets no time target here (only: nothing lost, actors and workers reconnect); a read
  // that never comes back within the wait fails, a slow one is reported.
  if (run.failoverMs < 0) run.failures.push('reads not served again while one nats-server was down');
  else if (run.failoverMs > TARGETS.failoverMs)
    run.notes.push(`reads stalled ${run.failoverMs} ms after the kill`);
};

const killRedis: Scenario = async (ctx, run) => {
  const acked = [...acknowledgedPrompts(run.history).keys()].slice(0, 16);
  const t0 = Date.now();
  await ctx.cluster.killRedis();
  await sleep(1000);
  await ctx.cluster.restartRedis();
  await Promise.all([
    sleep(ctx.opts.faultPhaseMs),
    ctx.events
      .waitFor(t0, replicationEvent('index_rebuilt'), ctx.opts.restoreWaitMs)
      .then((at) => (run.restoreMs = since(t0, at))),
    run.probeServed(acked, t0, ctx.opts.restoreWaitMs).then((ms) => (run.failoverMs = ms ?? -1)),
  ]);
  const degraded = run.history.ops.find((o) => o.startMs >= t0 && o.degraded === true);
  run.detectMs = degraded ? degraded.endMs - t0 : -1;
  const threw = run.history.ops.filter(
    (o) => o.startMs >= t0 && o.endMs > 0 && (o.kind === 'put' || o.kind === 'get') && !o.ok,
  );
  if (threw.length > 0)
    run.failures.push(
      `${threw.length} operations threw while Redis was down or empty (expected a degraded status)`,
    );
  if (run.restoreMs < 0)
    run.failures.push("no 'index_rebuilt' event: the index was not rebuilt from the shards");
  checkTarget(run, 'acknowledged prompts hit in full again', run.failoverMs, TARGETS.restoreMs);
};

const corruptStoredBlock: Scenario = async (ctx, run) => {
  const t = table(ctx);
  const acked = acknowledgedPrompts(run.history);
  const targets: { pid: number; node: string; hash: string; g: number }[] = [];
  const seen = new Set<string>();
  for (const [pid, chunks] of acked) {
    for (const [cell, blocks] of blocksByCell(t.spec, run.corpus, run.corpus.prompts[pid]!, chunks)) {
      const b = blocks[blocks.length - 1]!;
      const node = t.cells[cell]?.replicas[0];
      if (node === undefined || seen.has(`${b.hash}/${b.g}`)) continue;
      seen.add(`${b.hash}/${b.g}`);
      targets.push({ pid, node, hash: b.hash, g: b.g });
      break;
    }
    if (targets.length >= 6) break;
  }
  if (targets.length === 0) throw new Error('no acknowledged block to corrupt');
  const flips = await Promise.all(
    targets.map((x) => debugCorrupt(ctx.nc, x.node, run.corpus.model, x.hash, x.g, 7)),
  );
  const t0 = Date.now();
  const failed = flips.filter((f) => !f.flipped);
  if (failed.length > 0)
    run.failures.push(
      `debug_corrupt did not flip ${failed.length}/${flips.length}: ${failed[0]?.error ?? 'flipped=false'}`,
    );
  run.notes.push(`corrupted ${flips.length - failed.length} stored blocks (one copy each, on the primary)`);
  await Promise.all([
    sleep(ctx.opts.faultPhaseMs),
    ctx.events
      .waitFor(t0, replicationEvent('corrupt_dropped'), ctx.opts.failoverWaitMs)
      .then((at) => (run.detectMs = since(t0, at))),
    run
      .probeServed([...new Set(targets.map((x) => x.pid))], t0, ctx.opts.failoverWaitMs)
      .then((ms) => (run.failoverMs = ms ?? -1)),
  ]);
  await timeRestore(ctx, run, t0, ctx.gone);
  checkTarget(run, 'corrupted blocks served from the intact copy', run.failoverMs, TARGETS.failoverMs);
};

/** Fold a side history into the scenario's counts. */
function foldSide(run: ScenarioRun, side: History, corpus: Corpus): void {
  const v = checkHistory(side, (pid) => corpus.prompts[pid]!.hashes);
  run.extraOps += v.ops;
  run.extraFailedOps += v.failedOps;
  run.extraLost += v.acknowledgedLost;
  run.extraCorruptServed += v.corruptServed;
}

const corruptInFlight: Scenario = async (ctx, run) => {
  const ns = `${run.corpus.namespace}-bad`.slice(0, 64);
  const bad = await ctx.connectClient(ns);
  const corpus = new Corpus(run.corpus.layout, run.corpus.model, ns, run.rng.fork(), {
    families: 2,
    promptsPerFamily: 3,
  });
  const side = new History();
  const nodes = Object.keys(table(ctx).members);
  const before = await Promise.all(nodes.map((n) => shardStats(ctx.nc, n)));
  let flipped = 0;
  const undo = corruptPutsInFlight(bad, () => flipped++);
  const t0 = Date.now();
  for (const p of corpus.prompts) await putPrompt(bad, corpus, side, p, true);
  undo();
  const after = await Promise.all(nodes.map((n) => shardStats(ctx.nc, n)));
  const rejected =
    after.reduce((a, s) => a + (s?.checksumFailures ?? 0), 0) -
    before.reduce((a, s) => a + (s?.checksumFailures ?? 0), 0);
  run.detectMs = Date.now() - t0;
  const accepted = side.ops.filter((o) => o.kind === 'put' && o.ok && (o.ackChunks ?? 0) > 0);
  run.notes.push(`${flipped} blocks flipped after their crc; nodes counted ${rejected} checksum mismatches`);
  if (flipped === 0) run.failures.push('no block went through the corrupted put path');
  if (accepted.length > 0)
    run.failures.push(
      `${accepted.length} puts acknowledged blocks whose bytes did not match the writer's checksum`,
    );
  if (flipped > 0 && rejected === 0) run.failures.push('no node counted a checksum mismatch at commit');
  // Nothing corrupt is visible; the same prompts then put cleanly and read back intact.
  for (const p of corpus.prompts) await getPrompt(bad, corpus, side, p, 'probe');
  for (const p of corpus.prompts) await putPrompt(bad, corpus, side, p);
  for (const p of corpus.prompts) await getPrompt(bad, corpus, side, p, 'final');
  run.failoverMs = Date.now() - t0;
  foldSide(run, side, corpus);
  await sleep(ctx.opts.faultPhaseMs / 2);
};

const killWriter: Scenario = async (ctx, run) => {
  const ns = `${run.corpus.namespace}-w`.slice(0, 64);
  const seed = run.rng.int(0x7fffffff);
  const corpus = new Corpus(run.corpus.layout, run.corpus.model, ns, new Rng(seed), {
    families: 1,
    promptsPerFamily: 1,
  });
  const prompt = corpus.prompts[0]!;
  const side = new History();
  const t0 = await killWriterMidPut(
    {
      natsServers: ctx.cluster.natsCluster?.urls ?? [ctx.cluster.natsUrl],
      redisUrl: ctx.cluster.redisUrl,
      model: corpus.model,
      namespace: ns,
      seed,
      promptId: 0,
    },
    30_000,
  );
  // Nothing of the half-written put is visible.
  const peek = await getPrompt(run.client, corpus, side, prompt, 'probe');
  if ((peek.hitChunks ?? 0) > 0)
    run.failures.push(`a get after the writer died returned ${peek.hitChunks} chunks of its uncommitted put`);
  // The dead writer's slots are reclaimed: a fresh put of the same prompt eventually stores it.
  const full = prompt.hashes.length;
  const at = await pollUntil(
    async () => (await putPrompt(run.client, corpus, side, prompt)).ackChunks === full,
    ctx.cluster.config.shard.allocTimeoutMs + ctx.opts.failoverWaitMs,
    250,
  );
  run.restoreMs = since(t0, at);
  // Retried puts before the reclaim are expected to acknowledge nothing; they are not errors.
  await getPrompt(run.client, corpus, side, prompt, 'final');
  run.notes.push(
    `writer killed after its UCX put, before commit; allocTimeoutMs ${ctx.cluster.config.shard.allocTimeoutMs}`,
  );
  checkTarget(
    run,
    "dead writer's allocation reclaimed",
    run.restoreMs,
    ctx.cluster.config.shard.allocTimeoutMs + 5000,
  );
  foldSide(run, side, corpus);
  await sleep(ctx.opts.faultPhaseMs / 2);
};

export const SCENARIOS: Record<ScenarioName, Scenario> = {
  'kill-shard': killShard,
  'kill-replica': killReplica,
  'kill-coordinator-leader': killCoordinatorLeader,
  'pause-shard': pauseShard,
  'kill-nats-server': killNatsServer,
  'kill-redis': killRedis,
  'corrupt-stored-block': corruptStoredBlock,
  'corrupt-in-flight': corruptInFlight,
  'kill-writer': killWriter,
};

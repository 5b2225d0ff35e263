/**
 * `kvfabric doctor [--config FILE] [--json]`: can this host run kvfabric? Checks the native addon,
 * UCX (mmap hooks, transports and devices, a loopback bandwidth probe, locked memory), CUDA, NATS
 * (reachable, version), JetStream, the clock against the NATS server's, and Redis. Prints each
 * result with a fix; exits 1 when the node cannot serve (a `fail`), 0 otherwise (warnings too).
 */
import { loadConfig, type KvfConfig } from '../../../shared/config.js';
import { isKvfError } from '../../../shared/errors.js';
import { checkClock, checkJetStream, checkNats, checkRedis } from '../doctor/cluster.js';
import {
  checkCuda,
  checkMemlock,
  checkMmapHook,
  checkNative,
  checkUcxProbe,
  checkUcxTransports,
} from '../doctor/host.js';
import { DOCTOR_DEFAULTS, type CheckResult, type DoctorOptions } from '../doctor/types.js';

const USAGE = `usage: kvfabric doctor [--config FILE] [--json]
  Checks this host for kvfabric: native addon, UCX, CUDA, NATS, JetStream, clock, Redis.
  --config FILE  the config the node runs with (default $KVFABRIC_CONFIG, else defaults + KVFABRIC_* env)
  --json         one JSON object {ok, checks:[{id,status,summary,fix?,details?}]}
  Exit 0: the node can serve (warnings may remain); 1: a check failed; 2: usage.`;

export interface DoctorReport {
  ok: boolean;
  config: string | null;
  checks: CheckResult[];
}

/** Runs every check in order; never throws for an operating problem (it becomes a result). */
export async function runDoctor(
  cfg: KvfConfig,
  opts: Partial<DoctorOptions> = {},
  env: NodeJS.ProcessEnv = process.env,
): Promise<CheckResult[]> {
  const o: DoctorOptions = { ...DOCTOR_DEFAULTS, ...opts };
  const checks: CheckResult[] = [];
  // Loading UCX with its mmap hooks on crashes or hangs Node: check the variable before the addon.
  const hook = checkMmapHook(env);
  const native: ReturnType<typeof checkNative> =
    hook.status === 'ok'
      ? checkNative()
      : {
          result: { id: 'native', status: 'skip', summary: 'not loaded: UCX_MEM_MMAP_HOOK_MODE is not none' },
        };
  checks.push(native.result, hook, checkCuda(cfg, native.info));
  const ucx = await checkUcxTransports(cfg, env, o);
  checks.push(ucx.result);
  checks.push(
    native.info
      ? await checkUcxProbe(cfg, o)
      : { id: 'ucx-probe', status: 'skip', summary: 'needs the native addon' },
  );
  checks.push(checkMemlock(ucx.ucx));

  const nats = await checkNats(cfg, o);
  checks.push(nats.result);
  if (nats.nc) {
    try {
      const js = await checkJetStream(nats.nc);
      checks.push(js.result, await checkClock(js.jsm, o));
    } finally {
      await nats.nc.close().catch(() => undefined);
    }
  } else {
    checks.push(
      { id: 'jetstream', status: 'skip', summary: 'needs NATS' },
      { id: 'clock', status: 'skip', summary: 'needs NATS' },
    );
  }
  checks.push(await checkRedis(cfg, o));
  return checks;
}

const LABEL: Record<CheckResult['status'], string> = { ok: 'ok', warn: 'WARN', fail: 'FAIL', skip: 'skip' };

export function renderText(report: DoctorReport): string {
  const width = Math.max(...report.checks.map((c) => c.id.length)) + 2;
  const lines = [`kvfabric doctor${report.config ? ` (${report.config})` : ''}`];
  for (const c of report.checks) {
    lines.push(`  ${LABEL[c.status].padEnd(5)} ${c.id.padEnd(width)}${c.summary}`);
    if (c.fix && (c.status === 'warn' || c.status === 'fail')) {
      const pad = ' '.repeat(8 + width);
      lines.push(...c.fix.split('\n').map((l, i) => `${pad}${i === 0 ? 'fix: ' : '     '}${l}`));
    }
  }
  const fails = report.checks.filter((c) => c.status === 'fail').length;
  const warns = report.checks.filter((c) => c.status === 'warn').length;
  lines.push(
    report.ok
      ? `result: this node can serve${warns ? ` (${warns} warning${warns > 1 ? 's' : ''})` : ''}`
      : `result: this node CANNOT serve (${fails} failed, ${warns} warning${warns === 1 ? '' : 's'})`,
  );
  return lines.join('\n') + '\n';
}

function parseArgs(argv: string[]): { file?: string; json: boolean } | string {
  let file: string | undefined;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') json = true;
    else if (a === '--config') {
      file = argv[++i];
      if (file === undefined) return '--config needs a file';
    } else if (a === '--help' || a === '-h') return 'help';
    else return `unknown argument ${JSON.stringify(a)}`;
  }
  return { ...(file !== undefined ? { file } : {}), json };
}

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if (args === 'help') {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (typeof args === 'string') {
    process.stderr.write(`kvfabric doctor: ${args}\n${USAGE}\n`);
    return 2;
  }
  const file = args.file ?? (process.env.KVFABRIC_CONFIG || undefined);
  let cfg: KvfConfig;
  try {
    cfg = loadConfig(file === undefined ? {} : { file });
  } catch (err) {
    if (!isKvfError(err, 'CONFIG_INVALID')) throw err;
    const checks: CheckResult[] = [
      {
        id: 'config',
        status: 'fail',
        summary: `${file ?? '(defaults)'} is invalid: ${err.message.split('\n').join('; ')}`,
        fix: `kvfabric config validate ${file ?? '<file>'} lists every problem; fix them and run doctor again.`,
      },
    ];
    const report = { ok: false, config: file ?? null, checks };
    process.stdout.write(args.json ? JSON.stringify(report) + '\n' : renderText(report));
    return 1;
  }
  const checks = await runDoctor(cfg);
  const report: DoctorReport = {
    ok: !checks.some((c) => c.status === 'fail'),
    config: file ?? null,
    checks,
  };
  process.stdout.write(args.json ? JSON.stringify(report) + '\n' : renderText(report));
  return report.ok ? 0 : 1;
}

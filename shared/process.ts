/**
 * What every actor's thin main.ts shares: `--config <file>` handling, loading and logging the
 * effective config, and waiting for SIGTERM/SIGINT. Actors import this (never each other or the
 * CLI), so a process started by `kvfabric <actor>`, docker or systemd behaves the same.
 */
import { KvfError } from './errors.js';
import { loadConfig, redactConfig, type DeepPartial, type KvfConfig } from './config.js';
import { createLogger, isLogLevel, LOG_LEVELS, type Logger, type LogLevel } from './log.js';

export interface ActorArgs {
  /** From `--config <file>` / `--config=<file>`, else KVFABRIC_CONFIG, else unset (defaults). */
  configFile?: string;
  /** From `--log-level <level>`: overrides log.level (config file and KVFABRIC_LOG_LEVEL). */
  logLevel?: LogLevel;
  help: boolean;
}

/** Parses the arguments every actor accepts; anything else is a usage error (exit 2). */
export function parseActorArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ActorArgs {
  let configFile = env.KVFABRIC_CONFIG || undefined;
  let help = false;
  let logLevel: LogLevel | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--help' || a === '-h') help = true;
    else if (a === '--config' || a === '-c') {
      const next = argv[++i];
      if (next === undefined || next.startsWith('-')) throw new KvfError('BAD_REQUEST', `${a} needs a file`);
      configFile = next;
    } else if (a.startsWith('--config=')) configFile = a.slice('--config='.length);
    else if (a === '--log-level' || a.startsWith('--log-level=')) {
      const v = a === '--log-level' ? argv[++i] : a.slice('--log-level='.length);
      if (!isLogLevel(v))
        throw new KvfError('BAD_REQUEST', `--log-level needs one of ${LOG_LEVELS.join(', ')}`);
      logLevel = v;
    } else throw new KvfError('BAD_REQUEST', `unknown argument ${JSON.stringify(a)}`);
  }
  return {
    help,
    ...(configFile === undefined ? {} : { configFile }),
    ...(logLevel === undefined ? {} : { logLevel }),
  };
}

export interface ActorBoot {
  config: KvfConfig;
  log: Logger;
  configFile: string | undefined;
}

export function actorUsage(actor: string, what: string): string {
  return [
    `usage: kvfabric ${actor} [--config <file>]`,
    '',
    what,
    '',
    '  --config, -c <file>  YAML config (default: $KVFABRIC_CONFIG, else built-in defaults)',
    '  --log-level <level>  debug, info, warn or error (overrides log.level; JSON lines on stderr)',
    '  --help, -h           this help',
    '',
    'Every config key can be overridden by a KVFABRIC_* variable (see docs/operations.md).',
  ].join('\n');
}

/**
 * Start watching for SIGTERM/SIGINT, parse arguments, load the config and log it (secrets
 * redacted); the actor then awaits `waitForShutdown()`. Returns the exit code instead when the
 * process should stop now: 0 after --help, 2 on a usage error, 1 on a bad config.
 */
export function bootActor(
  actor: string,
  what: string,
  argv: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; overrides?: DeepPartial<KvfConfig> } = {},
): ActorBoot | number {
  const env = opts.env ?? process.env;
  const shutdown = watchShutdown(); // before any output: see watchShutdown
  const early = (code: number): number => {
    shutdown.dispose();
    return code;
  };
  let args: ActorArgs;
  try {
    args = parseActorArgs(argv, env);
  } catch (err) {
    process.stderr.write(`kvfabric ${actor}: ${(err as Error).message}\n${actorUsage(actor, what)}\n`);
    return early(2);
  }
  if (args.help) {
    process.stdout.write(actorUsage(actor, what) + '\n');
    return early(0);
  }
  let config: KvfConfig;
  try {
    const overrides: DeepPartial<KvfConfig> =
      args.logLevel === undefined
        ? { ...opts.overrides }
        : { ...opts.overrides, log: { level: args.logLevel } };
    config = loadConfig({ file: args.configFile, env, overrides });
  } catch (err) {
    const problems = (err as KvfError).details?.problems ?? [(err as Error).message];
    createLogger(actor).error('invalid config', { configFile: args.configFile, problems });
    return early(1);
  }
  const log = createLogger(actor, { level: config.log.level });
  log.info('effective config', {
    configFile: args.configFile ?? null,
    pid: process.pid,
    config: redactConfig(config),
  });
  return { config, log, configFile: args.configFile };
}

export interface ShutdownWatch {
  /** Resolves with the first SIGTERM or SIGINT. */
  readonly signal: Promise<NodeJS.Signals>;
  /** Stop watching (startup failed): removes the handlers and lets the process exit. */
  dispose(): void;
}

/** One watch per process: bootActor starts it, the actor's main awaits it later. */
let current: ShutdownWatch | undefined;

/**
 * Watch for SIGTERM/SIGINT (idempotent: returns the active watch). bootActor calls it before
 * anything is logged: a supervisor may signal as soon as it sees output, and a signal that
 * arrives before a handler exists kills the process with no clean shutdown. Keeps the event
 * loop alive meanwhile (a pending promise alone does not); after the first signal the handlers
 * are removed, so a second signal kills as usual.
 */
export function watchShutdown(signals: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT']): ShutdownWatch {
  if (current) return current;
  const keepAlive = setInterval(() => {}, 1 << 30);
  const handlers = new Map<NodeJS.Signals, () => void>();
  const stop = (): void => {
    clearInterval(keepAlive);
    for (const [sig, fn] of handlers) process.off(sig, fn);
    handlers.clear();
  };
  const signal = new Promise<NodeJS.Signals>((resolve) => {
    for (const sig of signals) {
      const h = (): void => {
        stop();
        resolve(sig);
      };
      handlers.set(sig, h);
      process.on(sig, h);
    }
  });
  const watch: ShutdownWatch = {
    signal,
    dispose: () => {
      stop();
      if (current === watch) current = undefined;
    },
  };
  current = watch;
  return watch;
}

/** Resolves with the first SIGTERM or SIGINT (since bootActor, which starts watching). */
export function waitForShutdown(): Promise<NodeJS.Signals> {
  return watchShutdown().signal;
}

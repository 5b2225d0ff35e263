/**
 * The `kvfabric` CLI: one command table, no argument-parsing dependency. Each command lives in
 * its own module and is imported only when run, so `kvfabric version` never loads the native
 * addon or NATS, and a command whose module does not exist yet says so instead of crashing.
 *
 * A command module exports `run(argv): Promise<number>` (the exit code); actors export
 * `main(argv)`. To add a command, add a row to COMMANDS and its module.
 */
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

type Entry = (argv: string[]) => Promise<number>;

interface Command {
  name: string;
  summary: string;
  /** Module (relative to this file, as compiled: `.js`) and its export. */
  module: string;
  export: string;
  /** Subcommands dispatched to their own modules (`bench transfer`). */
  subcommands?: Record<string, { module: string; export: string; summary: string }>;
}

export const COMMANDS: readonly Command[] = [
  {
    name: 'up',
    summary:
      'start a local cluster (nats-server, redis-server, coordinator, shard nodes) and keep it running',
    module: './commands/up.js',
    export: 'run',
  },
  {
    name: 'status',
    summary: 'show members, placement, fill per node, epoch and hit rate of a running cluster',
    module: './commands/status.js',
    export: 'run',
  },
  {
    name: 'coordinator',
    summary: 'run a coordinator (membership, placement table, leader lease)',
    module: '../coordinator/main.js',
    export: 'main',
  },
  {
    name: 'shard-node',
    summary: 'run a shard node (memory arenas, allocate/commit/locate endpoints)',
    module: '../shard-node/main.js',
    export: 'main',
  },
  {
    name: 'replica',
    summary: "run a replica actor (pulls copies of its primaries' blocks)",
    module: '../replica/main.js',
    export: 'main',
  },
  { name: 'agent', summary: 'run the local agent engines talk to (unix socket + shared memory)', module: '../agent/main.js', export: 'main' },
  {
    name: 'bench',
    summary:
      'benchmarks: caching strategies side by side, trace replay and capacity sweep, TTFT model, limits; `bench transfer`: UCX throughput',
    // services/cli/commands/bench.ts dispatches `bench transfer` to commands/bench-transfer.ts itself.
    module: './commands/bench.js',
    export: 'run',
  },
  {
    name: 'chaos',
    summary: 'fault scenarios against a local cluster: nothing acknowledged lost, nothing corrupt served',
    module: './commands/chaos.js',
    export: 'run',
  },
  {
    name: 'config',
    summary: 'validate a config file, show the effective config, list every key',
    module: './commands/config.js',
    export: 'run',
  },
  { name: 'doctor', summary: 'check that this host can run kvfabric: NATS, JetStream, Redis, UCX, CUDA, clocks', module: './commands/doctor.js', export: 'run' },
  {
    name: 'version',
    summary: 'print the kvfabric, wire protocol and key scheme versions',
    module: './commands/version.js',
    export: 'run',
  },
];

export function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    'usage: kvfabric <command> [arguments]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    `  ${'help'.padEnd(width)}this help (kvfabric <command> --help for a command's own)`,
    '',
    'Actors take --config <file> (default $KVFABRIC_CONFIG); every config key can be overridden',
    'by a KVFABRIC_* environment variable, e.g. KVFABRIC_SHARD_ARENA_BYTES=1GiB (docs/operations.md).',
  ].join('\n');
}

/** Exit code of a command that is registered but whose module has not been written yet. */
export const NOT_IMPLEMENTED = 2;

async function load(
  cmdName: string,
  module: string,
  exportName: string,
): Promise<{ entry: Entry } | { missing: string }> {
  const target = fileURLToPath(new URL(module, import.meta.url));
  let mod: Record<string, unknown>;
  try {
    mod = (await import(module)) as Record<string, unknown>;
  } catch (err) {
    // Only "this command's own module is absent" means not implemented; a broken import inside
    // an existing module is a real error and propagates with its stack.
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_MODULE_NOT_FOUND' && e.message.includes(target)) {
      return { missing: path.relative(process.cwd(), target) || target };
    }
    throw err;
  }
  const fn = mod[exportName];
  if (typeof fn !== 'function')
    throw new Error(`kvfabric ${cmdName}: ${target} does not export ${exportName}()`);
  return { entry: fn as Entry };
}

async function dispatch(cmd: Command, argv: string[]): Promise<number> {
  let module = cmd.module;
  let exportName = cmd.export;
  let label = cmd.name;
  if (cmd.subcommands) {
    const [sub, ...rest] = argv;
    const entry = sub === undefined ? undefined : cmd.subcommands[sub];
    if (!entry) {
      const lines = Object.entries(cmd.subcommands).map(
        ([n, s]) => `  kvfabric ${cmd.name} ${n}  ${s.summary}`,
      );
      const help = sub === '--help' || sub === '-h';
      const out = help ? process.stdout : process.stderr;
      out.write(
        `${help || sub === undefined ? '' : `kvfabric ${cmd.name}: unknown subcommand ${JSON.stringify(sub)}\n`}usage:\n${lines.join('\n')}\n`,
      );
      return help ? 0 : 2;
    }
    ({ module, export: exportName } = entry);
    label = `${cmd.name} ${sub as string}`;
    argv = rest;
  }
  const loaded = await load(label, module, exportName);
  if ('missing' in loaded) {
    process.stderr.write(
      `kvfabric ${label}: not yet implemented (${loaded.missing} does not exist in this build)\n`,
    );
    return NOT_IMPLEMENTED;
  }
  return loaded.entry(argv);
}

/** Runs one CLI invocation and returns its exit code (usage errors: 2). */
export async function runCli(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const helpFor = name === 'help' ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    if (helpFor) return dispatch(helpFor, ['--help']);
    (name === undefined ? process.stderr : process.stdout).write(usage() + '\n');
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V') return runCli(['version']);
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`kvfabric: unknown command ${JSON.stringify(name)}\n\n${usage()}\n`);
    return 2;
  }
  return dispatch(cmd, rest);
}

/** True when this module is the process entry (bin/kvfabric.js imports it), not a test's import. */
function isEntry(): boolean {
  const argv1 = process.argv[1];
  if (!argv1) return false;
  let real: string;
  try {
    real = realpathSync(argv1);
  } catch {
    return false;
  }
  return real === fileURLToPath(import.meta.url) || /[\\/]bin[\\/]kvfabric(\.js)?$/.test(real);
}

if (isEntry()) {
  runCli(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
      // A command that returned but left a handle open (a socket, a timer) must not hang the
      // shell: give stdout a moment to drain, then exit.
      setTimeout(() => process.exit(code), 2000).unref();
    },
    (err: unknown) => {
      process.stderr.write(`kvfabric: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}

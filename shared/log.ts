/**
 * A tiny structured logger: one JSON object per line on stderr, so that stdout stays free for a
 * command's real output (tables, YAML) and log collectors (journald, docker) can parse every line.
 * No dependency: actors log a few lines per second at most; a logging library buys nothing here.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

export type LogFields = Record<string, unknown>;

export interface Logger {
  readonly component: string;
  readonly level: LogLevel;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger for a sub-component (`shard-node.arena`) sharing this one's level and sink. */
  child(sub: string): Logger;
}

export interface LoggerOptions {
  /** @default KVFABRIC_LOG_LEVEL, else 'info' */
  level?: LogLevel;
  /** Where lines go; tests capture them. @default process.stderr */
  write?: (line: string) => void;
  /** Clock, injectable for tests. @default Date.now */
  now?: () => number;
}

export function isLogLevel(v: unknown): v is LogLevel {
  return typeof v === 'string' && (LOG_LEVELS as readonly string[]).includes(v);
}

function defaultLevel(): LogLevel {
  const env = process.env.KVFABRIC_LOG_LEVEL?.toLowerCase();
  return isLogLevel(env) ? env : 'info';
}

/** Errors, bigints and buffers do not survive JSON.stringify as-is; make them readable. */
function jsonSafe(_key: string, v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Error) {
    const code = (v as { codeName?: unknown; code?: unknown }).codeName ?? (v as { code?: unknown }).code;
    return { name: v.name, message: v.message, ...(code === undefined ? {} : { code }) };
  }
  if (v instanceof Uint8Array) return `<${v.byteLength} bytes>`;
  return v;
}

export function createLogger(component: string, opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? defaultLevel();
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  const now = opts.now ?? Date.now;
  const threshold = LOG_LEVELS.indexOf(level);

  const emit = (lvl: LogLevel, msg: string, fields?: LogFields): void => {
    if (LOG_LEVELS.indexOf(lvl) < threshold) return;
    const record: Record<string, unknown> = { ts: new Date(now()).toISOString(), level: lvl, component, msg };
    // A field named like a reserved key is kept under another name: it must not forge the record.
    for (const [k, v] of Object.entries(fields ?? {})) record[k in record ? `field.${k}` : k] = v;
    let line: string;
    try {
      line = JSON.stringify(record, jsonSafe);
    } catch {
      // Circular fields: keep the message rather than throw from a log call.
      line = JSON.stringify({ ts: record.ts, level: lvl, component, msg, fieldsError: 'unserializable' });
    }
    write(line + '\n');
  };

  return {
    component,
    level,
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (sub) => createLogger(`${component}.${sub}`, { level, write, now }),
  };
}

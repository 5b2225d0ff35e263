/**
 * Value kinds of config keys: how each is parsed from YAML and from an environment string, and
 * how its expected value is described in error messages and docs. Kept apart from config.ts so
 * the key table there reads as a table.
 */

export type Kind =
  | { t: 'string'; pattern?: RegExp; patternDoc?: string; minLength?: number }
  | { t: 'list'; pattern?: RegExp; patternDoc?: string; minItems?: number }
  | { t: 'int'; min: number; max: number }
  /** Bytes: a positive integer or a string with a unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB). */
  | { t: 'size' }
  /** Milliseconds as an integer; keys of this kind end in `Ms`. */
  | { t: 'duration'; min: number }
  | { t: 'enum'; values: readonly string[] }
  | { t: 'bool' };

export interface KeySpec {
  /** `section.camelCaseName` */
  key: string;
  kind: Kind;
  /** Absent only for optional keys. */
  default?: unknown;
  optional?: boolean;
  /** Redacted in logs and `config show`. */
  secret?: boolean;
  doc: string;
}

/** `shard.arenaBytes` -> `KVFABRIC_SHARD_ARENA_BYTES` (camelCase becomes SCREAMING_SNAKE). */
export function envNameFor(key: string): string {
  return (
    'KVFABRIC_' +
    key
      .replace(/\./g, '_')
      .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
      .toUpperCase()
  );
}

const UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/** `1GiB` -> 1073741824, `1.5 KB` -> 1500, `4096` -> 4096; undefined if not a positive size. */
export function parseSize(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v > 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(v);
  if (!m) return undefined;
  const mult = UNITS[(m[2] || 'b').toLowerCase()];
  if (mult === undefined) return undefined;
  const bytes = Math.floor(Number(m[1]) * mult);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}

/** 268435456 -> `256MiB`; sizes that are not whole binary units stay integers. */
export function formatSize(bytes: number): string | number {
  for (const [unit, mult] of [
    ['TiB', 1024 ** 4],
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const) {
    if (bytes >= mult && bytes % mult === 0) return `${bytes / mult}${unit}`;
  }
  return bytes;
}

export function describeKind(k: Kind): string {
  switch (k.t) {
    case 'string':
      return k.patternDoc ? `a string (${k.patternDoc})` : 'a non-empty string';
    case 'list':
      return `a list of ${k.patternDoc ?? 'strings'}${k.minItems ? ` (at least ${k.minItems})` : ''}`;
    case 'int':
      return `an integer in [${k.min}, ${k.max}]`;
    case 'size':
      return 'a size like 1GiB or a positive integer';
    case 'duration':
      return `a duration in milliseconds (integer >= ${k.min})`;
    case 'enum':
      return `one of ${k.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'bool':
      return 'true or false';
  }
}

export function formatGot(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? v.slice(0, 60) + '...' : v);
  return String(v);
}

export function formatDefault(k: KeySpec): string {
  if (k.default === undefined) return '(unset)';
  if (k.kind.t === 'size' && typeof k.default === 'number') return String(formatSize(k.default));
  if (Array.isArray(k.default)) return k.default.join(',');
  return String(k.default);
}

/** Reports one problem; `sub` is a path under the key (`[2]` for a list item). */
export type Report = (msg: string, sub?: string) => void;

/**
 * Parse a YAML/override value for a key; on a bad value, report `expected X, got Y` and return
 * the default so that later checks still run and every problem is listed at once.
 */
export function parseValue(spec: KeySpec, v: unknown, report: Report): unknown {
  const k = spec.kind;
  const bad = (): unknown => {
    report(`expected ${describeKind(k)}, got ${formatGot(v)}`);
    return spec.default;
  };
  if (v === null && spec.optional) return undefined; // `token: ~` clears an optional key
  switch (k.t) {
    case 'string': {
      if (typeof v !== 'string' || v.length < (k.minLength ?? 1)) return bad();
      return k.pattern && !k.pattern.test(v) ? bad() : v;
    }
    case 'list': {
      if (!Array.isArray(v) || v.length < (k.minItems ?? 0)) return bad();
      const items = v as unknown[];
      const badItem = items.findIndex(
        (x) => typeof x !== 'string' || (k.pattern ? !k.pattern.test(x) : x === ''),
      );
      if (badItem >= 0) {
        report(
          `expected ${k.patternDoc ?? 'a non-empty string'}, got ${formatGot(items[badItem])}`,
          `[${badItem}]`,
        );
        return spec.default;
      }
      return items;
    }
    case 'int':
    case 'duration': {
      const min = k.min;
      const max = k.t === 'int' ? k.max : Number.MAX_SAFE_INTEGER;
      return typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max ? v : bad();
    }
    case 'size':
      return parseSize(v) ?? bad();
    case 'enum':
      return typeof v === 'string' && k.values.includes(v) ? v : bad();
    case 'bool':
      return typeof v === 'boolean' ? v : bad();
  }
}

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

/** Parse an environment string per the key's kind: numbers, booleans, comma-separated lists. */
export function parseEnvValue(spec: KeySpec, raw: string, report: Report): unknown {
  const k = spec.kind;
  const s = raw.trim();
  if (s === '' && spec.optional) return undefined; // KVFABRIC_NATS_TOKEN= clears it
  switch (k.t) {
    case 'list':
      return parseValue(
        spec,
        s
          .split(',')
          .map((x) => x.trim())
          .filter((x) => x !== ''),
        report,
      );
    case 'int':
    case 'duration':
      if (!/^-?\d+$/.test(s)) {
        report(`expected ${describeKind(k)}, got ${formatGot(raw)}`);
        return spec.default;
      }
      return parseValue(spec, Number(s), report);
    case 'bool': {
      const l = s.toLowerCase();
      if (TRUE.has(l)) return true;
      if (FALSE.has(l)) return false;
      report(`expected ${describeKind(k)}, got ${formatGot(raw)}`);
      return spec.default;
    }
    default:
      return parseValue(spec, s, report);
  }
}

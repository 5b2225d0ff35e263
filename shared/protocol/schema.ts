/**
 * A small schema library for validating every incoming message at the edge. Each schema parses
 * `unknown` into a typed value or throws KvfError(BAD_REQUEST) naming the offending path.
 * Hand-rolled (about 150 lines) rather than a dependency: the wire protocol is the one place
 * where every rule must be visible and exact.
 */
import { KvfError } from '../errors.js';

export interface Schema<T> {
  parse(value: unknown, path?: string): T;
  readonly description: string;
}

export type Infer<S> = S extends Schema<infer T> ? T : never;

function fail(path: string, expected: string, value: unknown): never {
  const got =
    value === null
      ? 'null'
      : Array.isArray(value)
        ? 'array'
        : typeof value === 'string'
          ? `"${value.slice(0, 40)}"`
          : typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint'
            ? String(value)
            : typeof value;
  throw new KvfError('BAD_REQUEST', `${path || '<root>'}: expected ${expected}, got ${got}`, {
    details: { path: path || '<root>', expected },
  });
}

function schema<T>(description: string, parse: (v: unknown, path: string) => T): Schema<T> {
  return { description, parse: (v, path = '') => parse(v, path) };
}

export const s = {
  string(opts: { minLength?: number; maxLength?: number; pattern?: RegExp } = {}): Schema<string> {
    const max = opts.maxLength ?? 4096;
    const min = opts.minLength ?? 0;
    const desc = `string(${min}..${max}${opts.pattern ? ` ${opts.pattern}` : ''})`;
    return schema(desc, (v, p) => {
      if (typeof v !== 'string' || v.length < min || v.length > max) fail(p, desc, v);
      if (opts.pattern && !opts.pattern.test(v)) fail(p, desc, v);
      return v;
    });
  },
  int(opts: { min?: number; max?: number } = {}): Schema<number> {
    const min = opts.min ?? Number.MIN_SAFE_INTEGER;
    const max = opts.max ?? Number.MAX_SAFE_INTEGER;
    const desc = `integer in [${min}, ${max}]`;
    return schema(desc, (v, p) => {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) fail(p, desc, v);
      return v;
    });
  },
  number(opts: { min?: number; max?: number } = {}): Schema<number> {
    const min = opts.min ?? -Infinity;
    const max = opts.max ?? Infinity;
    const desc = `finite number in [${min}, ${max}]`;
    return schema(desc, (v, p) => {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) fail(p, desc, v);
      return v;
    });
  },
  bool(): Schema<boolean> {
    return schema('boolean', (v, p) => (typeof v === 'boolean' ? v : fail(p, 'boolean', v)));
  },
  literal<const L extends string | number | boolean>(lit: L): Schema<L> {
    const desc = JSON.stringify(lit);
    return schema(desc, (v, p) => (v === lit ? (v as L) : fail(p, desc, v)));
  },
  enum<const E extends readonly string[]>(values: E): Schema<E[number]> {
    const desc = `one of ${values.join('|')}`;
    return schema(desc, (v, p) =>
      typeof v === 'string' && values.includes(v) ? (v as E[number]) : fail(p, desc, v),
    );
  },
  /** Hex string of exactly `bytes` bytes (lowercase), e.g. a sha256 chunk hash. */
  hex(bytes: number): Schema<string> {
    const re = new RegExp(`^[0-9a-f]{${bytes * 2}}$`);
    const desc = `${bytes}-byte lowercase hex`;
    return schema(desc, (v, p) => (typeof v === 'string' && re.test(v) ? v : fail(p, desc, v)));
  },
  /** Base64 bytes, decoded to a Buffer, with a size cap. */
  base64(opts: { maxBytes: number }): Schema<Buffer> {
    const desc = `base64 of at most ${opts.maxBytes} bytes`;
    return schema(desc, (v, p) => {
      if (typeof v !== 'string' || v.length > Math.ceil(opts.maxBytes / 3) * 4) fail(p, desc, v);
      // Canonical padded base64 only: Buffer.from silently drops what it cannot decode.
      if (v.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) fail(p, desc, v);
      const buf = Buffer.from(v, 'base64');
      if (buf.byteLength > opts.maxBytes) fail(p, desc, v);
      return buf;
    });
  },
  /** A u64 carried as a decimal string (JSON numbers lose precision past 2^53). */
  u64(): Schema<bigint> {
    const desc = 'u64 as a decimal string';
    return schema(desc, (v, p) => {
      if (typeof v !== 'string' || !/^\d{1,20}$/.test(v)) fail(p, desc, v);
      const b = BigInt(v);
      if (b > 0xffffffffffffffffn) fail(p, desc, v);
      return b;
    });
  },
  array<T>(item: Schema<T>, opts: { minItems?: number; maxItems: number }): Schema<T[]> {
    const desc = `array(${opts.minItems ?? 0}..${opts.maxItems}) of ${item.description}`;
    return schema(desc, (v, p) => {
      if (!Array.isArray(v)) fail(p, desc, v);
      if (v.length > opts.maxItems) {
        throw new KvfError(
          'BATCH_TOO_LARGE',
          `${p || '<root>'}: ${v.length} items, at most ${opts.maxItems}`,
          {
            details: { path: p, items: v.length, maxItems: opts.maxItems },
          },
        );
      }
      if (v.length < (opts.minItems ?? 0)) fail(p, desc, v);
      return v.map((x, i) => item.parse(x, `${p}[${i}]`));
    });
  },
  optional<T>(inner: Schema<T>): Schema<T | undefined> {
    return schema(`optional ${inner.description}`, (v, p) =>
      v === undefined ? undefined : inner.parse(v, p),
    );
  },
  /** Closed object: unknown keys are rejected so typos never pass silently. */
  object<Shape extends Record<string, Schema<unknown>>>(
    shape: Shape,
  ): Schema<{ [K in keyof Shape]: Infer<Shape[K]> }> {
    const desc = `object{${Object.keys(shape).join(',')}}`;
    return schema(desc, (v, p) => {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(p, desc, v);
      const obj = v as Record<string, unknown>;
      for (const k of Object.keys(obj)) {
        // hasOwn, not `in`: `toString`, `constructor` or `__proto__` must not pass as known.
        if (!Object.hasOwn(shape, k)) {
          throw new KvfError('BAD_REQUEST', `${p ? p + '.' : ''}${k}: unknown field`, {
            details: { path: `${p ? p + '.' : ''}${k}` },
          });
        }
      }
      const out: Record<string, unknown> = {};
      for (const [k, sch] of Object.entries(shape)) {
        const val = sch.parse(obj[k], p ? `${p}.${k}` : k);
        if (val !== undefined) out[k] = val;
      }
      return out as { [K in keyof Shape]: Infer<Shape[K]> };
    });
  },
};

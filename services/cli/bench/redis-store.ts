/**
 * The seed's Redis-only prefix store: each (chunk, layer group) block is one Redis value written
 * and read through ioredis. As the seed did, fp32 KV is converted to fp16 before it is stored (and
 * back on a hit), and values are optionally gzipped (zlib). With an fp16 model, as in the default
 * bench, the conversion is the identity and Redis stores exactly the fabric's bytes.
 *
 * A get is done as well as this design allows, not as a strawman: GETs are pipelined, a window of
 * chunks (`windowBytesMax`) per round trip, and the walk stops at the first chunk with a missing
 * block (longest prefix). Puts pipeline SETs of the chunks not just served.
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import { f16ToF32Array, f32ArrayToF16 } from '../../../shared/dtype.js';
import { KvfError } from '../../../shared/errors.js';
import type { KvBuffers, ModelLayout } from '../../../shared/sdk/mod.js';
import { blockOf, chunkBytes, plainBuffers, type Prompt, type Strategy } from './strategy.js';

export interface RedisStoreOptions {
  url: string;
  /** gzip every value (zlib level 1, the seed's fast setting). @default false */
  gzip: boolean;
  /** Bytes of values requested per pipelined round trip on a get. @default 64 MiB */
  windowBytesMax?: number;
  /** Key prefix. @default 'bench' */
  keyPrefix?: string;
}

export const REDIS_STORE_DEFAULTS = { windowBytesMax: 64 * 1024 ** 2, keyPrefix: 'bench' } as const;

function aligned(b: Uint8Array): Uint8Array {
  return b.byteOffset % 4 === 0 ? b : new Uint8Array(b);
}

/** The stored form of one block: fp32 -> fp16 (as the seed did), then optionally gzip. */
export function encodeBlock(block: Uint8Array, dtype: string, gzip: boolean): Buffer {
  let raw: Uint8Array = block;
  if (dtype === 'fp32') {
    const a = aligned(block);
    const h = f32ArrayToF16(new Float32Array(a.buffer, a.byteOffset, a.byteLength / 4));
    raw = new Uint8Array(h.buffer, h.byteOffset, h.byteLength);
  }
  const buf = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  return gzip ? gzipSync(buf, { level: 1 }) : Buffer.from(buf);
}

/** Inverse of encodeBlock into `out` (the block's place in the worker's buffer). */
export function decodeBlockInto(value: Buffer, dtype: string, gzip: boolean, out: Uint8Array): void {
  const raw = gzip ? gunzipSync(value) : value;
  if (dtype === 'fp32') {
    const a = aligned(raw);
    const f = f16ToF32Array(new Uint16Array(a.buffer, a.byteOffset, a.byteLength / 2));
    out.set(new Uint8Array(f.buffer, f.byteOffset, f.byteLength));
  } else {
    out.set(raw);
  }
}

export class RedisStoreStrategy implements Strategy {
  readonly name: string;
  private readonly redis: Redis;
  private readonly windowChunks: number;
  private readonly keyPrefix: string;

  constructor(
    readonly layout: ModelLayout,
    private readonly o: RedisStoreOptions,
  ) {
    this.name = o.gzip ? 'redis-gzip' : 'redis';
    this.keyPrefix = o.keyPrefix ?? REDIS_STORE_DEFAULTS.keyPrefix;
    const windowBytes = o.windowBytesMax ?? REDIS_STORE_DEFAULTS.windowBytesMax;
    this.windowChunks = Math.max(1, Math.floor(windowBytes / chunkBytes(layout)));
    this.redis = new Redis(o.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  }

  async connect(): Promise<this> {
    await this.redis.connect();
    return this;
  }

  private key(p: Prompt, i: number, g: number): string {
    return `${this.keyPrefix}:${this.layout.profile.id}:${p.namespace}:${p.hashes[i] as string}:${g}`;
  }

  async get(p: Prompt, target: KvBuffers): Promise<number> {
    const groups = this.layout.groups.length;
    const dtype = this.layout.profile.dtype;
    for (let first = 0; first < p.hashes.length; first += this.windowChunks) {
      const last = Math.min(p.hashes.length, first + this.windowChunks);
      const pipe = this.redis.pipeline();
      for (let i = first; i < last; i++) for (let g = 0; g < groups; g++) pipe.getBuffer(this.key(p, i, g));
      const replies = (await pipe.exec()) ?? [];
      for (let i = first; i < last; i++) {
        for (let g = 0; g < groups; g++) {
          const [err, value] = replies[(i - first) * groups + g] ?? [null, null];
          if (err) throw new KvfError('INTERNAL', `redis get: ${err.message}`);
          if (!(value instanceof Buffer)) return i;
          decodeBlockInto(value, dtype, this.o.gzip, blockOf(target, this.layout, g, i));
        }
      }
    }
    return p.hashes.length;
  }

  async put(p: Prompt, kv: KvBuffers, fromChunk: number): Promise<void> {
    const groups = this.layout.groups.length;
    const dtype = this.layout.profile.dtype;
    for (let first = fromChunk; first < p.hashes.length; first += this.windowChunks) {
      const pipe = this.redis.pipeline();
      for (let i = first; i < Math.min(p.hashes.length, first + this.windowChunks); i++) {
        for (let g = 0; g < groups; g++) {
          pipe.set(this.key(p, i, g), encodeBlock(blockOf(kv, this.layout, g, i), dtype, this.o.gzip));
        }
      }
      for (const [err] of (await pipe.exec()) ?? []) {
        if (err) throw new KvfError('INTERNAL', `redis set: ${err.message}`);
      }
    }
  }

  allocBuffers(chunks: number): Promise<KvBuffers> {
    return Promise.resolve(plainBuffers(this.layout, chunks));
  }

  async clear(): Promise<void> {
    await this.redis.flushdb();
  }

  /** Bytes Redis holds (INFO memory used_memory), for reports. */
  async usedMemoryBytes(): Promise<number> {
    const info = await this.redis.info('memory');
    return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
  }

  async close(): Promise<void> {
    await this.redis.flushdb().catch(() => undefined);
    this.redis.disconnect();
  }
}

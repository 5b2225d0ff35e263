/**
 * The seed's in-process cache, LocalKVCache: a Map from chunk hash to the chunk's blocks (one copy
 * per layer group), least recently used first, bounded in bytes. A hit copies the blocks into the
 * worker's buffers. It lives and dies with the worker process and is not shared with any other
 * worker: in this single-worker bench that costs it nothing, in a fleet it is its main weakness.
 */
import type { KvBuffers, ModelLayout } from '../../../shared/sdk/mod.js';
import { blockOf, chunkBytes, plainBuffers, type Prompt, type Strategy } from './strategy.js';

export class LocalKVCache {
  /** Insertion order is recency order: first = least recently used. */
  private readonly map = new Map<string, Buffer[]>();
  private bytes = 0;

  constructor(readonly capacityBytes: number) {}

  get size(): number {
    return this.map.size;
  }

  get usedBytes(): number {
    return this.bytes;
  }

  has(key: string): boolean {
    return this.map.has(key);
  }

  /** The entry, marked most recently used; undefined on a miss. */
  get(key: string): Buffer[] | undefined {
    const v = this.map.get(key);
    if (v === undefined) return undefined;
    this.map.delete(key);
    this.map.set(key, v);
    return v;
  }

  /** Store copies of `blocks`; evicts least recently used entries until it fits. False if it never can. */
  set(key: string, blocks: readonly Uint8Array[]): boolean {
    const size = blocks.reduce((n, b) => n + b.byteLength, 0);
    if (size > this.capacityBytes) return false;
    this.delete(key);
    while (this.bytes + size > this.capacityBytes) {
      const oldest = this.map.keys().next();
      if (oldest.done) break;
      this.delete(oldest.value);
    }
    this.map.set(
      key,
      blocks.map((b) => Buffer.from(b)),
    );
    this.bytes += size;
    return true;
  }

  delete(key: string): void {
    const v = this.map.get(key);
    if (v === undefined) return;
    this.map.delete(key);
    this.bytes -= v.reduce((n, b) => n + b.byteLength, 0);
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }
}

export class LocalLruStrategy implements Strategy {
  readonly name = 'local-lru';
  private readonly cache: LocalKVCache;

  constructor(
    readonly layout: ModelLayout,
    capacityBytes: number,
  ) {
    this.cache = new LocalKVCache(capacityBytes);
  }

  get(p: Prompt, target: KvBuffers): Promise<number> {
    let i = 0;
    for (; i < p.hashes.length; i++) {
      const blocks = this.cache.get(`${p.namespace}/${p.hashes[i] as string}`);
      if (!blocks) break;
      blocks.forEach((b, g) => blockOf(target, this.layout, g, i).set(b));
    }
    return Promise.resolve(i);
  }

  put(p: Prompt, kv: KvBuffers, fromChunk: number): Promise<void> {
    const groups = this.layout.groups.length;
    for (let i = fromChunk; i < p.hashes.length; i++) {
      const key = `${p.namespace}/${p.hashes[i] as string}`;
      if (this.cache.has(key)) continue;
      const blocks = Array.from({ length: groups }, (_, g) => blockOf(kv, this.layout, g, i));
      if (!this.cache.set(key, blocks)) break;
    }
    return Promise.resolve();
  }

  allocBuffers(chunks: number): Promise<KvBuffers> {
    return Promise.resolve(plainBuffers(this.layout, chunks));
  }

  clear(): Promise<void> {
    this.cache.clear();
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.cache.clear();
    return Promise.resolve();
  }

  /** Chunks the capacity holds (for reports). */
  capacityChunks(): number {
    return Math.floor(this.cache.capacityBytes / chunkBytes(this.layout));
  }
}

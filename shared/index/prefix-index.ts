/**
 * The Redis hot prefix index: one key per committed chunk (never per layer or layer group),
 * `<prefix>:idx:<chunk hash>` -> small JSON metadata, with a TTL that slides on every hit.
 *
 * The index is a hint, never the truth: shard nodes hold the data, so a stale entry costs a
 * shortened hit, never wrong bytes. When Redis is unreachable every call degrades (lookups report
 * 0 cached chunks with `degraded: true`, writes are dropped and counted) instead of throwing at
 * the worker.
 */
import { Redis, type RedisOptions } from 'ioredis';

/**
 * Count leading chunks present, sliding each hit's TTL, in one round trip. PEXPIRE returns 1 only
 * for an existing key, so it is the existence test and the TTL slide at once.
 */
const LONGEST_PREFIX_LUA = `
local ttl = tonumber(ARGV[1])
local n = 0
for i = 1, #KEYS do
  if redis.call('PEXPIRE', KEYS[i], ttl) == 1 then n = n + 1 else break end
end
return n
`;

export interface ChunkMeta {
  /** Model id. */
  m: string;
  /** Chunk index in the prompt. */
  i: number;
}

export interface PrefixIndexOptions {
  url: string;
  password?: string;
  /** Key prefix shared by one deployment. Default 'kvf'. */
  keyPrefix?: string;
  /**
   * Tenant of this client's credentials (config tenant.id): its entries are
   * `<prefix>:idx:<tenant>:<hash>`, a key range a Redis ACL user can be confined to (shared/tenancy.ts).
   * Default: none, entries are `<prefix>:idx:<hash>` (the default tenant).
   */
  tenant?: string;
  /** More ioredis options (ACL username, TLS: shared/redis-options.ts redisOptions()). */
  redis?: RedisOptions;
  /** Sliding TTL of an entry. Default 24 h. */
  ttlSeconds?: number;
  /** Per-command timeout; past it the call degrades. Default 1000 ms. */
  commandTimeoutMs?: number;
  /** Upper bound on hashes per lookup (a 1M-token prompt at 256 tokens/chunk is 4096). */
  lookupHashesMax?: number;
  onStatus?: (status: IndexStatus) => void;
}

export type IndexStatus = 'connecting' | 'ready' | 'degraded' | 'closed';

export interface LookupResult {
  chunks: number;
  degraded: boolean;
}

interface RedisWithScript extends Redis {
  kvfLongestPrefix(numKeys: number, ...args: (string | number)[]): Promise<number>;
}

export class PrefixIndex {
  private readonly redis: RedisWithScript;
  private readonly prefix: string;
  private readonly ttlMs: number;
  private readonly lookupHashesMax: number;
  private statusValue: IndexStatus = 'connecting';
  degradedOps = 0;

  constructor(private readonly opts: PrefixIndexOptions) {
    this.prefix = opts.keyPrefix ?? 'kvf';
    this.ttlMs = (opts.ttlSeconds ?? 86_400) * 1000;
    this.lookupHashesMax = opts.lookupHashesMax ?? 8192;
    const redisOpts: RedisOptions = {
      lazyConnect: false,
      // Fail fast while disconnected instead of queueing: a worker must never wait on the index.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: opts.commandTimeoutMs ?? 1000,
      // Capped, jittered reconnect backoff.
      retryStrategy: (times) => Math.min(2000, 50 * 2 ** Math.min(times, 6)) + Math.floor(Math.random() * 50),
      ...(opts.password ? { password: opts.password } : {}),
      ...opts.redis,
    };
    this.redis = new Redis(opts.url, redisOpts) as RedisWithScript;
    this.redis.defineCommand('kvfLongestPrefix', { lua: LONGEST_PREFIX_LUA });
    this.redis.on('ready', () => this.setStatus('ready'));
    this.redis.on('error', () => this.setStatus('degraded'));
    this.redis.on('close', () => this.setStatus('degraded'));
  }

  get status(): IndexStatus {
    return this.statusValue;
  }

  /** Resolve once connected, or after timeoutMs (then the index simply runs degraded). */
  async ready(timeoutMs = 5000): Promise<boolean> {
    if (this.statusValue === 'ready') return true;
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.redis.off('ready', on);
        resolve(false);
      }, timeoutMs);
      const on = (): void => {
        clearTimeout(t);
        resolve(true);
      };
      this.redis.once('ready', on);
    });
  }

  key(hash: string): string {
    return this.opts.tenant === undefined
      ? `${this.prefix}:idx:${hash}`
      : `${this.prefix}:idx:${this.opts.tenant}:${hash}`;
  }

  /** How many leading chunks of `hashes` are indexed; slides their TTL. One round trip. */
  async longestPrefix(hashes: readonly string[]): Promise<LookupResult> {
    if (hashes.length === 0) return { chunks: 0, degraded: false };
    const keys = hashes.slice(0, this.lookupHashesMax).map((h) => this.key(h));
    try {
      const n = await this.redis.kvfLongestPrefix(keys.length, ...keys, this.ttlMs);
      return { chunks: Number(n), degraded: false };
    } catch {
      this.markDegraded();
      return { chunks: 0, degraded: true };
    }
  }

  /** Write entries for committed chunks (data before index: call only after commit). */
  async publish(entries: readonly { hash: string; meta: ChunkMeta }[]): Promise<boolean> {
    if (entries.length === 0) return true;
    try {
      const p = this.redis.pipeline();
      for (const e of entries) p.set(this.key(e.hash), JSON.stringify(e.meta), 'PX', this.ttlMs);
      const res = await p.exec();
      return (res ?? []).every(([err]) => !err);
    } catch {
      this.markDegraded();
      return false;
    }
  }

  /** Remove entries of chunks that lost a block (eviction). */
  async remove(hashes: readonly string[]): Promise<boolean> {
    if (hashes.length === 0) return true;
    try {
      await this.redis.del(...hashes.map((h) => this.key(h)));
      return true;
    } catch {
      this.markDegraded();
      return false;
    }
  }

  /** Key of the rebuild sentinel: written after a complete (re)build; missing = Redis lost its data. */
  sentinelKey(): string {
    return `${this.prefix}:meta:sentinel`;
  }

  /**
   * Whether the sentinel is there: 'missing' on a reachable Redis means the index was emptied
   * (restarted without persistence, flushed) and must be rebuilt from the shards.
   */
  async sentinel(): Promise<'present' | 'missing' | 'unreachable'> {
    try {
      return (await this.redis.exists(this.sentinelKey())) === 1 ? 'present' : 'missing';
    } catch {
      this.markDegraded();
      return 'unreachable';
    }
  }

  /** Write the sentinel (no TTL) with who built the index and when. */
  async setSentinel(value: string): Promise<boolean> {
    try {
      await this.redis.set(this.sentinelKey(), value);
      return true;
    } catch {
      this.markDegraded();
      return false;
    }
  }

  /** Which of these hashes are indexed (status and tests; not on the hot path). */
  async present(hashes: readonly string[]): Promise<boolean[]> {
    if (hashes.length === 0) return [];
    const p = this.redis.pipeline();
    for (const h of hashes) p.exists(this.key(h));
    const res = (await p.exec()) ?? [];
    return res.map(([err, v]) => !err && Number(v) === 1);
  }

  async close(): Promise<void> {
    this.setStatus('closed');
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }

  private markDegraded(): void {
    this.degradedOps++;
    this.setStatus('degraded');
  }

  private setStatus(s: IndexStatus): void {
    if (this.statusValue === s || this.statusValue === 'closed') return;
    this.statusValue = s;
    this.opts.onStatus?.(s);
  }
}

import { describe, expect, it } from 'vitest';
import { PrefixIndex } from '../../shared/index/prefix-index.js';
import { startRedisServer } from '../../shared/local-servers.js';
import { useServers, uniq } from '../harness/servers.js';

describe('Redis prefix index', () => {
  const fx = useServers();

  it('counts leading present chunks in one round trip and stops at the first gap', async () => {
    const idx = new PrefixIndex({ url: fx.redis.url, keyPrefix: uniq('kvf') });
    await idx.ready();
    const hs = ['a', 'b', 'c', 'd'].map((x) => x.repeat(64));
    expect(await idx.longestPrefix(hs)).toEqual({ chunks: 0, degraded: false });
    await idx.publish([hs[0]!, hs[1]!, hs[3]!].map((hash, i) => ({ hash, meta: { m: 'tiny', i } })));
    expect(await idx.longestPrefix(hs)).toEqual({ chunks: 2, degraded: false });
    await idx.remove([hs[0]!]);
    expect((await idx.longestPrefix(hs)).chunks).toBe(0);
    expect(await idx.present(hs)).toEqual([false, true, false, true]);
    await idx.close();
  });

  it('slides the TTL on a hit', async () => {
    const idx = new PrefixIndex({ url: fx.redis.url, keyPrefix: uniq('kvf'), ttlSeconds: 1 });
    await idx.ready();
    const h = 'e'.repeat(64);
    await idx.publish([{ hash: h, meta: { m: 'tiny', i: 0 } }]);
    await new Promise((r) => setTimeout(r, 600));
    expect((await idx.longestPrefix([h])).chunks).toBe(1); // slides to 1 s from now
    await new Promise((r) => setTimeout(r, 600));
    expect((await idx.longestPrefix([h])).chunks).toBe(1); // would have expired without the slide
    await new Promise((r) => setTimeout(r, 1100));
    expect((await idx.longestPrefix([h])).chunks).toBe(0);
    await idx.close();
  });

  it('degrades instead of throwing when Redis dies, and recovers when it is back', async () => {
    const redis = await startRedisServer();
    const statuses: string[] = [];
    const idx = new PrefixIndex({ url: redis.url, onStatus: (s) => statuses.push(s), commandTimeoutMs: 300 });
    expect(await idx.ready()).toBe(true);
    const h = 'f'.repeat(64);
    expect(await idx.publish([{ hash: h, meta: { m: 'tiny', i: 0 } }])).toBe(true);
    await redis.stop();
    expect(await idx.longestPrefix([h])).toEqual({ chunks: 0, degraded: true });
    expect(await idx.publish([{ hash: h, meta: { m: 'tiny', i: 0 } }])).toBe(false);
    expect(statuses).toContain('degraded');
    const again = await startRedisServer({ port: redis.port });
    try {
      expect(await idx.ready(5000)).toBe(true);
      // Restarted empty: a miss, not an error.
      expect(await idx.longestPrefix([h])).toEqual({ chunks: 0, degraded: false });
    } finally {
      await idx.close();
      await again.stop();
    }
  });
});

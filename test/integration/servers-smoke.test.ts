import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { useServers, uniq } from '../harness/servers.js';

describe('real servers smoke test', () => {
  const fx = useServers();

  it('JetStream KV: create, CAS refused on a stale revision, watch sees a put', async () => {
    const nc = await connect({ servers: fx.nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      const info = await jsm.getAccountInfo();
      expect(info.streams).toBeGreaterThanOrEqual(0);
      const kvm = new Kvm(nc);
      const kv = await kvm.create(uniq('smoke'), { history: 5 });
      const r1 = await kv.create('k', 'v1');
      const r2 = await kv.update('k', 'v2', r1);
      expect(r2).toBeGreaterThan(r1);
      await expect(kv.update('k', 'stale', r1)).rejects.toThrow(/wrong last sequence/);
      expect((await kv.get('k'))?.string()).toBe('v2');

      const watch = await kv.watch({ key: 'w.>' });
      const seen = (async () => {
        for await (const e of watch) {
          if (e.key === 'w.1') return e.string();
        }
        return undefined;
      })();
      await kv.put('w.1', 'hello');
      expect(await seen).toBe('hello');
      watch.stop();
    } finally {
      await nc.close();
    }
  });

  it('Redis: a Lua script round trip', async () => {
    const redis = new Redis(fx.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await redis.connect();
    try {
      const key = uniq('smoke:');
      await redis.set(key, '41');
      const out = await redis.eval(
        "return tonumber(redis.call('GET', KEYS[1])) + tonumber(ARGV[1])",
        1,
        key,
        1,
      );
      expect(out).toBe(42);
    } finally {
      redis.disconnect();
    }
  });
});

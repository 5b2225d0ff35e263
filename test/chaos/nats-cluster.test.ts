/**
 * startNatsCluster: three routed nats-servers with JetStream; a replicas-3 KV bucket keeps
 * accepting writes and serving reads through a client that knows every URL while one server is
 * killed with SIGKILL, and the server rejoins after a restart.
 */
import { Kvm } from '@nats-io/kv';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuckets } from '../../shared/cluster/buckets.js';
import { startLocalCluster } from '../../shared/local-cluster.js';
import { startNatsCluster, type NatsClusterHandle } from '../../shared/local-servers.js';
import { buildDist } from '../harness/cluster.js';

describe('startNatsCluster', () => {
  let cluster: NatsClusterHandle;
  beforeAll(async () => {
    cluster = await startNatsCluster(3);
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('serves a replicas-3 KV bucket through the loss of one server', async () => {
    expect(cluster.urls).toHaveLength(3);
    expect(new Set(cluster.urls).size).toBe(3);
    const nc = await connect({
      servers: cluster.urls,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 100,
      reconnectJitter: 100,
    });
    try {
      const kv = await new Kvm(jetstream(nc)).create('chaos_natsc', { replicas: 3, history: 1 });
      const st = await kv.status();
      expect(st.replicas).toBe(3);
      await kv.put('a', '1');
      // Kill the server this client is on, so the client must reconnect to another one.
      const onPort = Number(
        new URL(nc.getServer().startsWith('nats') ? nc.getServer() : `nats://${nc.getServer()}`).port,
      );
      const victim = cluster.urls.findIndex((u) => Number(new URL(u).port) === onPort);
      expect(victim).toBeGreaterThanOrEqual(0);
      await cluster.kill(victim);
      expect(cluster.server(victim)).toBeUndefined();
      const deadline = Date.now() + 20_000;
      let wrote = false;
      while (!wrote && Date.now() < deadline) {
        wrote = await kv.put('b', '2').then(
          () => true,
          () => false,
        );
        if (!wrote) await new Promise((r) => setTimeout(r, 200));
      }
      expect(wrote).toBe(true);
      expect((await kv.get('a'))?.string()).toBe('1');
      await cluster.restart(victim);
      expect(cluster.server(victim)?.pid).toBeGreaterThan(0);
      await cluster.waitForMetaLeader(20_000);
      expect((await kv.get('b'))?.string()).toBe('2');
    } finally {
      await nc.close();
    }
  });
});

describe('startLocalCluster({ natsCluster: 3 })', () => {
  it('creates every bucket and the event stream with JetStream replicas 3 and gives children every URL', async () => {
    buildDist();
    const c = await startLocalCluster({ shards: 0, natsCluster: 3 });
    try {
      expect(c.natsCluster?.urls).toHaveLength(3);
      expect(c.env.KVFABRIC_NATS_SERVERS).toBe(c.natsCluster?.urls.join(','));
      expect(c.env.KVFABRIC_NATS_JETSTREAM_REPLICAS).toBe('3');
      expect(c.config.nats.servers).toHaveLength(3);
      const nc = await connect({ servers: c.natsCluster?.urls ?? [] });
      try {
        const b = await ensureBuckets(nc);
        for (const kv of [b.members, b.placement, b.leader, b.models])
          expect((await kv.status()).replicas).toBe(3);
        const info = await b.jsm.streams.info('KVF_EVENTS');
        expect(info.config.num_replicas).toBe(3);
      } finally {
        await nc.close();
      }
    } finally {
      await c.stop();
    }
  });
});

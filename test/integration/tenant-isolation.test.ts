/**
 * Tenants bound to credentials, on a real cluster (nats-server with per-tenant users, redis-server
 * with per-tenant ACL users, a coordinator and two shard nodes as processes, UCX):
 *
 * - Tenant A's prompt, cached under a namespace tenant B also uses (so B computes the very same
 *   chunk hashes), is invisible to B: B's lookup and get find nothing.
 * - B cannot even ask about A's entries: Redis refuses every key of A's range to B's user (NOPERM),
 *   through the longest-prefix script too.
 * - B cannot probe the shards: on its own subject A's blocks are absent (the node scopes hashes
 *   to the tenant the subject names), and A's subjects and the default tenant's are closed to it.
 *
 * The server admits anonymous clients as the `admin` user (no_auth_user) only because the local
 * cluster harness connects without credentials; refusal of clients without credentials is
 * tested in security-auth.test.ts and deploy-configs.test.ts.
 */
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.js';
import { PrefixIndex } from '../../shared/index/prefix-index.js';
import { startLocalCluster, type LocalCluster } from '../../shared/local-cluster.js';
import { startNatsServer, startRedisServer, type ServerHandle } from '../../shared/local-servers.js';
import { natsConnectOptions } from '../../shared/nats-connect.js';
import { cellFor, cellId } from '../../shared/partition.js';
import { BUILTIN_PROFILES } from '../../shared/profiles.js';
import { locateReplySchema } from '../../shared/protocol/shard.js';
import { request } from '../../shared/protocol/codec.js';
import { redisOptions } from '../../shared/redis-options.js';
import { connect, type KvfClient, type ModelLayout } from '../../shared/sdk/mod.js';
import { natsTenantUserConf, redisTenantAclRule, tenantShardSubject } from '../../shared/tenancy.js';
import { buildDist } from '../harness/cluster.js';
import { expectServed, kvFor, mulberry32, randomTokens, scribble } from './sdk-helpers.js';

const tiny = BUILTIN_PROFILES['tiny-test']!;
const CT = tiny.chunkTokens;
const NS = 'shared-namespace'; // both tenants use it: same prompt -> same client-side hashes
const SEED = Number(process.env.KVF_TEST_SEED ?? Date.now() % 1_000_000);
const PARTITION = { layerGroups: 2, seqBuckets: 4, seqBucketTokens: 32 };

const TENANTS = {
  acme: { natsPass: 'acme-nats-pw', redisPass: 'acme-redis-pw' },
  globex: { natsPass: 'globex-nats-pw', redisPass: 'globex-redis-pw' },
} as const;
type Tenant = keyof typeof TENANTS;

describe(`tenants bound to credentials (seed ${SEED})`, () => {
  let nats: ServerHandle;
  let redis: ServerHandle;
  let cluster: LocalCluster;
  const logs: string[] = [];
  const clients = new Map<Tenant, KvfClient>();
  const raw: NatsConnection[] = [];
  let layout: ModelLayout;
  const prompt = randomTokens(mulberry32(SEED), 6 * CT);

  const tenantConfig = (t: Tenant) =>
    parseConfig({
      nats: { servers: [nats.url], user: t, pass: TENANTS[t].natsPass },
      redis: { url: redis.url, username: t, password: TENANTS[t].redisPass },
      tenant: { id: t },
    });

  beforeAll(async () => {
    buildDist();
    redis = await startRedisServer({ password: 'admin-redis-pw' });
    const admin = new Redis(redis.url, { password: 'admin-redis-pw' });
    for (const [t, p] of Object.entries(TENANTS)) {
      await admin.call('ACL', 'SETUSER', t, ...redisTenantAclRule(t, 'kvf', `>${p.redisPass}`));
    }
    admin.disconnect();
    const users = Object.entries(TENANTS).map(([t, p]) => natsTenantUserConf(t, t, p.natsPass));
    nats = await startNatsServer({
      configText: [
        'no_auth_user: admin',
        'authorization {',
        `  users: [ { user: admin, password: "admin-nats-pw" }, ${users.join(', ')} ]`,
        '}',
        '',
      ].join('\n'),
    });
    cluster = await startLocalCluster({
      shards: 2,
      nats,
      redis,
      arenaBytes: 16 * 1024 * 1024,
      partition: PARTITION,
      log: (l) => logs.push(l),
      env: {
        KVFABRIC_NATS_USER: 'admin',
        KVFABRIC_NATS_PASS: 'admin-nats-pw',
        KVFABRIC_REDIS_PASSWORD: 'admin-redis-pw',
      },
    });
    for (const t of Object.keys(TENANTS) as Tenant[]) {
      clients.set(t, await connect({ config: tenantConfig(t), model: tiny.id, namespace: NS }));
    }
    await clients.get('acme')!.registerModel(tiny);
    layout = await clients.get('acme')!.layout();
  }, 120_000);

  afterAll(async () => {
    for (const c of clients.values()) await c.close().catch(() => undefined);
    for (const nc of raw) await nc.close().catch(() => undefined);
    await cluster?.stop();
    await nats?.stop();
    await redis?.stop();
  });

  const client = (t: Tenant): KvfClient => clients.get(t)!;

  async function getHit(t: Tenant): Promise<number> {
    const target = await client(t).allocKv(prompt.length);
    scribble(target);
    const hit = await client(t).get(prompt, target);
    if (hit > 0) expectServed(target, kvFor(prompt, layout, NS), layout, hit / CT);
    return hit;
  }

  it('a tenant reads its own prefixes; another tenant with the same namespace and prompt sees none', async () => {
    const put = await client('acme').put(prompt, kvFor(prompt, layout, NS).kv);
    expect(put).toMatchObject({ chunksStored: 6, tokensIndexed: 6 * CT, indexDegraded: false });
    expect(await client('acme').lookup(prompt)).toBe(6 * CT);
    expect(await getHit('acme')).toBe(6 * CT);

    expect(await client('globex').lookup(prompt)).toBe(0);
    expect(await getHit('globex')).toBe(0);
    expect(client('globex').stats().lookups.degraded).toBe(0); // a clean miss, not an error
  });

  it("B's Redis user cannot look up or touch A's index entries (NOPERM), even through the script", async () => {
    const hashes = kvFor(prompt, layout, NS).hashes;
    const globex = new Redis(redis.url, { username: 'globex', password: TENANTS.globex.redisPass });
    try {
      await expect(globex.exists(`kvf:idx:acme:${hashes[0]}`)).rejects.toThrow(/NOPERM/);
      await expect(globex.get(`kvf:idx:acme:${hashes[0]}`)).rejects.toThrow(/NOPERM/);
      await expect(
        globex.eval("return redis.call('PEXPIRE', KEYS[1], 1000)", 1, `kvf:idx:acme:${hashes[0]}`),
      ).rejects.toThrow(/NOPERM/);
      await expect(globex.call('KEYS', 'kvf:*')).rejects.toThrow(/NOPERM/);
      await expect(globex.call('SCAN', '0')).rejects.toThrow(/NOPERM/);
      // Its own range works.
      await globex.set(`kvf:idx:globex:probe`, '1', 'PX', 1000);
    } finally {
      globex.disconnect();
    }
    // A PrefixIndex claiming tenant acme with globex's credentials: refused, never a hit.
    const liar = parseConfig({
      redis: { url: redis.url, username: 'globex', password: TENANTS.globex.redisPass },
    });
    const idx = new PrefixIndex({ url: redis.url, tenant: 'acme', redis: redisOptions(liar) });
    await idx.ready(5000);
    expect(await idx.longestPrefix(hashes)).toEqual({ chunks: 0, degraded: true });
    await idx.close();
    // The entries are there for acme.
    const acme = new PrefixIndex({
      url: redis.url,
      tenant: 'acme',
      redis: redisOptions(tenantConfig('acme')),
    });
    await acme.ready(5000);
    expect(await acme.longestPrefix(hashes)).toEqual({ chunks: 6, degraded: false });
    await acme.close();
  });

  it("B cannot detect A's blocks on the shard nodes: absent on its subject, refused on others", async () => {
    const hashes = kvFor(prompt, layout, NS).hashes;
    const table = await cluster.waitForPlacement(2);
    // Every block of the prompt, with the primary that holds it.
    const byNode = new Map<string, { hash: string; g: number; i: number; s: number }[]>();
    hashes.forEach((hash, i) => {
      for (let g = 0; g < layout.groups.length; g++) {
        const c = cellFor(table.spec, {
          chunkIndex: i,
          chunkTokens: CT,
          firstChunkHash: hashes[0]!,
          layerGroup: g,
        });
        const node = table.cells[cellId(c)]!.replicas[0]!;
        byNode.set(node, [...(byNode.get(node) ?? []), { hash, g, i, s: c.s }]);
      }
    });
    const as = async (t: Tenant): Promise<NatsConnection> => {
      const cfg = tenantConfig(t);
      const nc = await natsConnect(natsConnectOptions(cfg, `test-${t}`, { reconnect: false }));
      raw.push(nc);
      return nc;
    };
    const acme = await as('acme');
    const globex = await as('globex');
    const locate = (nc: NatsConnection, t: Tenant, node: string, blocks: unknown[]) =>
      request(
        nc,
        tenantShardSubject(t, node, 'locate'),
        { model: tiny.id, epoch: table.epoch, blocks },
        locateReplySchema,
        { timeoutMs: 3000 },
      );
    let checked = 0;
    for (const [node, blocks] of byNode) {
      const mine = await locate(acme, 'acme', node, blocks);
      expect(mine.blocks.every((b) => b.found)).toBe(true); // the blocks are there...
      const theirs = await locate(globex, 'globex', node, blocks);
      expect(theirs.blocks.map((b) => b.found)).toEqual(blocks.map(() => false)); // ...not for B
      expect(theirs.leaseId).toBeUndefined();
      checked += blocks.length;
      // A's subject and the default tenant's are closed to B's credentials.
      await expect(locate(globex, 'acme', node, blocks)).rejects.toThrow(/permission|timeout|no responders/i);
      const dflt = `kvf.v1.shard.${node}.locate`;
      await expect(
        request(globex, dflt, { model: tiny.id, epoch: table.epoch, blocks }, locateReplySchema, {
          timeoutMs: 2000,
        }),
      ).rejects.toThrow(/permission|timeout|no responders/i);
    }
    expect(checked).toBe(6 * layout.groups.length);
  });

  it("B cannot listen to other workers' replies (addresses, rkeys): only its own inbox prefix", async () => {
    const globex = await natsConnect(
      natsConnectOptions(tenantConfig('globex'), 'test-globex-inbox', { reconnect: false }),
    );
    raw.push(globex);
    const refused = async (subject: string): Promise<string> => {
      const sub = globex.subscribe(subject);
      try {
        for await (const _m of sub) return 'message';
        return 'closed';
      } catch (err) {
        return String(err);
      }
    };
    const [shared, acme] = await Promise.all([refused('_INBOX.>'), refused('_INBOX_acme.>'), globex.flush()]);
    expect(shared).toMatch(/Permissions Violation for Subscription to "_INBOX\.>"/);
    expect(acme).toMatch(/Permissions Violation for Subscription to "_INBOX_acme\.>"/);
    // Its own replies still arrive (the SDK works, above); and a request/reply round trip here:
    const n = await globex.request('kvf.v1.coord.status', '{}', { timeout: 3000 });
    expect(n.data.length).toBeGreaterThan(0);
  });
});

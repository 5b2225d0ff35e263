/**
 * nats.jetstreamReplicas reaches every ensureBuckets call of an actor or client with a config:
 * whoever creates the buckets first (here a shard node, then the SDK) creates them with the
 * configured replicas, not 1. A three-server NATS cluster (replicas 3 needs three servers).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { envNameFor, parseConfig } from '../../shared/config.js';
import { clusterEnv } from '../../shared/local-cluster.js';
import {
  startNatsCluster,
  startRedisServer,
  type NatsClusterHandle,
  type ServerHandle,
} from '../../shared/local-servers.js';
import {
  EVENTS_STREAM,
  LEADER_BUCKET,
  MEMBERS_BUCKET,
  MODELS_BUCKET,
  PLACEMENT_BUCKET,
} from '../../shared/protocol/cluster.js';
import { KvfClient } from '../../shared/sdk/client.js';
import { buildDist, waitFor } from '../harness/cluster.js';

const STREAMS = [
  ...[MEMBERS_BUCKET, PLACEMENT_BUCKET, LEADER_BUCKET, MODELS_BUCKET].map((b) => `KV_${b}`),
  EVENTS_STREAM,
];

async function replicasOf(jsm: JetStreamManager): Promise<(number | undefined)[]> {
  return Promise.all(
    STREAMS.map((s) =>
      jsm.streams.info(s).then(
        (i) => i.config.num_replicas,
        () => undefined,
      ),
    ),
  );
}

/** The KV buckets' allow_direct: off, so no get is answered by a lagging replica. */
async function directOf(jsm: JetStreamManager): Promise<(boolean | undefined)[]> {
  return Promise.all(STREAMS.slice(0, 4).map((s) => jsm.streams.info(s).then((i) => i.config.allow_direct)));
}

async function deleteAll(jsm: JetStreamManager): Promise<void> {
  for (const s of STREAMS) await jsm.streams.delete(s).catch(() => false);
}

describe('nats.jetstreamReplicas when an actor creates the buckets first', () => {
  let nats: NatsClusterHandle;
  let redis: ServerHandle;
  let nc: NatsConnection;
  let jsm: JetStreamManager;

  beforeAll(async () => {
    buildDist();
    nats = await startNatsCluster(3);
    redis = await startRedisServer();
    nc = await connect({ servers: nats.urls });
    jsm = await jetstreamManager(nc);
  }, 90_000);
  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
    await redis?.stop();
  });

  it('a shard node started first creates buckets and the event stream with replicas 3', async () => {
    expect(await replicasOf(jsm)).toEqual(STREAMS.map(() => undefined)); // nothing yet
    const env = {
      ...clusterEnv(nats.url, redis.url, { shards: 1, arenaBytes: 8 * 1024 ** 2 }),
      [envNameFor('nats.jetstreamReplicas')]: '3',
      [envNameFor('shard.id')]: 'rep-n1',
      UCX_MEM_MMAP_HOOK_MODE: 'none',
    };
    const child: ChildProcess = spawn(
      process.execPath,
      [path.resolve(import.meta.dirname, '../../bin/kvfabric.js'), 'shard-node'],
      { env: { ...process.env, ...env }, stdio: 'ignore' },
    );
    try {
      await waitFor(
        'buckets created by the shard node',
        async () => (await replicasOf(jsm)).every((r) => r !== undefined),
        30_000,
      );
      expect(await replicasOf(jsm)).toEqual(STREAMS.map(() => 3));
      expect(await directOf(jsm)).toEqual([false, false, false, false]);
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
    }
  }, 60_000);

  it('the SDK connecting first with a config creates them with replicas 3', async () => {
    await deleteAll(jsm);
    expect(await replicasOf(jsm)).toEqual(STREAMS.map(() => undefined));
    const config = parseConfig(
      {},
      {},
      { nats: { servers: nats.urls, jetstreamReplicas: 3 }, redis: { url: redis.url } },
    );
    // No coordinator runs, so connect gives up waiting for a placement table (NO_PLACEMENT), but
    // only after it created the buckets.
    await expect(KvfClient.connect({ config, placementWaitMs: 200 })).rejects.toMatchObject({
      codeName: 'NO_PLACEMENT',
    });
    expect(await replicasOf(jsm)).toEqual(STREAMS.map(() => 3));
  }, 60_000);
});

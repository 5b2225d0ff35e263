/**
 * Checks of the services a node depends on: NATS (reachable, version), JetStream (enabled, the
 * kvfabric buckets), the clock against the NATS server's, and Redis (reachable, auth, ACL).
 */
import { natsConnectOptions } from '../../../shared/nats-connect.js';
import { randomBytes } from 'node:crypto';
import os from 'node:os';

import { AckPolicy, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';

import type { KvfConfig } from '../../../shared/config.js';
import { redactConfig } from '../../../shared/config.js';
import {
  EVENTS_STREAM,
  LEADER_BUCKET,
  MEMBERS_BUCKET,
  MODELS_BUCKET,
  PLACEMENT_BUCKET,
} from '../../../shared/protocol/cluster.js';
import { errorMessage, versionLess, type CheckResult, type DoctorOptions } from './types.js';

const KV_STREAMS = [MEMBERS_BUCKET, PLACEMENT_BUCKET, LEADER_BUCKET, MODELS_BUCKET].map((b) => `KV_${b}`);

/** The actors' own connect options (user/password, token, nkey, TLS), without reconnects. */
function natsOptions(cfg: KvfConfig, o: DoctorOptions): ConnectionOptions {
  return natsConnectOptions(cfg, `kvfabric-doctor-${os.hostname()}`, {
    timeout: o.natsConnectTimeoutMs,
    reconnect: false,
    maxReconnectAttempts: 0,
  });
}

function natsFix(cfg: KvfConfig, err: unknown): string {
  const msg = errorMessage(err).toLowerCase();
  if (/authoriz|authentic|auth/.test(msg)) {
    return [
      `NATS refused the credentials: check nats.user (${cfg.nats.user ?? 'unset'}) and KVFABRIC_NATS_PASS`,
      '(or nats.token) against the server users (cluster-config/baremetal/nats/auth.conf).',
    ].join('\n');
  }
  return [
    `start nats-server (systemctl status kvfabric-nats; docker compose ps nats-1) and check that`,
    `${redactConfig(cfg).nats.servers.join(', ')} is reachable from this host (firewall: client port 4222);`,
    'nats.servers / KVFABRIC_NATS_SERVERS must name at least one running server.',
  ].join('\n');
}

/** Connects and reports the server; the connection is returned for the next checks. */
export async function checkNats(
  cfg: KvfConfig,
  o: DoctorOptions,
): Promise<{ result: CheckResult; nc?: NatsConnection }> {
  const servers = redactConfig(cfg).nats.servers;
  let nc: NatsConnection;
  try {
    nc = await connect(natsOptions(cfg, o));
  } catch (err) {
    return {
      result: {
        id: 'nats',
        status: 'fail',
        summary: `cannot connect to NATS at ${servers.join(', ')}: ${errorMessage(err)}`,
        fix: natsFix(cfg, err),
      },
    };
  }
  const info = nc.info;
  const rttMs = await nc.rtt().catch(() => NaN);
  const version = info?.version ?? 'unknown';
  const details = {
    server: nc.getServer(),
    serverName: info?.server_name,
    version,
    cluster: info?.cluster,
    rttMs,
    tls: info?.tls_required === true,
  };
  const where = `${nc.getServer()} (server ${info?.server_name ?? '?'}, nats-server ${version}, rtt ${rttMs.toFixed(1)} ms)`;
  if (versionLess(version, o.natsVersionMin)) {
    return {
      nc,
      result: {
        id: 'nats',
        status: 'warn',
        summary: `connected to ${where}; older than ${o.natsVersionMin}`,
        fix: [
          `production clusters need nats-server >= ${o.natsVersionMin} with jetstream { sync_interval: always }:`,
          'older servers and the default lazy fsync lost acknowledged JetStream writes (docs/operations.md).',
        ].join('\n'),
        details,
      },
    };
  }
  return { nc, result: { id: 'nats', status: 'ok', summary: `connected to ${where}`, details } };
}

async function streamReplicas(jsm: JetStreamManager): Promise<Record<string, number | null>> {
  const out: Record<string, number | null> = {};
  for (const name of [...KV_STREAMS, EVENTS_STREAM]) {
    try {
      out[name] = (await jsm.streams.info(name)).config.num_replicas;
    } catch {
      out[name] = null;
    }
  }
  return out;
}

export async function checkJetStream(
  nc: NatsConnection,
): Promise<{ result: CheckResult; jsm?: JetStreamManager }> {
  let jsm: JetStreamManager;
  try {
    jsm = await jetstreamManager(nc, { timeout: 5000 });
    await jsm.getAccountInfo();
  } catch (err) {
    return {
      result: {
        id: 'jetstream',
        status: 'fail',
        summary: `JetStream is not available to this user: ${errorMessage(err)}`,
        fix: [
          'enable JetStream on every NATS server (jetstream { store_dir: ... } in the config, or -js) and in the',
          "user's account (accounts { KVF { jetstream: enabled } }); kvfabric keeps placement, membership and",
          'the leader lease in JetStream KV buckets.',
        ].join('\n'),
      },
    };
  }
  const replicas = await streamReplicas(jsm);
  const present = Object.entries(replicas).filter(([, r]) => r !== null);
  const clustered = Boolean(nc.info?.cluster);
  const summary =
    present.length === 0
      ? 'enabled; kvfabric buckets not created yet (the first coordinator or shard node creates them)'
      : `enabled; ${present.length} kvfabric streams (${present.map(([n, r]) => `${n} R${r}`).join(', ')})`;
  const single = present.filter(([, r]) => r === 1);
  if (clustered && single.length > 0) {
    return {
      jsm,
      result: {
        id: 'jetstream',
        status: 'warn',
        summary,
        fix: 'the NATS cluster runs kvfabric buckets with 1 replica: losing that server loses placement; recreate them with replicas 3.',
        details: { replicas },
      },
    };
  }
  return { jsm, result: { id: 'jetstream', status: 'ok', summary, details: { replicas } } };
}

/**
 * The server's clock, read from the `created` time of an ephemeral consumer on an existing
 * kvfabric stream (what a worker is allowed to create), bracketed by local send and receive times.
 */
export async function checkClock(jsm: JetStreamManager | undefined, o: DoctorOptions): Promise<CheckResult> {
  if (!jsm) return { id: 'clock', status: 'skip', summary: 'needs JetStream' };
  const replicas = await streamReplicas(jsm);
  const stream = KV_STREAMS.find((s) => replicas[s] !== null);
  if (!stream) {
    return {
      id: 'clock',
      status: 'skip',
      summary:
        'no kvfabric stream to read the server clock from yet (run doctor again once a coordinator is up)',
    };
  }
  try {
    const t0 = Date.now();
    const ci = await jsm.consumers.add(stream, {
      ack_policy: AckPolicy.None,
      inactive_threshold: 5_000_000_000, // ns: the server removes it even if the delete is lost
      mem_storage: true,
    });
    const t1 = Date.now();
    await jsm.consumers.delete(stream, ci.name).catch(() => undefined);
    const server = Date.parse(ci.created);
    const uncertaintyMs = (t1 - t0) / 2;
    const skewMs = Math.round(server - (t0 + t1) / 2);
    const details = { skewMs, uncertaintyMs, serverTime: ci.created };
    const summary = `local clock ${skewMs >= 0 ? 'behind' : 'ahead of'} the NATS server by ${Math.abs(skewMs)} ms (±${uncertaintyMs.toFixed(1)} ms)`;
    if (Math.abs(skewMs) - uncertaintyMs > o.clockSkewWarnMs) {
      return {
        id: 'clock',
        status: 'warn',
        summary,
        fix: [
          `clocks differ by more than ${o.clockSkewWarnMs} ms: run chrony or systemd-timesyncd on every host`,
          '(chronyc tracking); leases, TTLs and heartbeat ages are compared across hosts.',
        ].join('\n'),
        details,
      };
    }
    return { id: 'clock', status: 'ok', summary, details };
  } catch (err) {
    return {
      id: 'clock',
      status: 'warn',
      summary: `could not read the server clock: ${errorMessage(err)}`,
      fix: `the NATS user needs $JS.API.CONSUMER.CREATE.${stream} (the worker role has it).`,
    };
  }
}

function redisFix(cfg: KvfConfig, err: unknown): string {
  const msg = errorMessage(err);
  if (/WRONGPASS|NOAUTH|invalid password|invalid username/i.test(msg)) {
    return [
      'Redis refused the credentials: an ACL user and its password go in the URL,',
      'KVFABRIC_REDIS_URL=redis://kvfabric:<password>@host:6379 (redis.password alone authenticates the',
      'default user); they must match redis.conf (cluster-config/baremetal/redis/redis.conf).',
    ].join('\n');
  }
  if (/NOPERM/i.test(msg)) {
    return [
      `the Redis ACL user may not use keys ${cfg.redis.keyPrefix}:* or the index commands: use the kvfabric`,
      'user line of cluster-config/baremetal/redis/redis.conf (~kvf:* with GET SET DEL EXISTS PEXPIRE EVAL EVALSHA).',
    ].join('\n');
  }
  return [
    `start Redis and check ${redactConfig(cfg).redis.url} is reachable (systemctl status redis-server; port 6379).`,
    'Without it lookups degrade to misses (the index is a hint), so the node still serves.',
  ].join('\n');
}

/** PING, then a write, a scripted read and a delete of one probe key under the index prefix. */
export async function checkRedis(cfg: KvfConfig, o: DoctorOptions): Promise<CheckResult> {
  const url = redactConfig(cfg).redis.url;
  const redis = new Redis(cfg.redis.url, {
    lazyConnect: true,
    connectTimeout: o.redisTimeoutMs,
    commandTimeout: o.redisTimeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    ...(cfg.redis.password !== undefined ? { password: cfg.redis.password } : {}),
  });
  // ioredis reports the cause (ECONNREFUSED, WRONGPASS) here and only "Connection is closed" to
  // the awaited command: keep the cause for the report.
  let lastError: unknown;
  redis.on('error', (err: unknown) => {
    lastError = err;
  });
  const key = `${cfg.redis.keyPrefix}:doctor:${os.hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await redis.connect();
    const t0 = performance.now();
    await redis.ping();
    const rttMs = performance.now() - t0;
    await redis.set(key, '1', 'PX', 10_000);
    const n = (await redis.eval('return redis.call("EXISTS", KEYS[1])', 1, key)) as number;
    await redis.del(key);
    if (n !== 1) throw new Error(`probe key ${key} written but not found`);
    const version = /redis_version:(\S+)/.exec(await redis.info('server').catch(() => ''))?.[1];
    return {
      id: 'redis',
      status: 'ok',
      summary: `${url}: PING ${rttMs.toFixed(1)} ms, read/write/script on ${cfg.redis.keyPrefix}:* allowed${version ? ` (redis ${version})` : ''}`,
      details: { rttMs, version },
    };
  } catch (caught) {
    const err = /Connection is closed/.test(errorMessage(caught)) && lastError ? lastError : caught;
    return {
      id: 'redis',
      status: 'warn',
      summary: `Redis at ${url} is not usable: ${errorMessage(err)} (lookups will degrade to misses)`,
      fix: redisFix(cfg, err),
    };
  } finally {
    redis.disconnect();
  }
}

/**
 * Redis connection options from the deployment config, for every PrefixIndex (actors and SDK):
 * password, ACL user, TLS. A rediss:// URL turns TLS on by itself (ioredis); redis.tls or a CA or
 * client certificate file turns it on for a redis:// URL too. Credentials inside redis.url still
 * work (ioredis reads them from the URL); these keys are for deployments that keep the URL plain.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import type { RedisOptions } from 'ioredis';
import type { KvfConfig } from './config.js';
import { KvfError } from './errors.js';

function readPem(key: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new KvfError('CONFIG_INVALID', `${key}: cannot read ${file} (${(err as Error).message})`, {
      cause: err,
    });
  }
}

export function redisWantsTls(r: KvfConfig['redis']): boolean {
  return r.tls || r.url.startsWith('rediss://') || r.tlsCaFile !== undefined || r.tlsCertFile !== undefined;
}

/** ioredis options (auth and TLS only; timeouts and retries stay with the caller). */
export function redisOptions(config: KvfConfig): RedisOptions {
  const r = config.redis;
  const o: RedisOptions = {};
  if (r.username !== undefined) o.username = r.username;
  if (r.password !== undefined) o.password = r.password;
  if (redisWantsTls(r)) {
    const tls: TlsOptions = {};
    if (r.tlsCaFile !== undefined) tls.ca = readPem('redis.tlsCaFile', r.tlsCaFile);
    if (r.tlsCertFile !== undefined) tls.cert = readPem('redis.tlsCertFile', r.tlsCertFile);
    if (r.tlsKeyFile !== undefined) tls.key = readPem('redis.tlsKeyFile', r.tlsKeyFile);
    o.tls = tls;
  }
  return o;
}

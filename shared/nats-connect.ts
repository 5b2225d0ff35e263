/**
 * NATS connection options from the deployment config, the one place every actor and the SDK get
 * them: servers, client name, authentication (user/password, token or an nkey seed file), TLS
 * (server verification with a CA file, mutual TLS with a client certificate) and reconnection.
 *
 * Reconnection: forever, with short jittered waits. Every actor outlives NATS server restarts;
 * with every cluster URL in `servers`, a dead server costs one failed try, not a stampede.
 */
import { readFileSync } from 'node:fs';
import { nkeyAuthenticator, type ConnectionOptions } from '@nats-io/transport-node';
import type { KvfConfig } from './config.js';
import { KvfError } from './errors.js';
import { tenantInboxPrefix } from './tenancy.js';

/** Reconnect policy shared by every kvfabric NATS client. */
export const NATS_RECONNECT = {
  maxReconnectAttempts: -1,
  reconnectTimeWaitMs: 250,
  reconnectJitterMs: 250,
} as const;

/**
 * Read an nkey user seed (`SU...`) from a file: the first line that looks like one, so a file
 * written by `nsc`/`nk` with comments or a trailing newline works. The seed stays in memory only.
 */
export function readNkeySeed(file: string): Uint8Array {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new KvfError(
      'CONFIG_INVALID',
      `nats.nkeySeedFile: cannot read ${file} (${(err as Error).message})`,
      {
        cause: err,
      },
    );
  }
  const seed = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .find((l) => /^SU[A-Z2-7]{50,}$/.test(l));
  if (seed === undefined) {
    throw new KvfError('CONFIG_INVALID', `nats.nkeySeedFile: ${file} holds no nkey user seed (a line SU...)`);
  }
  return new TextEncoder().encode(seed);
}

/** Whether the config asks for TLS: the flag, any TLS file, or a tls:// server URL. */
export function natsWantsTls(n: KvfConfig['nats']): boolean {
  return (
    n.tls ||
    n.tlsCaFile !== undefined ||
    n.tlsCertFile !== undefined ||
    n.servers.some((s) => s.startsWith('tls://') || s.startsWith('wss://'))
  );
}

/**
 * Connection options for `connect()` of @nats-io/transport-node. `name` shows in the server's
 * connz (kvfabric-<role>-<id>). `extra` wins over everything (tests, a caller's own timeouts).
 */
export function natsConnectOptions(
  config: KvfConfig,
  name: string,
  extra: Partial<ConnectionOptions> = {},
): ConnectionOptions {
  const n = config.nats;
  const o: ConnectionOptions = {
    servers: n.servers,
    name,
    maxReconnectAttempts: NATS_RECONNECT.maxReconnectAttempts,
    reconnectTimeWait: NATS_RECONNECT.reconnectTimeWaitMs,
    reconnectJitter: NATS_RECONNECT.reconnectJitterMs,
    reconnectJitterTLS: NATS_RECONNECT.reconnectJitterMs,
  };
  if (n.user !== undefined) o.user = n.user;
  if (n.pass !== undefined) o.pass = n.pass;
  if (n.token !== undefined) o.token = n.token;
  if (n.nkeySeedFile !== undefined) o.authenticator = nkeyAuthenticator(readNkeySeed(n.nkeySeedFile));
  // A tenant's replies (locate addresses, rkeys) arrive on its own inbox prefix, which only its
  // NATS user may subscribe to (shared/tenancy.ts natsTenantPermissions).
  if (config.tenant.id !== undefined) o.inboxPrefix = tenantInboxPrefix(config.tenant.id);
  if (natsWantsTls(n)) {
    o.tls = {
      ...(n.tlsCaFile !== undefined ? { caFile: n.tlsCaFile } : {}),
      ...(n.tlsCertFile !== undefined ? { certFile: n.tlsCertFile } : {}),
      ...(n.tlsKeyFile !== undefined ? { keyFile: n.tlsKeyFile } : {}),
    };
  }
  return { ...o, ...extra };
}

/**
 * The authentication and TLS part only, for a caller that builds the rest itself (the SDK's
 * explicit natsUser/natsPass/natsToken options still win over these).
 */
export function natsSecurityOptions(config: KvfConfig): Partial<ConnectionOptions> {
  const all = natsConnectOptions(config, 'kvfabric');
  const out: Partial<ConnectionOptions> = {};
  for (const k of ['user', 'pass', 'token', 'authenticator', 'tls', 'inboxPrefix'] as const) {
    if (all[k] !== undefined) (out as Record<string, unknown>)[k] = all[k];
  }
  return out;
}

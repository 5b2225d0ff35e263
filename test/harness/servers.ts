/**
 * Test fixtures over shared/local-servers: each suite gets its own nats-server and redis-server
 * on free loopback ports, stopped in afterAll even when a test fails.
 */
import { afterAll, beforeAll } from 'vitest';
import {
  startNatsServer,
  startRedisServer,
  type NatsServerOptions,
  type ServerHandle,
} from '../../shared/local-servers.js';

export interface ServerFixture {
  readonly nats: ServerHandle;
  readonly redis: ServerHandle;
}

/** Registers beforeAll/afterAll hooks; the returned object's fields are valid inside tests. */
export function useServers(opts: { nats?: NatsServerOptions; redis?: boolean } = {}): ServerFixture {
  const fx: { nats?: ServerHandle; redis?: ServerHandle } = {};
  beforeAll(async () => {
    const [n, r] = await Promise.all([
      startNatsServer(opts.nats),
      opts.redis === false ? Promise.resolve(undefined) : startRedisServer(),
    ]);
    fx.nats = n;
    fx.redis = r;
  });
  afterAll(async () => {
    await Promise.all([fx.nats?.stop(), fx.redis?.stop()]);
  });
  return {
    get nats() {
      if (!fx.nats) throw new Error('nats-server fixture used outside a test');
      return fx.nats;
    },
    get redis() {
      if (!fx.redis) throw new Error('redis-server fixture not started (redis: false?)');
      return fx.redis;
    },
  };
}

/** A unique suffix for subjects, buckets and keys so tests never see each other's state. */
export function uniq(prefix = 't'): string {
  return `${prefix}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.js';
import { natsConnectOptions, readNkeySeed } from '../../shared/nats-connect.js';
import { redisOptions } from '../../shared/redis-options.js';
import {
  natsTenantPermissions,
  redisTenantAclRule,
  scopedHash,
  scopeForSubject,
  scopeRequest,
  tenantOfSubject,
  tenantShardSubject,
  tenantSubjectsOf,
} from '../../shared/tenancy.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kvf-sec-unit-'));
const H1 = 'a'.repeat(64);
const H2 = 'b'.repeat(64);

describe('natsConnectOptions', () => {
  it('maps user/password, token and reconnect settings', () => {
    const up = natsConnectOptions(parseConfig({ nats: { user: 'w', pass: 'p' } }), 'n');
    expect(up).toMatchObject({ user: 'w', pass: 'p', name: 'n', maxReconnectAttempts: -1 });
    expect(up.tls).toBeUndefined();
    const tok = natsConnectOptions(parseConfig({ nats: { token: 's3' } }), 'n');
    expect(tok.token).toBe('s3');
    expect(tok.user).toBeUndefined();
  });

  it('turns TLS on from the flag, a CA file or a tls:// URL', () => {
    expect(natsConnectOptions(parseConfig({ nats: { tls: true } }), 'n').tls).toEqual({});
    expect(natsConnectOptions(parseConfig({ nats: { tlsCaFile: '/ca.pem' } }), 'n').tls).toEqual({
      caFile: '/ca.pem',
    });
    expect(natsConnectOptions(parseConfig({ nats: { servers: ['tls://h:4222'] } }), 'n').tls).toEqual({});
  });

  it('reads an nkey seed file and refuses one without a seed', () => {
    const seed = 'SUAM' + 'A'.repeat(54);
    const good = path.join(dir, 'user.nk');
    writeFileSync(good, `# comment\n${seed}\n`);
    expect(new TextDecoder().decode(readNkeySeed(good))).toBe(seed);
    expect(natsConnectOptions(parseConfig({ nats: { nkeySeedFile: good } }), 'n').authenticator).toBeTypeOf(
      'function',
    );
    const bad = path.join(dir, 'bad.nk');
    writeFileSync(bad, 'not a seed\n');
    expect(() => readNkeySeed(bad)).toThrow(/holds no nkey user seed/);
    expect(() => readNkeySeed(path.join(dir, 'missing'))).toThrow(/cannot read/);
  });

  it('config rejects two NATS auth methods and half a client certificate', () => {
    expect(() => parseConfig({ nats: { nkeySeedFile: '/s', token: 't' } })).toThrow(/nats.nkeySeedFile/);
    expect(() => parseConfig({ nats: { tlsCertFile: '/c' } })).toThrow(/nats.tlsCertFile/);
    expect(() => parseConfig({ redis: { tlsKeyFile: '/k' } })).toThrow(/redis.tlsCertFile/);
  });
});

describe('redisOptions', () => {
  it('maps ACL user, password and TLS', () => {
    expect(redisOptions(parseConfig({}))).toEqual({});
    expect(redisOptions(parseConfig({ redis: { username: 'tenant-a', password: 'pw' } }))).toEqual({
      username: 'tenant-a',
      password: 'pw',
    });
    expect(redisOptions(parseConfig({ redis: { url: 'rediss://h:6380' } })).tls).toEqual({});
    const ca = path.join(dir, 'ca.pem');
    writeFileSync(ca, 'PEM');
    expect(redisOptions(parseConfig({ redis: { tlsCaFile: ca } })).tls).toEqual({ ca: Buffer.from('PEM') });
  });
});

describe('tenancy', () => {
  it('names tenant subjects and reads the tenant back', () => {
    expect(tenantShardSubject(undefined, 'n1', 'locate')).toBe('kvf.v1.shard.n1.locate');
    expect(tenantShardSubject('acme', 'n1', 'locate')).toBe('kvf.v1.t.acme.shard.n1.locate');
    expect(tenantOfSubject('kvf.v1.t.acme.shard.n1.locate')).toBe('acme');
    expect(tenantOfSubject('kvf.v1.shard.n1.locate')).toBeUndefined();
    expect(() => tenantShardSubject('a.b', 'n1', 'locate')).toThrow(RangeError);
    expect(() => tenantOfSubject('kvf.v1.t.a:b.shard.n1.locate')).toThrow(RangeError);
    // Tenants never get stats (it lists every tenant's chunks) or node-to-node operations.
    expect(tenantSubjectsOf('n1', 'stats')).toEqual([]);
    expect(tenantSubjectsOf('n1', 'replicate')).toEqual([]);
    expect(tenantSubjectsOf('n1', 'locate')).toEqual(['kvf.v1.t.*.shard.n1.locate']);
  });

  it('scopes chunk hashes per tenant, consistently across operations', () => {
    const alloc = { model: 'm', epoch: 1, blocks: [{ hash: H2, g: 0, i: 1, parent: H1, s: 0 }] };
    const a = scopeRequest('a', 'allocate', alloc);
    const b = scopeRequest('b', 'allocate', alloc);
    expect(a.blocks[0]?.hash).toBe(scopedHash('a', H2));
    expect(a.blocks[0]?.parent).toBe(scopedHash('a', H1));
    expect(a.blocks[0]?.hash).not.toBe(b.blocks[0]?.hash);
    expect(a.blocks[0]?.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(alloc.blocks[0]?.hash).toBe(H2); // the input is not mutated
    const locate = scopeForSubject('locate', 'kvf.v1.t.a.shard.n1.locate', {
      model: 'm',
      epoch: 1,
      blocks: [{ hash: H2, g: 0, i: 1, s: 0 }],
    });
    expect(locate.blocks[0]?.hash).toBe(a.blocks[0]?.hash);
    const first = scopeRequest('a', 'allocate', { blocks: [{ hash: H1, parent: '' }] });
    expect(first.blocks[0]?.parent).toBe('');
    expect(scopeForSubject('locate', 'kvf.v1.shard.n1.locate', alloc)).toBe(alloc);
    expect(() => scopeForSubject('stats', 'kvf.v1.t.a.shard.n1.stats', {})).toThrow(/not a tenant operation/);
  });

  it('generates ACLs confined to the tenant', () => {
    const acl = redisTenantAclRule('acme', 'kvf', '>pw');
    expect(acl).toContain('~kvf:idx:acme:*');
    expect(acl.filter((r) => r.startsWith('~'))).toEqual(['~kvf:idx:acme:*']);
    expect(acl).toContain('-@all');
    const p = natsTenantPermissions('acme');
    expect(p.publish.allow.filter((s) => s.startsWith('kvf.v1.') && s.includes('shard'))).toEqual(
      ['allocate', 'commit', 'abort', 'locate', 'release', 'report_corrupt'].map(
        (op) => `kvf.v1.t.acme.shard.*.${op}`,
      ),
    );
    expect(p.publish.deny).toContain('kvf.v1.shard.>');
  });
});

describe('actor arguments: --log-level', () => {
  it('sets the level, overriding the config, and refuses an unknown level', async () => {
    const { parseActorArgs } = await import('../../shared/process.js');
    expect(parseActorArgs(['--log-level', 'debug'], {})).toEqual({ help: false, logLevel: 'debug' });
    expect(parseActorArgs(['--log-level=warn', '--config', 'x.yaml'], {})).toEqual({
      help: false,
      logLevel: 'warn',
      configFile: 'x.yaml',
    });
    expect(() => parseActorArgs(['--log-level', 'loud'], {})).toThrow(/--log-level needs one of debug/);
    expect(() => parseActorArgs(['--log-level'], {})).toThrow(/--log-level/);
  });
});

/**
 * Tenants bound to credentials, enforced by the servers rather than claimed by the client
 * (docs/security.md, "Implementation"):
 *
 * - Redis: a tenant's index entries are `<prefix>:idx:<tenant>:<hash>` (PrefixIndex `tenant`), and
 *   its Redis ACL user may touch only `~<prefix>:idx:<tenant>:*`. Redis 7 checks the keys a script
 *   is given (EVALSHA KEYS) and every command the script runs against that pattern, so a worker
 *   with tenant B's credentials gets NOPERM for any key of tenant A: it cannot even ask.
 * - NATS: a tenant's shard requests go to `kvf.v1.t.<tenant>.shard.<node>.<op>`; its NATS user may
 *   publish only there (plus read-only metadata), so the subject a request arrives on names the
 *   tenant authenticated by the server. A shard node scopes every chunk hash of such a request to
 *   that tenant (scopeRequest: sha256 over the tenant and the hash) before it touches its block
 *   table, so a block of another tenant is simply absent: no existence oracle, no shared copy.
 *
 * The default tenant (tenant.id unset) keeps the unqualified keys and subjects: a single-tenant
 * deployment changes nothing.
 */
import { createHash } from 'node:crypto';
import { KvfError } from './errors.js';
import { NODE_ID_PATTERN, shardSubject, type ShardOp } from './protocol/cluster.js';

/** Tenant ids: subject tokens and Redis key parts (no dots, no colons, no wildcards). */
export const TENANT_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export function assertTenantId(tenant: string): void {
  if (!TENANT_ID_PATTERN.test(tenant)) {
    throw new RangeError(`tenant id must match ${TENANT_ID_PATTERN.source}, got ${JSON.stringify(tenant)}`);
  }
}

/**
 * The operations a tenant's worker may send, on its own subjects. Not `stats` (its chunk listing
 * names every block of every tenant on the node) and none of the node-to-node or test operations.
 */
export const TENANT_SHARD_OPS = [
  'allocate',
  'commit',
  'abort',
  'locate',
  'release',
  'report_corrupt',
] as const;
export type TenantShardOp = (typeof TENANT_SHARD_OPS)[number];

export function isTenantShardOp(op: string): op is TenantShardOp {
  return (TENANT_SHARD_OPS as readonly string[]).includes(op);
}

/** `kvf.v1.shard.<node>.<op>` for the default tenant, `kvf.v1.t.<tenant>.shard.<node>.<op>` otherwise. */
export function tenantShardSubject(tenant: string | undefined, nodeId: string, op: ShardOp): string {
  if (tenant === undefined) return shardSubject(nodeId, op);
  assertTenantId(tenant);
  shardSubject(nodeId, op); // validates the node id
  return `kvf.v1.t.${tenant}.shard.${nodeId}.${op}`;
}

/** What a shard node subscribes to for one op: every tenant's subject for it. */
export function tenantWildcardSubject(nodeId: string, op: ShardOp): string {
  return `kvf.v1.t.*.shard.${nodeId}.${op}`;
}

/** The tenant a request was sent for, from the subject it arrived on; undefined = default tenant. */
export function tenantOfSubject(subject: string): string | undefined {
  const parts = subject.split('.');
  if (parts[0] !== 'kvf' || parts[1] !== 'v1' || parts[2] !== 't') return undefined;
  const tenant = parts[3] ?? '';
  if (!TENANT_ID_PATTERN.test(tenant) || parts[4] !== 'shard' || !NODE_ID_PATTERN.test(parts[5] ?? '')) {
    throw new RangeError(`not a tenant shard subject: ${subject}`);
  }
  return tenant;
}

/** A chunk hash as a shard node stores it for a tenant: sha256("kvf-tenant\0" tenant "\0" hash), hex. */
export function scopedHash(tenant: string, hash: string): string {
  return createHash('sha256').update(`kvf-tenant\0${tenant}\0`).update(hash).digest('hex');
}

type Obj = Record<string, unknown>;

function scopeBlock(tenant: string, b: unknown): unknown {
  if (typeof b !== 'object' || b === null) return b;
  const o = { ...(b as Obj) };
  if (typeof o.hash === 'string') o.hash = scopedHash(tenant, o.hash);
  // The parent chain orders eviction (prefix-closed); an empty parent marks a prompt's first chunk.
  if (typeof o.parent === 'string' && o.parent !== '') o.parent = scopedHash(tenant, o.parent);
  return o;
}

/**
 * A validated request of `op` as the node must see it for `tenant`: every chunk hash (and parent
 * hash) replaced by its tenant-scoped form. Replies carry no hashes, so they need no mapping.
 * The default tenant's requests pass unchanged.
 */
export function scopeRequest<T>(tenant: string | undefined, _op: TenantShardOp, req: T): T {
  if (tenant === undefined) return req;
  const r = { ...(req as Obj) };
  // Every tenant op names its chunks in `blocks` (allocate, commit, locate, report_corrupt).
  if (Array.isArray(r.blocks)) r.blocks = r.blocks.map((b) => scopeBlock(tenant, b));
  return r as T;
}

/**
 * The Redis ACL rule of a tenant's worker user (redis.conf `user ...` line or ACL SETUSER
 * arguments): only its own index keys, only the commands the index uses.
 * `secret` is `>password` or `#<sha256 hex>`.
 */
export function redisTenantAclRule(tenant: string, keyPrefix: string, secret: string): string[] {
  assertTenantId(tenant);
  return [
    'on',
    secret,
    'resetkeys',
    'resetchannels',
    `~${keyPrefix}:idx:${tenant}:*`,
    '-@all',
    '+@connection',
    '+info',
    '+get',
    '+set',
    '+del',
    '+unlink',
    '+exists',
    '+pexpire',
    '+pttl',
    '+mget',
    '+evalsha',
    '+eval',
    '+script|load',
    '+script|exists',
  ];
}

/**
 * NATS permissions of a tenant's worker user (nats-server config): data requests only on its own
 * tenant subjects, read-only coordinator requests, the read-only JetStream API a worker needs
 * (bind and watch placement, members, models), replies through its inbox. Nothing under
 * `kvf.v1.shard.>` (the default tenant's and the node-to-node operations).
 */
export function natsTenantPermissions(tenant: string): {
  publish: { allow: string[]; deny: string[] };
  subscribe: { allow: string[] };
} {
  assertTenantId(tenant);
  const buckets = ['kvf_members', 'kvf_placement', 'kvf_models'];
  return {
    publish: {
      allow: [
        ...TENANT_SHARD_OPS.map((op) => `kvf.v1.t.${tenant}.shard.*.${op}`),
        'kvf.v1.coord.placement',
        'kvf.v1.coord.status',
        'kvf.v1.coord.register_model',
        '$JS.API.INFO',
        ...buckets.flatMap((b) => [
          `$JS.API.STREAM.INFO.KV_${b}`,
          `$JS.API.STREAM.MSG.GET.KV_${b}`,
          `$JS.API.DIRECT.GET.KV_${b}`,
          `$JS.API.DIRECT.GET.KV_${b}.>`,
          `$JS.API.CONSUMER.CREATE.KV_${b}`,
          `$JS.API.CONSUMER.CREATE.KV_${b}.>`,
          `$JS.API.CONSUMER.INFO.KV_${b}.*`,
          `$JS.API.CONSUMER.DELETE.KV_${b}.*`,
          `$JS.FC.KV_${b}.>`,
        ]),
        '$JS.API.STREAM.INFO.KV_kvf_leader',
        '$JS.API.STREAM.INFO.KVF_EVENTS',
      ],
      deny: ['kvf.v1.shard.>', '$KV.>', 'kvf.events.>'],
    },
    subscribe: { allow: [`${tenantInboxPrefix(tenant)}.>`] },
  };
}

/**
 * Reply inbox prefix of a tenant's connections. Every worker sharing `_INBOX.>` could subscribe to
 * all of it and read other workers' replies (block addresses and rkeys): a tenant's own prefix,
 * the only one its user may subscribe to, closes that.
 */
export function tenantInboxPrefix(tenant: string): string {
  assertTenantId(tenant);
  return `_INBOX_${tenant}`;
}

/** natsTenantPermissions as nats-server config text (JSON is valid nats-server config syntax). */
export function natsTenantUserConf(tenant: string, user: string, password: string): string {
  return JSON.stringify({ user, password, permissions: natsTenantPermissions(tenant) });
}

/**
 * The tenant a NATS connection's credentials belong to, for code that builds shard subjects from
 * a connection alone (the SDK's callShard). Set once at connect; unset = the default tenant.
 */
const connectionTenants = new WeakMap<object, string>();

export function setConnectionTenant(nc: object, tenant: string | undefined): void {
  if (tenant === undefined) connectionTenants.delete(nc);
  else {
    assertTenantId(tenant);
    connectionTenants.set(nc, tenant);
  }
}

export function connectionTenant(nc: object): string | undefined {
  return connectionTenants.get(nc);
}

/** tenantShardSubject for the tenant of a connection (setConnectionTenant). */
export function shardSubjectFor(nc: object, nodeId: string, op: ShardOp): string {
  return tenantShardSubject(connectionTenant(nc), nodeId, op);
}

/** Extra subjects a shard node serves `op` on: every tenant's, for the operations tenants may send. */
export function tenantSubjectsOf(nodeId: string, op: ShardOp): string[] {
  return isTenantShardOp(op) ? [tenantWildcardSubject(nodeId, op)] : [];
}

/**
 * A shard node's view of a request that arrived on `subject`: scoped to the subject's tenant
 * (scopeRequest), unchanged on the default tenant's subject. BAD_REQUEST for a malformed tenant.
 */
export function scopeForSubject<T>(op: ShardOp, subject: string, req: T): T {
  let tenant: string | undefined;
  try {
    tenant = tenantOfSubject(subject);
  } catch (err) {
    throw new KvfError('BAD_REQUEST', (err as Error).message, { cause: err });
  }
  if (tenant === undefined) return req;
  if (!isTenantShardOp(op)) throw new KvfError('BAD_REQUEST', `${op} is not a tenant operation`);
  return scopeRequest(tenant, op, req);
}

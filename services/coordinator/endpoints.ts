/**
 * The leader's NATS endpoints: register_model, placement, status. Only the leader subscribes
 * (queue group kvf-coord, so a brief overlap during a handover still answers once); every handler
 * re-checks leadership and answers NOT_LEADER when the lease lapsed, which clients retry.
 */
import type { KV } from '@nats-io/kv';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { canonicalProfile, decodeProfile, listModels } from '../../shared/cluster/models.js';
import { getLive, isWrongLastSequence } from '../../shared/cluster/kv-util.js';
import { KvfError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import type { PartitionSpec } from '../../shared/partition.js';
import { validateProfile } from '../../shared/profiles.js';
import { serveEndpoint } from '../../shared/protocol/codec.js';
import {
  COORD_QUEUE,
  COORD_SUBJECTS,
  modelKey,
  placementRequestSchema,
  registerModelRequestSchema,
  statusRequestSchema,
  type MemberStatus,
  type PlacementTable,
  type RegisterModelReply,
  type StatusReply,
} from '../../shared/protocol/cluster.js';
import type { MemberView } from './membership.js';

/** What the endpoints need from the leader session. */
export interface EndpointContext {
  nc: NatsConnection;
  models: KV;
  leaderId: string;
  term: number;
  spec: PartitionSpec;
  replicationFactor: number;
  isLeader(): boolean;
  table(): { table: PlacementTable; revision: number } | undefined;
  members(): MemberView[];
  nowMs(): number;
  logger?: Logger;
}

/** Create the profile under its id; same profile again is a no-op, a different one a conflict. */
export async function registerModel(models: KV, raw: unknown): Promise<RegisterModelReply> {
  const profile = validateProfile(raw);
  const key = modelKey(profile.id);
  const wanted = canonicalProfile(profile);
  try {
    await models.create(key, wanted);
    return { modelId: profile.id, created: true };
  } catch (err) {
    if (!isWrongLastSequence(err)) throw err;
  }
  const existing = await getLive(models, key);
  if (existing === undefined) {
    throw new KvfError('INTERNAL', `model ${profile.id} changed during registration; retry`);
  }
  const stored = canonicalProfile(decodeProfile(existing.value));
  if (stored !== wanted) {
    throw new KvfError('PROFILE_CONFLICT', `model ${profile.id} is registered with a different profile`, {
      details: { model: profile.id, registered: JSON.parse(stored) as unknown, requested: profile },
    });
  }
  return { modelId: profile.id, created: false };
}

function memberStatus(m: MemberView, table: PlacementTable | undefined, nowMs: number): MemberStatus {
  let cells = 0;
  let primaryCells = 0;
  for (const c of Object.values(table?.cells ?? {})) {
    const i = c.replicas.indexOf(m.record.nodeId);
    if (i >= 0) cells++;
    if (i === 0) primaryCells++;
  }
  return {
    nodeId: m.record.nodeId,
    incarnation: m.record.incarnation,
    role: m.record.role,
    capacityBytes: m.record.capacityBytes,
    usedBytes: m.record.usedBytes,
    silentMs: Math.max(0, nowMs - m.lastChangeAtMs),
    cells,
    primaryCells,
    models: Object.keys(m.record.models).sort(),
  };
}

export function serveCoordinatorEndpoints(ctx: EndpointContext): Subscription[] {
  const requireLeader = (): void => {
    if (!ctx.isLeader()) throw new KvfError('NOT_LEADER', `coordinator ${ctx.leaderId} is not the leader`);
  };
  const onError = (err: KvfError, subject: string): void => {
    if (err.codeName === 'INTERNAL') ctx.logger?.error('endpoint failed', { subject, err });
  };
  return [
    serveEndpoint(ctx.nc, {
      subject: COORD_SUBJECTS.registerModel,
      queue: COORD_QUEUE,
      schema: registerModelRequestSchema,
      onError,
      handler: async (req) => {
        requireLeader();
        const reply = await registerModel(ctx.models, req.profile);
        if (reply.created) ctx.logger?.info('model registered', { model: reply.modelId });
        return reply;
      },
    }),
    serveEndpoint(ctx.nc, {
      subject: COORD_SUBJECTS.placement,
      queue: COORD_QUEUE,
      schema: placementRequestSchema,
      onError,
      handler: () => {
        requireLeader();
        const t = ctx.table();
        if (t === undefined) throw new KvfError('NO_PLACEMENT', 'no placement table written yet');
        return { revision: t.revision, table: t.table };
      },
    }),
    serveEndpoint(ctx.nc, {
      subject: COORD_SUBJECTS.status,
      queue: COORD_QUEUE,
      schema: statusRequestSchema,
      onError,
      handler: async (): Promise<StatusReply> => {
        requireLeader();
        const t = ctx.table()?.table;
        const now = ctx.nowMs();
        return {
          leader: { id: ctx.leaderId, term: ctx.term },
          epoch: t?.epoch ?? 0,
          replicationFactor: ctx.replicationFactor,
          spec: ctx.spec,
          members: ctx.members().map((m) => memberStatus(m, t, now)),
          models: await listModels(ctx.models),
        };
      },
    }),
  ];
}

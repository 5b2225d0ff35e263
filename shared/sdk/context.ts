/** What the get and put flows need from the client; built once per KvfClient. */
import type { NatsConnection } from '@nats-io/transport-node';
import { KvfError } from '../errors.js';
import type { PrefixIndex } from '../index/prefix-index.js';
import type { PlacementTable } from '../protocol/cluster.js';
import type { DataPlane } from './dataplane.js';
import type { MembersCache } from './members.js';
import { isLinkUp } from './nats-link.js';
import type { PlacementSource } from './placement-source.js';
import type { CompiledOptions } from './options.js';
import type { LeaseReleaser } from './shard-rpc.js';
import type { StatsRecorder } from './stats.js';

export interface FlowContext {
  readonly nc: NatsConnection;
  readonly placement: PlacementSource;
  readonly members: MembersCache;
  readonly index: PrefixIndex;
  readonly data: DataPlane;
  readonly stats: StatsRecorder;
  readonly releaser: LeaseReleaser;
  readonly opts: CompiledOptions;
}

/** The locally cached placement table (no round trip), waiting for the first one if needed. */
export async function currentTable(ctx: FlowContext): Promise<PlacementTable> {
  const t = ctx.placement.current();
  if (t !== undefined) return t;
  try {
    return await ctx.placement.ready(ctx.opts.placementWaitMs);
  } catch (err) {
    throw new KvfError('NO_PLACEMENT', `no placement table within ${ctx.opts.placementWaitMs} ms`, {
      cause: err,
    });
  }
}

/** One direct read of the placement table after a refusal; falls back to the cached one. */
export async function refreshedTable(ctx: FlowContext): Promise<PlacementTable> {
  if (!isLinkUp(ctx.nc)) return currentTable(ctx); // no round trip can succeed now
  try {
    const t = await ctx.placement.refresh();
    if (t !== undefined) return t;
  } catch {
    // the watch may still deliver; use what we have
  }
  return currentTable(ctx);
}

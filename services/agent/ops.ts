/**
 * The agent's operations: each validates its arguments (already schema-checked), resolves the
 * caller's region slots and calls the worker SDK. A failing check throws before anything is
 * touched, so a refused request changes nothing.
 */
import { KvfError } from '../../shared/errors.js';
import { nativeInfo, openCudaIpcHandle, closeCudaIpcHandle } from '../../native/index.js';
import { validateProfile } from '../../shared/profiles.js';
import { AGENT_PROTOCOL_VERSION, type AgentArgs, type AgentOp } from '../../shared/protocol/agent.js';
import type { KvBuffers, KvfClient, ModelLayout } from '../../shared/sdk/mod.js';
import type { Region, RegionTable } from './regions.js';

export interface OpContext {
  client: KvfClient;
  regions: RegionTable;
  /** The connection's id (owner of its regions). */
  conn: number;
  /** Sends a `group` event for the current request. */
  emit: (event: Record<string, unknown>) => void;
  agentStats: () => Record<string, unknown>;
}

type Handler<O extends AgentOp> = (ctx: OpContext, args: AgentArgs<O>) => Promise<unknown>;

function layoutReply(l: ModelLayout): Record<string, unknown> {
  return {
    model: l.profile.id,
    profile: l.profile,
    chunkTokens: l.chunkTokens,
    groups: l.groups.map((g) => ({ firstLayer: g.firstLayer, layers: g.layers })),
    blockBytes: l.blockBytes,
  };
}

export function cudaStatus(): { available: boolean; reason?: string } {
  try {
    const info = nativeInfo();
    if (!info.cudaCompiled) return { available: false, reason: 'addon built without CUDA' };
    if (info.cudaDevices === 0) return { available: false, reason: info.cudaError ?? 'no CUDA device' };
    return { available: true };
  } catch (err) {
    return { available: false, reason: (err as Error).message };
  }
}

/** The region slots of a get or put as SDK buffers; OUT_OF_RANGE / SHAPE_MISMATCH before any I/O. */
function slots(region: Region, layout: ModelLayout, offsets: readonly number[], chunks: number): KvBuffers {
  if (offsets.length !== layout.groups.length) {
    throw new KvfError(
      'SHAPE_MISMATCH',
      `model ${layout.profile.id} has ${layout.groups.length} layer groups, got ${offsets.length} offsets`,
    );
  }
  const groups = offsets.map((off, g) => {
    const len = chunks * (layout.blockBytes[g] as number);
    if (off + len > region.bytes) {
      throw new KvfError(
        'OUT_OF_RANGE',
        `layer group ${g}: [${off}, ${off + len}) leaves region ${region.id} of ${region.bytes} bytes`,
        { details: { group: g, offset: off, length: len, regionBytes: region.bytes } },
      );
    }
    return region.buffer.subarray(off, off + len);
  });
  return { groups };
}

async function withRegion<T>(region: Region, fn: () => Promise<T>): Promise<T> {
  region.busy++;
  try {
    return await fn();
  } finally {
    region.busy--;
  }
}

function chunksOf(args: { tokens: number[]; chunks?: number | undefined }, layout: ModelLayout): number {
  const full = Math.floor(args.tokens.length / layout.chunkTokens);
  return args.chunks === undefined ? full : Math.min(args.chunks, full);
}

export const HANDLERS: { [O in AgentOp]: Handler<O> } = {
  hello: async () => ({
    protocol: AGENT_PROTOCOL_VERSION,
    pid: process.pid,
    cuda: cudaStatus(),
  }),
  register_model: async (ctx, a) => {
    const profile = validateProfile(a.profile);
    const reply = await ctx.client.registerModel(profile);
    return { created: reply.created, layout: layoutReply(await ctx.client.layout(profile.id)) };
  },
  layout: async (ctx, a) => layoutReply(await ctx.client.layout(a.model)),
  region_create: async (ctx, a) => {
    const r = ctx.regions.create(ctx.conn, a.bytes);
    return { region: r.id, path: r.path, bytes: r.bytes };
  },
  region_free: async (ctx, a) => {
    ctx.regions.free(ctx.conn, a.region);
    return {};
  },
  cuda_ipc_open: async (_ctx, a) => {
    const handle = Buffer.from(a.handle, 'base64');
    // Throws CUDA_UNAVAILABLE on a host without CUDA or a device (this is the path taken here).
    const address = openCudaIpcHandle(handle, a.deviceId ?? 0);
    closeCudaIpcHandle(address);
    throw new KvfError(
      'CUDA_UNAVAILABLE',
      'CUDA IPC handle opened, but gets straight into device buffers are not wired in this build',
    );
  },
  lookup: async (ctx, a) => {
    const r = await ctx.client.lookupDetailed(a.tokens, callOpts(a));
    return { tokens: r.tokens, chunks: r.chunks, degraded: r.degraded };
  },
  lookup_many: async (ctx, a) => {
    const rs = await Promise.all(a.prompts.map((t) => ctx.client.lookupDetailed(t, callOpts(a))));
    return { tokens: rs.map((r) => r.tokens), degraded: rs.some((r) => r.degraded) };
  },
  get: async (ctx, a) => {
    const region = ctx.regions.get(ctx.conn, a.region);
    const layout = await ctx.client.layout(a.model);
    const target = slots(region, layout, a.offsets, chunksOf(a, layout));
    return withRegion(region, async () => {
      const r = await ctx.client.getDetailed(a.tokens, target, {
        ...callOpts(a),
        ...(a.events === true
          ? {
              onLayerGroup: (g) =>
                ctx.emit({ event: 'group', group: g.group, chunks: g.chunks, tokens: g.tokens }),
            }
          : {}),
      });
      return {
        tokens: r.tokens,
        chunks: r.chunks,
        indexedChunks: r.indexedChunks,
        degraded: r.degraded,
        failedBlocks: r.failedBlocks,
        checksumFailures: r.checksumFailures,
        bytes: r.bytes,
      };
    });
  },
  put: async (ctx, a) => {
    const region = ctx.regions.get(ctx.conn, a.region);
    const layout = await ctx.client.layout(a.model);
    const source = slots(region, layout, a.offsets, chunksOf(a, layout));
    return withRegion(region, () => ctx.client.put(a.tokens, source, callOpts(a)));
  },
  stats: async (ctx) => ({ sdk: ctx.client.stats(), agent: ctx.agentStats() }),
};

function callOpts(a: { model: string; namespace?: string | undefined }): {
  model: string;
  namespace?: string;
} {
  return a.namespace === undefined ? { model: a.model } : { model: a.model, namespace: a.namespace };
}

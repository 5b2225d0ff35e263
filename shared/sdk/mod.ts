/**
 * kvfabric worker SDK: the public surface. Everything else in shared/sdk is internal.
 *
 *   const kvf = await connect({ natsServers, redisUrl, model: 'llama-3-8b' });
 *   const hit = await kvf.get(tokens, await kvf.allocKv(tokens.length));
 *
 * See docs/sdk.md.
 */
export {
  connect,
  KvfClient,
  type CallOptions,
  type GetOptions,
  type LookupDetailed,
  type PutOptions,
  type RegisterOptions,
  type Tokens,
} from './client.js';
export { CONNECT_DEFAULTS, type ConnectOptions } from './options.js';
export type { UcxClientOptions } from './dataplane.js';
export type { GetResult, LayerGroupReady } from './get.js';
export type { PutResult } from './put.js';
export type { ClientStats, LatencySummary } from './stats.js';
export {
  bufferBytesFor,
  buffersChunkCapacity,
  effectiveLayerGroups,
  modelLayout,
  type KvBuffers,
  type ModelLayout,
} from './layout.js';
export { layerModelId, layerProfile, type CachedKv, type KvTypedArray } from './convenience.js';
export { KvfError, isKvfError } from '../errors.js';
export type { AckMode } from '../protocol/shard.js';

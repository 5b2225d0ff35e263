/**
 * Cluster metadata helpers shared by the actors and the SDK. The record shapes, bucket names and
 * subjects they speak are in shared/protocol/cluster.ts; the prose is docs/coordinator.md.
 */
export { ensureBuckets, BUCKET_DEFAULTS, type BucketOptions, type ClusterBuckets } from './buckets.js';
export { systemClock, randomId, type Clock, type RandomSource } from './clock.js';
export {
  CoordinatorClient,
  COORDINATOR_CLIENT_DEFAULTS,
  type CoordinatorClientOptions,
} from './coordinator-client.js';
export { checkOwnership, ownershipError, type OwnershipCheck, type OwnershipQuery } from './epochs.js';
export { publishEvent, type ClusterEvent } from './events.js';
export { getLive, isWrongLastSequence } from './kv-util.js';
export {
  MemberAgent,
  MEMBER_AGENT_DEFAULTS,
  type MemberAgentOptions,
  type MemberRecordInput,
  type MemberRecordUpdate,
} from './member-agent.js';
export { canonicalProfile, decodeProfile, listModels, readModel, requireModel } from './models.js';
export { PlacementCache, type PlacementCacheOptions, type PlacementListener } from './placement-cache.js';

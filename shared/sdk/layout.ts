/**
 * How one model's KV is cut into blocks for a given partition spec, and the buffers that hold a
 * prompt's blocks on the worker side.
 *
 * Layer groups per model: G = min(spec.layerGroups, profile.layers). A model with fewer layers than
 * the cluster's layer-group count (e.g. the single-layer convenience profiles) uses one group per
 * layer instead of failing; group g of every model still maps to cell column g, so the cell math
 * is the same for every model. Shard nodes must derive a group's block size the same way
 * (`modelLayout`), which is why this lives in shared/.
 *
 * Worker-side buffer layout (`KvBuffers`): one buffer per layer group, chunk-major: the block of
 * chunk i of group g is at byte offset i * blockBytes[g] of buffers[g], each block being
 * [layersInGroup, 2 (K,V), kvHeads, chunkTokens, headDim] in the profile's dtype, row-major.
 */
import { KvfError } from '../errors.js';
import { blockBytes, layerGroups, type LayerGroup, type ModelProfile } from '../profiles.js';
import type { PartitionSpec } from '../partition.js';

export interface ModelLayout {
  readonly profile: ModelProfile;
  /** Layer groups of this model: min(spec.layerGroups, profile.layers) of them. */
  readonly groups: readonly LayerGroup[];
  /** blockBytes[g]: bytes of one block of layer group g. */
  readonly blockBytes: readonly number[];
  readonly chunkTokens: number;
}

/** Effective layer-group count of a model under a partition spec. */
export function effectiveLayerGroups(
  profile: ModelProfile,
  spec: Pick<PartitionSpec, 'layerGroups'>,
): number {
  return Math.min(spec.layerGroups, profile.layers);
}

export function modelLayout(profile: ModelProfile, spec: Pick<PartitionSpec, 'layerGroups'>): ModelLayout {
  const groups = layerGroups(profile, effectiveLayerGroups(profile, spec));
  return Object.freeze({
    profile,
    groups,
    blockBytes: groups.map((g) => blockBytes(profile, g.layers)),
    chunkTokens: profile.chunkTokens,
  });
}

/**
 * Per-layer-group byte buffers, chunk-major (see the file comment). Used both as a get target and
 * as put input. Any Uint8Array view works (Buffer, a view over a Uint16Array...); buffers from
 * `KvfClient.allocKv` are UCX-registered host memory.
 */
export interface KvBuffers {
  readonly groups: readonly Uint8Array[];
}

/**
 * How many leading chunks the buffers can hold: min over groups of floor(length / blockBytes[g]).
 * Throws SHAPE_MISMATCH when the group count does not match the layout.
 */
export function buffersChunkCapacity(layout: ModelLayout, buffers: KvBuffers): number {
  if (!Array.isArray(buffers.groups) || buffers.groups.length !== layout.groups.length) {
    throw new KvfError(
      'SHAPE_MISMATCH',
      `model ${layout.profile.id}: expected ${layout.groups.length} layer-group buffers, got ${
        Array.isArray(buffers.groups) ? buffers.groups.length : typeof buffers.groups
      }`,
      { details: { model: layout.profile.id, groups: layout.groups.length } },
    );
  }
  let cap = Number.MAX_SAFE_INTEGER;
  buffers.groups.forEach((b, g) => {
    if (!(b instanceof Uint8Array)) {
      throw new KvfError('SHAPE_MISMATCH', `layer group ${g}: expected a Uint8Array`, { details: { g } });
    }
    cap = Math.min(cap, Math.floor(b.byteLength / (layout.blockBytes[g] as number)));
  });
  return cap;
}

/** Byte length each group's buffer needs for `chunks` chunks. */
export function bufferBytesFor(layout: ModelLayout, chunks: number): number[] {
  return layout.blockBytes.map((bb) => bb * chunks);
}

/**
 * One served model on a shard node: its profile, the arena of fixed-size block slots (native
 * memory registered with UCX so peers can get/put it one-sided), and the block table over it.
 *
 * Slot size is the largest layer group's block (maxBlockBytes for the effective group count);
 * smaller groups use a prefix of their slot, and checksums cover exactly the group's bytes.
 */
import type { Arena, ArenaOptions } from '../../native/index.js';
import { KvfError } from '../../shared/errors.js';
import {
  blockBytes,
  layerGroups,
  maxBlockBytes,
  type LayerGroup,
  type ModelProfile,
} from '../../shared/profiles.js';
import type { MemberModel } from '../../shared/protocol/cluster.js';
import { BlockStore, type BlockStoreOptions } from './block-store.js';

/** What the shard node needs of a UCX memory registration (native MemRegion satisfies it). */
export interface RegisteredRegion {
  readonly address: bigint;
  readonly length: number;
  packRkey(): Uint8Array;
  deregister(): void;
}

/** What the shard node needs of its UCX worker (native UcxWorker satisfies it). */
export interface UcxRegistrar {
  address(): Uint8Array;
  registerArena(arena: Arena): RegisteredRegion;
  /** Open an arena already registered, host memory UCX-allocated (native UcxWorker.openArena). */
  openArena?(opts: ArenaOptions): { arena: Arena; region: RegisteredRegion };
}

export type OpenArena = (opts: ArenaOptions) => Arena;

export interface ModelArenaOptions {
  profile: ModelProfile;
  /** Position of this model in the node's model list; part of wire ids (allocations, leases). */
  slot: number;
  /** Cluster layer groups (partition.layerGroups); capped at the profile's layer count. */
  layerGroups: number;
  /** Bytes of arena this model may use; the block count is floor(arenaBytes / slot size). */
  arenaBytes: number;
  arenaKind: 'auto' | 'host' | 'cuda';
  openArena: OpenArena;
  ucx: UcxRegistrar;
  store: Omit<BlockStoreOptions, 'allocator' | 'checksumOf'>;
  log?: (line: string) => void;
}

/** Layer groups actually used for a profile: a model with fewer layers than groups uses one per layer. */
export function effectiveLayerGroups(profile: ModelProfile, clusterGroups: number): number {
  return Math.min(clusterGroups, profile.layers);
}

export class ModelArena {
  readonly profile: ModelProfile;
  readonly slot: number;
  readonly groups: readonly LayerGroup[];
  /** Bytes of one slot: the largest group's block. */
  readonly slotBytes: number;
  readonly arena: Arena;
  readonly region: RegisteredRegion;
  readonly store: BlockStore;
  private readonly rkeyBase64: string;

  private constructor(o: ModelArenaOptions, arena: Arena, region: RegisteredRegion) {
    this.profile = o.profile;
    this.slot = o.slot;
    this.groups = layerGroups(o.profile, effectiveLayerGroups(o.profile, o.layerGroups));
    this.slotBytes = arena.blockBytes;
    this.arena = arena;
    this.region = region;
    this.rkeyBase64 = Buffer.from(region.packRkey()).toString('base64');
    this.store = new BlockStore({
      ...o.store,
      allocator: arena,
      checksumOf: (slot, g) => arena.checksum(slot, 0, this.groupBytes(g)),
    });
  }

  /**
   * Open the arena and register it with UCX. Throws CONFIG_INVALID when the budget holds no
   * block (the caller decides whether that is fatal).
   */
  static open(o: ModelArenaOptions): ModelArena {
    const groupCount = effectiveLayerGroups(o.profile, o.layerGroups);
    const slotBytes = maxBlockBytes(o.profile, groupCount);
    const blockCount = Math.floor(o.arenaBytes / slotBytes);
    if (blockCount < 1) {
      throw new KvfError(
        'CONFIG_INVALID',
        `arena budget of ${o.arenaBytes} bytes holds no ${slotBytes}-byte block of model ${o.profile.id}`,
        { details: { model: o.profile.id, arenaBytes: o.arenaBytes, blockBytes: slotBytes } },
      );
    }
    const arenaOpts = {
      kind: o.arenaKind,
      blockBytes: slotBytes,
      blockCount,
      ...(o.log ? { log: o.log } : {}),
    };
    // UCX-allocated host memory: UCX 1.13's shm transports get/put only such memory at copy speed.
    if (o.ucx.openArena) {
      const { arena, region } = o.ucx.openArena(arenaOpts);
      return new ModelArena(o, arena, region);
    }
    const arena = o.openArena(arenaOpts);
    let region: RegisteredRegion;
    try {
      region = o.ucx.registerArena(arena);
    } catch (err) {
      arena.close();
      throw err;
    }
    return new ModelArena(o, arena, region);
  }

  get groupCount(): number {
    return this.groups.length;
  }

  /** Bytes of a block of layer group g (groups may differ by one layer). */
  groupBytes(g: number): number {
    const group = this.groups[g];
    if (group === undefined) {
      throw new KvfError('BAD_REQUEST', `layer group ${g} out of range [0, ${this.groups.length})`);
    }
    return blockBytes(this.profile, group.layers);
  }

  usedBytes(): number {
    return this.arena.used * this.slotBytes;
  }

  capacityBytes(): number {
    return this.arena.bytes;
  }

  /** This model's entry in the node's member record: what a peer needs for UCX get/put. */
  memberModel(): MemberModel {
    return {
      baseAddress: this.arena.baseAddress.toString(),
      rkey: this.rkeyBase64,
      blockBytes: this.slotBytes,
      blockCount: this.arena.blockCount,
    };
  }

  close(): void {
    try {
      this.region.deregister();
    } finally {
      this.arena.close();
    }
  }
}

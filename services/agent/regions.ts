/**
 * Shared-memory regions: files in a tmpfs directory (/dev/shm) that the agent maps and registers
 * with UCX, and the engine maps by name. Gets land in a region straight from UCX, puts read from
 * it: no KV byte crosses the socket or is copied by the agent.
 *
 * Each region belongs to one connection and dies with it (a crashed engine leaves nothing behind
 * but its own regions, which the agent frees once that connection's operations have settled).
 * The memory itself is unmapped when the last view is garbage collected; the file is unlinked at
 * free, so tmpfs pages go back as soon as both sides have unmapped.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { KvfError } from '../../shared/errors.js';
import { mapSharedFile, type MemRegion, type UcxWorker } from '../../native/index.js';

export interface RegionLimits {
  /** Directory of the region files (a tmpfs). @default '/dev/shm' */
  shmDir: string;
  /** Largest single region. @default 8 GiB */
  regionBytesMax: number;
  /** Regions one connection may hold. @default 64 */
  regionsPerConnectionMax: number;
  /** All regions of all connections together. @default 64 GiB */
  shmBytesMax: number;
}

export const REGION_DEFAULTS: RegionLimits = {
  shmDir: '/dev/shm',
  regionBytesMax: 8 * 2 ** 30,
  regionsPerConnectionMax: 64,
  shmBytesMax: 64 * 2 ** 30,
};

export interface Region {
  readonly id: number;
  readonly owner: number;
  readonly path: string;
  readonly bytes: number;
  readonly buffer: Buffer;
  /** Operations using the region right now; a busy region cannot be freed. */
  busy: number;
}

export class RegionTable {
  private readonly regions = new Map<number, Region & { mem: MemRegion }>();
  private nextId = 1;
  private totalBytes = 0;

  constructor(
    private readonly worker: UcxWorker,
    private readonly limits: RegionLimits,
  ) {}

  get count(): number {
    return this.regions.size;
  }
  get bytes(): number {
    return this.totalBytes;
  }

  create(owner: number, bytes: number): Region {
    if (bytes > this.limits.regionBytesMax) {
      throw new KvfError(
        'OUT_OF_RANGE',
        `region of ${bytes} bytes exceeds regionBytesMax (${this.limits.regionBytesMax})`,
      );
    }
    if (this.totalBytes + bytes > this.limits.shmBytesMax) {
      throw new KvfError(
        'OUT_OF_RANGE',
        `shared memory budget exhausted (shmBytesMax ${this.limits.shmBytesMax})`,
      );
    }
    const owned = [...this.regions.values()].filter((r) => r.owner === owner).length;
    if (owned >= this.limits.regionsPerConnectionMax) {
      throw new KvfError('OUT_OF_RANGE', `connection holds regionsPerConnectionMax (${owned}) regions`);
    }
    const id = this.nextId++;
    // Unguessable name: another local user must not be able to pre-create or open it.
    const file = path.join(
      this.limits.shmDir,
      `kvfabric-agent-${process.pid}-${owner}-${id}-${randomBytes(8).toString('hex')}`,
    );
    const fd = openSync(file, 'wx', 0o600);
    let mem: MemRegion | undefined;
    try {
      ftruncateSync(fd, bytes);
      const buffer = mapSharedFile(file, bytes);
      mem = this.worker.registerBuffer(buffer);
      const region = { id, owner, path: file, bytes, buffer, busy: 0, mem };
      this.regions.set(id, region);
      this.totalBytes += bytes;
      return region;
    } catch (err) {
      unlinkQuiet(file);
      throw err;
    } finally {
      closeSync(fd);
    }
  }

  /** The caller's region; OUT_OF_RANGE for an id it does not own (another engine's is not visible). */
  get(owner: number, id: number): Region {
    return this.owned(owner, id);
  }

  private owned(owner: number, id: number): Region & { mem: MemRegion } {
    const r = this.regions.get(id);
    if (r === undefined || r.owner !== owner) {
      throw new KvfError('OUT_OF_RANGE', `region ${id} does not exist on this connection`, {
        details: { region: id },
      });
    }
    return r;
  }

  free(owner: number, id: number): void {
    const r = this.owned(owner, id);
    if (r.busy > 0) {
      throw new KvfError('BAD_REQUEST', `region ${id} has ${r.busy} operations in flight`, {
        details: { region: id },
      });
    }
    this.drop(r);
  }

  /** Frees every region of a connection (its operations must have settled). */
  freeOwner(owner: number): number {
    const mine = [...this.regions.values()].filter((r) => r.owner === owner);
    for (const r of mine) this.drop(r);
    return mine.length;
  }

  freeAll(): void {
    for (const r of [...this.regions.values()]) this.drop(r);
  }

  private drop(r: Region & { mem: MemRegion }): void {
    this.regions.delete(r.id);
    this.totalBytes -= r.bytes;
    try {
      r.mem.deregister();
    } catch {
      // the worker is already closed: its registrations are gone with it
    }
    unlinkQuiet(r.path);
  }
}

function unlinkQuiet(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // the engine already unlinked it after mapping (the documented fast path), or it is gone
  }
}

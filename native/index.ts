/**
 * The whole native boundary of kvfabric: every export of native/build/Release/kvfabric_native.node
 * is declared here (NativeBinding) and wrapped in typed classes. C++ errors arrive as JS Errors
 * tagged "KVF_<CODE>: ..." (and a `kvfCode` property); fromNativeError turns them into KvfError.
 * Native handles are destroyed explicitly with close(); every call after close() throws CLOSED.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { ErrorCode, KvfError, type ErrorCodeName } from '../shared/errors.js';

// UCX's mmap hooks patch the allocator underneath V8 and crash Node. The variable must be in the
// environment before libucm is loaded (it is a dependency of the addon), so set it at import.
process.env.UCX_MEM_MMAP_HOOK_MODE ??= 'none';

/** Where the addon lives, relative to the package root. */
export const ADDON_RELATIVE_PATH = 'native/build/Release/kvfabric_native.node';
/** Environment variable that overrides the addon path (absolute path to a .node file). */
export const ADDON_PATH_ENV = 'KVFABRIC_NATIVE_ADDON';
/** Default cap on one arena's size (blockBytes * blockCount): 64 GiB. */
export const ARENA_BYTES_MAX_DEFAULT = 64 * 2 ** 30;

// ---- raw binding (what the .node file exports) ----------------------------------------------

export type ArenaKind = 'host' | 'cuda';

/** A NativeArena object; methods throw tagged Errors, use the Arena class instead. */
export interface NativeArenaHandle {
  readonly kind: ArenaKind;
  readonly blockBytes: number;
  readonly blockCount: number;
  readonly bytes: number;
  readonly baseAddress: bigint;
  /** CUDA device ordinal, -1 for host arenas. */
  readonly deviceId: number;
  readonly capacity: number;
  readonly used: number;
  readonly free: number;
  readonly closed: boolean;
  alloc(): number;
  allocMany(n: number): number[];
  release(index: number): void;
  isAllocated(index: number): boolean;
  addressOf(index: number): bigint;
  write(index: number, offset: number, src: Uint8Array): void;
  read(index: number, offset: number, dst: Uint8Array): void;
  checksum(index: number, offset?: number, length?: number): number;
  checksumsAsync(indices: Uint32Array, lengths: Float64Array): Promise<Uint32Array>;
  prefault(): Promise<{ method: PrefaultMethod; ms: number }>;
  hostView(index: number): Buffer | undefined;
  close(): void;
}

export interface NativeInfo {
  addonVersion: string;
  napiVersion: number;
  ucxVersion: string;
  cudaCompiled: boolean;
  cudaDevices: number;
  /** Why cudaDevices is 0, when the CUDA runtime said so. */
  cudaError?: string;
  crc32c: 'sse4.2' | 'software';
}

/**
 * The addon's exports. The UCX section below extends this interface (declaration merging) with
 * the UCX functions.
 */
export interface NativeBinding {
  NativeArena: new (
    kind: ArenaKind,
    blockBytes: number,
    blockCount: number,
    deviceId: number,
    populate: boolean,
    arenaBytesMax: number,
  ) => NativeArenaHandle;
  crc32c(data: Uint8Array, seed?: number): number;
  crc32cRange(data: Uint8Array, offset: number, length: number, seed?: number): number;
  crc32cSoftware(data: Uint8Array, seed?: number): number;
  crc32cRangesAsync(data: Uint8Array, ranges: Float64Array): Promise<Uint32Array>;
  memcpyBench(bytes: number, iterations: number): number;
  info(): NativeInfo;
}

// ---- loader and error mapping ---------------------------------------------------------------

const NATIVE_TAG = /^KVF_([A-Z0-9_]+): /;

/** Convert an Error thrown by the addon into a KvfError (untagged errors become INTERNAL). */
export function fromNativeError(err: unknown): KvfError {
  if (err instanceof KvfError) return err;
  if (!(err instanceof Error)) return new KvfError('INTERNAL', String(err), { cause: err });
  const tagged = NATIVE_TAG.exec(err.message);
  const raw = (err as { kvfCode?: unknown }).kvfCode ?? tagged?.[1];
  const message = tagged ? err.message.slice(tagged[0].length) : err.message;
  const codeName =
    typeof raw === 'string' && Object.hasOwn(ErrorCode, raw) ? (raw as ErrorCodeName) : 'INTERNAL';
  return new KvfError(codeName, message, { cause: err });
}

/** Run a native call, rethrowing its errors as KvfError. */
export function callNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw fromNativeError(err);
  }
}

/** The kvfabric package root: the nearest ancestor whose package.json is named "kvfabric". */
export function packageRoot(from: string = path.dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'kvfabric') {
      return dir;
    }
    if (path.dirname(dir) === dir) {
      throw new KvfError('NATIVE_UNAVAILABLE', `no kvfabric package.json above ${from}`);
    }
  }
}

let binding: NativeBinding | undefined;

/** Load one addon file; KvfError NATIVE_UNAVAILABLE (with the dlopen message) when it cannot. */
export function loadAddonFile(file: string): NativeBinding {
  if (!existsSync(file)) {
    throw new KvfError('NATIVE_UNAVAILABLE', `native addon not found at ${file}: run npm run build:native`);
  }
  try {
    return createRequire(import.meta.url)(file) as NativeBinding;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new KvfError(
      'NATIVE_UNAVAILABLE',
      `cannot load native addon ${file}: ${reason} (run npm run build:native; it needs libucx-dev)`,
      { cause: err },
    );
  }
}

/**
 * The raw addon, loaded once from $KVFABRIC_NATIVE_ADDON or <package root>/native/build/Release.
 * Throws KvfError NATIVE_UNAVAILABLE with the reason.
 */
export function loadNative(): NativeBinding {
  binding ??= loadAddonFile(process.env[ADDON_PATH_ENV] ?? path.join(packageRoot(), ADDON_RELATIVE_PATH));
  return binding;
}

// ---- checksums, benchmark, info -------------------------------------------------------------

/** CRC-32C of data. `seed` is a previous CRC: crc32c(b, crc32c(a)) === crc32c(a ++ b). */
export function crc32c(data: Uint8Array, seed = 0): number {
  return callNative(() => loadNative().crc32c(data, seed));
}

/** CRC-32C of data[offset, offset+length); OUT_OF_RANGE if the range leaves data. */
export function crc32cRange(data: Uint8Array, offset: number, length: number, seed = 0): number {
  return callNative(() => loadNative().crc32cRange(data, offset, length, seed));
}

/** Run a native call that returns a promise; sync throws and rejections become KvfError. */
export async function callNativeAsync<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw fromNativeError(err);
  }
}

/**
 * Split items into at most `parts` contiguous runs of about equal total length, one thread-pool
 * task each (the last run takes the remainder).
 */
function splitByBytes<T extends { length: number }>(items: readonly T[], parts: number): T[][] {
  const total = items.reduce((a, x) => a + x.length, 0);
  const out: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const x of items) {
    cur.push(x);
    bytes += x.length;
    if (bytes >= total / parts && out.length < parts - 1) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/** Below this many bytes per thread-pool task a range list is not split further. */
const CRC_TASK_BYTES_MIN = 16 * 1024 * 1024;
/** libuv's default thread pool size (UV_THREADPOOL_SIZE): more tasks than threads only queue. */
const CRC_TASKS_MAX = Math.max(1, Number(process.env['UV_THREADPOOL_SIZE'] ?? 4));

/**
 * CRC-32C of each [offset, offset+length) of data, computed on libuv's thread pool (split over
 * several threads when there is enough work), so megabytes to gigabytes of verification never
 * block the event loop. Same values as crc32cRange; OUT_OF_RANGE/BAD_REQUEST for bad ranges
 * (thrown before any work starts). data must not be written until the promise settles.
 */
export async function crc32cRanges(
  data: Uint8Array,
  ranges: readonly { offset: number; length: number }[],
): Promise<number[]> {
  if (ranges.length === 0) return [];
  const total = ranges.reduce((a, r) => a + r.length, 0);
  const tasks = Math.max(1, Math.min(CRC_TASKS_MAX, ranges.length, Math.floor(total / CRC_TASK_BYTES_MIN)));
  const parts = splitByBytes(ranges, tasks).map((part) =>
    Float64Array.from(part.flatMap((r) => [r.offset, r.length])),
  );
  const native = loadNative();
  const results = await callNativeAsync(() =>
    Promise.all(parts.map((p) => native.crc32cRangesAsync(data, p))),
  );
  return results.flatMap((r) => [...r]);
}

/** Native memcpy bandwidth in GB/s (1e9 bytes copied per second); blocks the event loop. */
export function memcpyBench(bytes: number, iterations: number): { gbps: number } {
  return { gbps: callNative(() => loadNative().memcpyBench(bytes, iterations)) };
}

export function nativeInfo(): NativeInfo {
  return callNative(() => loadNative().info());
}

// ---- arenas ---------------------------------------------------------------------------------

export interface ArenaOptions {
  /** 'auto': CUDA when a device is usable, else host memory (logged once). */
  kind: 'auto' | 'host' | 'cuda';
  /** Size of one block in bytes (from the model profile). */
  blockBytes: number;
  blockCount: number;
  /** CUDA device ordinal. @default 0 */
  deviceId?: number;
  /** Prefault host pages at open (slower open, no page faults on first touch). @default false */
  populate?: boolean;
  /** Refuse arenas larger than this (BAD_REQUEST). @default ARENA_BYTES_MAX_DEFAULT (64 GiB) */
  arenaBytesMax?: number;
  /** Where the one-line CUDA fallback notice goes. @default console.warn */
  log?: (line: string) => void;
}

function positiveInteger(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new KvfError('BAD_REQUEST', `${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

interface CompiledArenaOptions {
  kind: 'auto' | 'host' | 'cuda';
  blockBytes: number;
  blockCount: number;
  deviceId: number;
  populate: boolean;
  arenaBytesMax: number;
  log: (line: string) => void;
}

function compileArenaOptions(opts: ArenaOptions): CompiledArenaOptions {
  if (!['auto', 'host', 'cuda'].includes(opts.kind)) {
    throw new KvfError(
      'BAD_REQUEST',
      `arena kind must be 'auto', 'host' or 'cuda', got ${String(opts.kind)}`,
    );
  }
  const c: CompiledArenaOptions = {
    kind: opts.kind,
    blockBytes: positiveInteger('blockBytes', opts.blockBytes),
    blockCount: positiveInteger('blockCount', opts.blockCount),
    deviceId: opts.deviceId ?? 0,
    populate: opts.populate ?? false,
    arenaBytesMax: positiveInteger('arenaBytesMax', opts.arenaBytesMax ?? ARENA_BYTES_MAX_DEFAULT),
    log: opts.log ?? ((line) => console.warn(line)),
  };
  if (!Number.isSafeInteger(c.deviceId) || c.deviceId < 0) {
    throw new KvfError(
      'BAD_REQUEST',
      `deviceId must be a non-negative integer, got ${String(opts.deviceId)}`,
    );
  }
  if (c.blockBytes * c.blockCount > c.arenaBytesMax) {
    throw new KvfError(
      'BAD_REQUEST',
      `arena of ${c.blockCount} x ${c.blockBytes} bytes exceeds arenaBytesMax (${c.arenaBytesMax})`,
    );
  }
  return c;
}

function openHandle(c: CompiledArenaOptions, kind: ArenaKind): NativeArenaHandle {
  const { NativeArena } = loadNative();
  return callNative(
    () => new NativeArena(kind, c.blockBytes, c.blockCount, c.deviceId, c.populate, c.arenaBytesMax),
  );
}

/** Why 'auto' cannot use CUDA, or undefined when a device is present. */
function cudaUnusableReason(): string | undefined {
  const info = nativeInfo();
  if (!info.cudaCompiled) return 'the addon was built without CUDA';
  if (info.cudaDevices === 0) return info.cudaError ?? 'no CUDA device present';
  return undefined;
}

const handles = new WeakMap<Arena, NativeArenaHandle>();
/** Wraps a NativeArena built by other native calls (UcxWorker.allocArena); set by Arena's static block. */
let wrapArenaHandle: (handle: NativeArenaHandle) => Arena;

/** How Arena.prefault went: populated, nothing to do (device memory), or not possible here. */
export type PrefaultMethod = 'populate' | 'device' | 'unsupported';

/** Fixed-size blocks in one host or CUDA memory region. Not thread-safe across JS workers. */
export class Arena {
  readonly kind: ArenaKind;
  readonly blockBytes: number;
  readonly blockCount: number;
  readonly bytes: number;
  readonly baseAddress: bigint;
  /** CUDA device ordinal, -1 for host arenas. */
  readonly deviceId: number;

  static {
    wrapArenaHandle = (handle) => new Arena(handle);
  }

  private constructor(handle: NativeArenaHandle) {
    handles.set(this, handle);
    this.kind = handle.kind;
    this.blockBytes = handle.blockBytes;
    this.blockCount = handle.blockCount;
    this.bytes = handle.bytes;
    this.baseAddress = handle.baseAddress;
    this.deviceId = handle.deviceId;
  }

  static open(opts: ArenaOptions): Arena {
    const c = compileArenaOptions(opts);
    if (c.kind !== 'auto') return new Arena(openHandle(c, c.kind));
    let reason = cudaUnusableReason();
    if (reason === undefined) {
      try {
        return new Arena(openHandle(c, 'cuda'));
      } catch (err) {
        if (!(err instanceof KvfError && err.codeName === 'CUDA_UNAVAILABLE')) throw err;
        reason = err.message;
      }
    }
    const arena = new Arena(openHandle(c, 'host'));
    c.log(`kvfabric arena: using host memory (${arena.bytes} bytes) instead of CUDA: ${reason}`);
    return arena;
  }

  get capacity(): number {
    return this.call((h) => h.capacity);
  }
  get used(): number {
    return this.call((h) => h.used);
  }
  get free(): number {
    return this.call((h) => h.free);
  }
  get closed(): boolean {
    return !handles.has(this);
  }

  /** A free block's index; ARENA_FULL when none is free. */
  alloc(): number {
    return this.call((h) => h.alloc());
  }
  /** n blocks, all or nothing (ARENA_FULL and nothing allocated). */
  allocMany(n: number): number[] {
    return this.call((h) => h.allocMany(n));
  }
  /** DOUBLE_FREE when not allocated, OUT_OF_RANGE for an index outside the arena. */
  release(index: number): void {
    this.call((h) => h.release(index));
  }
  isAllocated(index: number): boolean {
    return this.call((h) => h.isAllocated(index));
  }
  /** baseAddress + index * blockBytes (a device pointer for CUDA arenas). */
  addressOf(index: number): bigint {
    return this.call((h) => h.addressOf(index));
  }
  /** Copy src into the block at offset; OUT_OF_RANGE if it would leave the block. */
  write(index: number, offset: number, src: Uint8Array): void {
    this.call((h) => h.write(index, offset, src));
  }
  /** Fill dst from the block at offset; OUT_OF_RANGE if it would leave the block. */
  read(index: number, offset: number, dst: Uint8Array): void {
    this.call((h) => h.read(index, offset, dst));
  }
  /** CRC-32C of [offset, offset+length) in the block; defaults to the rest of the block. */
  checksum(index: number, offset?: number, length?: number): number {
    return this.call((h) => h.checksum(index, offset, length));
  }
  /**
   * CRC-32C of the first lengths[k] bytes of block indices[k], on libuv's thread pool (the event
   * loop stays free while a GiB is verified). Same values as checksum(index, 0, length).
   */
  checksums(blocks: readonly { index: number; length: number }[]): Promise<number[]> {
    if (blocks.length === 0) return Promise.resolve([]);
    const indices = Uint32Array.from(blocks, (b) => b.index);
    const lengths = Float64Array.from(blocks, (b) => b.length);
    return callNativeAsync(async () => [...(await nativeArenaHandle(this).checksumsAsync(indices, lengths))]);
  }
  /**
   * Fault in every page of a host arena now, on a thread-pool thread (MADV_POPULATE_WRITE; bytes
   * are never changed, so it may run while blocks are in use). 'device' for CUDA arenas,
   * 'unsupported' on kernels before 5.14.
   */
  prefault(): Promise<{ method: PrefaultMethod; ms: number }> {
    return callNativeAsync(() => nativeArenaHandle(this).prefault());
  }
  /**
   * Zero-copy Buffer over a host block (undefined for CUDA arenas). The view keeps the memory
   * mapped even after close(), so it never dangles; it does not keep the block allocated.
   */
  hostView(index: number): Buffer | undefined {
    return this.call((h) => h.hostView(index));
  }

  /** Idempotent. The memory is freed once no host view or UCX registration holds it. */
  close(): void {
    const handle = handles.get(this);
    if (!handle) return;
    handles.delete(this);
    callNative(() => handle.close());
  }

  private call<T>(fn: (h: NativeArenaHandle) => T): T {
    return callNative(() => fn(nativeArenaHandle(this)));
  }
}

/** The native handle behind an Arena, for other native calls (UCX registration); CLOSED after close(). */
export function nativeArenaHandle(arena: Arena): NativeArenaHandle {
  const handle = handles.get(arena);
  if (!handle) throw new KvfError('CLOSED', 'arena is closed');
  return handle;
}

// ---- UCX (owned by H2b) ----
//
// One-sided UCX transfers. One ucp context + worker per process, driven by a native progress
// thread that sleeps on the worker's event fd; completions come back through a threadsafe
// function, batched. Raw handles (Native*Handle) throw tagged Errors; the classes below turn them
// into KvfError and are the API the rest of kvfabric uses.

// UCX 1.13's shared-memory transports (posix, sysv) support peer error handling only when these
// are on; every endpoint uses peer error handling, so without them same-host peers would fall back
// to tcp. Set at import, before any UCX context reads its configuration (the addon sets them too).
process.env.UCX_POSIX_ERROR_HANDLING ??= 'y';
process.env.UCX_SYSV_ERROR_HANDLING ??= 'y';

export interface NativeUcxRegionHandle {
  readonly address: bigint;
  readonly length: number;
  readonly memoryType: 'host' | 'cuda';
  packRkey(): Buffer;
  deregister(): void;
}

export interface NativeUcxOp {
  remoteAddress: bigint;
  rkey: number;
  local: Uint8Array;
  localOffset?: number;
  length: number;
}

export interface NativeUcxArenaOp {
  remoteAddress: bigint;
  rkey: number;
  arena: NativeArenaHandle;
  index: number;
  offset: number;
  length: number;
}

/** Per-op outcome from the addon: null when the op succeeded, else [ErrorCodeName, message]. */
export type NativeUcxOpStatus = null | [string, string];

export interface NativeUcxEndpointHandle {
  /** True once the peer failed or an op on this endpoint timed out (the endpoint is unusable). */
  readonly dead: boolean;
  unpackRkey(packed: Uint8Array): number;
  submit(kind: 'get' | 'put', ops: NativeUcxOp[]): Promise<NativeUcxOpStatus[]>;
  submitArena(kind: 'get' | 'put', ops: NativeUcxArenaOp[]): Promise<NativeUcxOpStatus[]>;
  direct(kind: 'get' | 'put', ops: NativeUcxOp[], checksum: boolean): Promise<Uint32Array | undefined>;
  rkeyMapped(rkey: number): boolean;
  close(): void;
}

export interface UcxWorkerInfo {
  /** UCS memory types UCX can register in this process ("host", "cuda", ...). */
  memoryTypes: string[];
  /** 'direct': CUDA arenas are registered and moved by UCX; 'staged': UCX has no CUDA support. */
  cudaPath: 'direct' | 'staged';
  /** The transports option as given, or "env" when UCX_TLS (or UCX's default) decides. */
  transports: string;
  progress: 'event' | 'busy';
  /** Microseconds the progress thread keeps polling after activity before it sleeps. */
  spinUs: number;
  /** Microseconds a small same-host batch's caller waits for it before yielding to the event loop. */
  syncWaitUs: number;
  /** Largest batch (total bytes) the bounded synchronous wait applies to. */
  syncMaxBytes: number;
  /** Arena-block ops (getToArena/putFromArena) moved through host bounce buffers so far. */
  stagedOps: number;
  stagedBytes: number;
  opTimeoutMs: number;
  closed: boolean;
}

export interface NativeUcxWorkerHandle {
  address(): Buffer;
  info(): UcxWorkerInfo;
  registerArena(arena: NativeArenaHandle): NativeUcxRegionHandle;
  registerBuffer(buf: Uint8Array): NativeUcxRegionHandle;
  allocBuffer(bytes: number): { buffer: Buffer; region: NativeUcxRegionHandle };
  allocArena(
    blockBytes: number,
    blockCount: number,
    arenaBytesMax: number,
    populate: boolean,
  ): { arena: NativeArenaHandle; region: NativeUcxRegionHandle; backing: string };
  connect(peerAddress: Uint8Array, timeoutMs?: number): NativeUcxEndpointHandle;
  close(): Promise<void>;
}

export interface NativeBinding {
  NativeUcxWorker: new (opts: {
    transports?: string;
    busy?: boolean;
    spinUs?: number;
    syncWaitUs?: number;
    syncMaxBytes?: number;
    opTimeoutMs?: number;
  }) => NativeUcxWorkerHandle;
}

export interface UcxWorkerOptions {
  /** UCX_TLS-like transport list ("sm,self", "tcp"). @default UCX_TLS from the environment, else UCX's choice */
  transports?: string;
  /** 'event' sleeps on the worker's event fd; 'busy' spins while ops are in flight. @default 'event' */
  progress?: 'event' | 'busy';
  /**
   * Hybrid progress ('event' mode): after any activity the progress thread keeps polling UCX for
   * this many microseconds before it sleeps on the event fd, so pipelined ops and (over tcp) the
   * peer's active-message fragments skip a 20-100 us wakeup. 0 sleeps at once; an idle worker
   * never spins. At most 1e6. @default UCX_SPIN_US_DEFAULT (100)
   */
  spinUs?: number;
  /**
   * Bounded synchronous completion: a batch of at most `syncMaxBytes` to a same-host peer over
   * shared memory is waited for by the calling thread for up to this many microseconds (the
   * progress thread still moves the bytes); when it finishes in time its promise is settled
   * before the call returns, which saves the event-loop wake-up (20-100 us) that otherwise
   * dominates one 1 MiB op (~35 us of copying). The event loop is blocked at most this long per
   * call. 0 turns it off. At most 1e6. @default UCX_SYNC_WAIT_US_DEFAULT
   */
  syncWaitUs?: number;
  /** Largest batch (total bytes) the synchronous wait applies to. @default UCX_SYNC_MAX_BYTES_DEFAULT */
  syncMaxBytes?: number;
  /** Every op settles within this many ms; a timed-out op closes its endpoint. @default 10000 */
  opTimeoutMs?: number;
}

export const UCX_OP_TIMEOUT_MS_DEFAULT = 10_000;
/** Default hybrid-progress window (UcxWorkerOptions.spinUs), in microseconds. */
export const UCX_SPIN_US_DEFAULT = 100;
/** Default bounded synchronous wait (UcxWorkerOptions.syncWaitUs), in microseconds. */
export const UCX_SYNC_WAIT_US_DEFAULT = 200;
/** Default size limit of the synchronous wait (UcxWorkerOptions.syncMaxBytes). */
export const UCX_SYNC_MAX_BYTES_DEFAULT = 2 * 1024 * 1024;

/** Options of UcxWorker.allocArena: a host arena in UCX-allocated memory. */
export interface UcxArenaOptions {
  blockBytes: number;
  blockCount: number;
  /** Touch every page at open (slower open, no first-touch faults later). @default false */
  populate?: boolean;
  /** Refuse arenas larger than this (BAD_REQUEST). @default ARENA_BYTES_MAX_DEFAULT (64 GiB) */
  arenaBytesMax?: number;
}

/** An arena together with its UCX registration (what peers need: region.address, packRkey()). */
export interface RegisteredArena {
  arena: Arena;
  region: MemRegion;
  /**
   * What backs the memory: 'sysv' or 'posix' (shared segments a same-host peer copies from
   * directly), 'anonymous' (UCX fell back to private memory, e.g. UCX_TLS=tcp), or 'cuda'.
   */
  backing: string;
}

/** A registered memory range: its address and packed rkey are what a peer needs to reach it. */
export class MemRegion {
  readonly address: bigint;
  readonly length: number;
  readonly memoryType: 'host' | 'cuda';
  #handle: NativeUcxRegionHandle;

  /** @internal */
  constructor(handle: NativeUcxRegionHandle) {
    this.#handle = handle;
    this.address = handle.address;
    this.length = handle.length;
    this.memoryType = handle.memoryType;
  }
  /** The rkey (and the registered range) as bytes for the peer's Endpoint.unpackRkey. */
  packRkey(): Buffer {
    return callNative(() => this.#handle.packRkey());
  }
  /** Unregisters and drops the reference that kept the memory alive. CLOSED when repeated. */
  deregister(): void {
    callNative(() => this.#handle.deregister());
  }
}

/** Opaque handle from Endpoint.unpackRkey, valid for that endpoint only. */
export interface RemoteKey {
  readonly id: number;
}

export interface TransferOp {
  remoteAddress: bigint;
  rkey: RemoteKey;
  local: Uint8Array;
  /** @default 0 */
  localOffset?: number;
  length: number;
}

export interface OpResult {
  ok: boolean;
  error?: KvfError;
}

/**
 * An op whose local side is a range of an allocated arena block (host or CUDA): what
 * Endpoint.getToArena/putFromArena move.
 */
export interface ArenaTransferOp {
  remoteAddress: bigint;
  rkey: RemoteKey;
  arena: Arena;
  index: number;
  /** Byte offset inside the block. @default 0 */
  offset?: number;
  length: number;
}

/** What directBatch returns: per-op results and, when asked, each op's local CRC-32C. */
export interface DirectResult {
  results: OpResult[];
  /** CRC-32C of each op's local range after the copy (for a get: the bytes received). */
  checksums?: number[];
}

/**
 * Thread-pool tasks one direct batch is split into: no more than libuv's pool has threads
 * (UV_THREADPOOL_SIZE, default 4) nor the host has cores (more only adds switching).
 */
const DIRECT_TASKS_MAX = Math.max(
  1,
  Math.min(Number(process.env['UV_THREADPOOL_SIZE'] ?? 4), availableParallelism()),
);

function toNativeOp(op: TransferOp): NativeUcxOp {
  return {
    remoteAddress: op.remoteAddress,
    rkey: op.rkey.id,
    local: op.local,
    localOffset: op.localOffset ?? 0,
    length: op.length,
  };
}

function toResults(statuses: readonly NativeUcxOpStatus[]): OpResult[] {
  return statuses.map((s) => {
    const error = statusError(s);
    return error ? { ok: false, error } : { ok: true };
  });
}

function statusError(status: NativeUcxOpStatus): KvfError | undefined {
  if (status === null) return undefined;
  const [code, message] = status;
  const codeName = Object.hasOwn(ErrorCode, code) ? (code as ErrorCodeName) : 'INTERNAL';
  return new KvfError(codeName, message);
}

/**
 * A connection to one peer worker, with peer error handling: when the peer dies, pending ops
 * reject with PEER_UNREACHABLE (or TIMEOUT after opTimeoutMs) and later ops reject at once.
 */
export class Endpoint {
  #handle: NativeUcxEndpointHandle;
  #closed = false;
  #pending = new Set<Promise<unknown>>();

  /** @internal */
  constructor(handle: NativeUcxEndpointHandle) {
    this.#handle = handle;
  }

  /** True once the peer failed or an op timed out; reconnect to continue. */
  get dead(): boolean {
    return this.#handle.dead;
  }

  /** BAD_REQUEST for bytes that are not a packed rkey from MemRegion.packRkey. */
  unpackRkey(packed: Uint8Array): RemoteKey {
    this.#checkOpen();
    return { id: callNative(() => this.#handle.unpackRkey(packed)) };
  }

  /** remote -> local. */
  async get(op: TransferOp): Promise<void> {
    const [status] = await this.#submit('get', [op]);
    const err = statusError(status ?? null);
    if (err) throw err;
  }

  /** local -> remote; resolves once the data is visible to the peer (the endpoint is flushed). */
  async put(op: TransferOp): Promise<void> {
    const [status] = await this.#submit('put', [op]);
    const err = statusError(status ?? null);
    if (err) throw err;
  }

  /** All ops in flight at once; resolves once with one result per op, in order. */
  async getBatch(ops: TransferOp[]): Promise<OpResult[]> {
    return this.#batch('get', ops);
  }

  /** All ops in flight, then one flush: every ok result is visible to the peer. */
  async putBatch(ops: TransferOp[]): Promise<OpResult[]> {
    return this.#batch('put', ops);
  }

  /**
   * remote -> arena blocks. Host blocks, and CUDA blocks when UCX can register CUDA memory
   * (UcxWorkerInfo.cudaPath 'direct'), are written by UCX directly; CUDA blocks this UCX cannot
   * reach ('staged') land in a page-locked bounce buffer and are copied to the device before this
   * resolves. One result per op, like getBatch; a failed op leaves its block's bytes undefined.
   */
  async getToArena(ops: ArenaTransferOp[]): Promise<OpResult[]> {
    return this.#arenaBatch('get', ops);
  }

  /** arena blocks -> remote, staged through a bounce buffer the same way; visible when resolved. */
  async putFromArena(ops: ArenaTransferOp[]): Promise<OpResult[]> {
    return this.#arenaBatch('put', ops);
  }

  /**
   * Whether the peer's memory behind `rkey` is mapped into this process by UCX (ucp_rkey_ptr:
   * a same-host peer over shared memory), so directBatch can move it.
   */
  mapped(rkey: RemoteKey): boolean {
    this.#checkOpen();
    return callNative(() => this.#handle.rkeyMapped(rkey.id));
  }

  /**
   * The ops moved by thread-pool threads through the peer's memory as UCX mapped it (every rkey
   * must be `mapped`): the one-sided transfer of a shared-memory transport done by memcpy on
   * several threads instead of one progress thread, with the CRC-32C of each op's local range
   * computed right after its copy when `checksum` is set. A dead peer fails every op
   * (PEER_UNREACHABLE) like getBatch/putBatch; a bad op rejects (BAD_REQUEST, OUT_OF_RANGE).
   * For puts the bytes are visible to the peer when this resolves (same-host cache coherence).
   */
  async directBatch(kind: 'get' | 'put', ops: TransferOp[], checksum = false): Promise<DirectResult> {
    if (ops.length === 0) return { results: [], ...(checksum ? { checksums: [] } : {}) };
    const native = ops.map(toNativeOp);
    const parts = splitByBytes(native, Math.min(DIRECT_TASKS_MAX, native.length));
    let p: Promise<(Uint32Array | undefined)[]>;
    try {
      this.#checkOpen();
      p = Promise.all(parts.map((part) => callNative(() => this.#handle.direct(kind, part, checksum))));
    } catch (err) {
      throw fromNativeError(err);
    }
    this.#pending.add(p);
    try {
      const crcs = await p;
      return {
        results: ops.map(() => ({ ok: true })),
        ...(checksum ? { checksums: crcs.flatMap((c) => [...(c ?? [])]) } : {}),
      };
    } catch (err) {
      const e = fromNativeError(err);
      if (e.codeName !== 'PEER_UNREACHABLE') throw e;
      return { results: ops.map(() => ({ ok: false, error: e })) };
    } finally {
      this.#pending.delete(p);
    }
  }

  /** Waits for in-flight ops to settle, then closes; later ops reject with CLOSED. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#pending]);
    callNative(() => this.#handle.close());
  }

  async #batch(kind: 'get' | 'put', ops: TransferOp[]): Promise<OpResult[]> {
    if (ops.length === 0) return [];
    return toResults(await this.#submit(kind, ops));
  }

  async #arenaBatch(kind: 'get' | 'put', ops: ArenaTransferOp[]): Promise<OpResult[]> {
    if (ops.length === 0) return [];
    const native = ops.map((op) => ({
      remoteAddress: op.remoteAddress,
      rkey: op.rkey.id,
      arena: nativeArenaHandle(op.arena),
      index: op.index,
      offset: op.offset ?? 0,
      length: op.length,
    }));
    return toResults(await this.#track(() => this.#handle.submitArena(kind, native)));
  }

  #submit(kind: 'get' | 'put', ops: TransferOp[]): Promise<NativeUcxOpStatus[]> {
    return this.#track(() => this.#handle.submit(kind, ops.map(toNativeOp)));
  }

  #track(start: () => Promise<NativeUcxOpStatus[]>): Promise<NativeUcxOpStatus[]> {
    let p: Promise<NativeUcxOpStatus[]>;
    try {
      this.#checkOpen();
      p = callNative(start);
    } catch (err) {
      return Promise.reject(fromNativeError(err));
    }
    this.#pending.add(p);
    const done = (): void => {
      this.#pending.delete(p);
    };
    p.then(done, done);
    return p;
  }

  #checkOpen(): void {
    if (this.#closed) throw new KvfError('CLOSED', 'endpoint is closed');
  }
}

/**
 * The process's UCX worker. Only one may be open per process: create() while one is open throws
 * BAD_REQUEST; after close() a new one may be created.
 */
export class UcxWorker {
  #handle: NativeUcxWorkerHandle;

  private constructor(handle: NativeUcxWorkerHandle) {
    this.#handle = handle;
  }

  static create(opts: UcxWorkerOptions = {}): UcxWorker {
    const opTimeoutMs = opts.opTimeoutMs ?? UCX_OP_TIMEOUT_MS_DEFAULT;
    if (!Number.isSafeInteger(opTimeoutMs) || opTimeoutMs <= 0) {
      throw new KvfError('BAD_REQUEST', `opTimeoutMs must be a positive integer, got ${opTimeoutMs}`);
    }
    const progress = opts.progress ?? 'event';
    if (progress !== 'event' && progress !== 'busy') {
      throw new KvfError('BAD_REQUEST', `progress must be 'event' or 'busy', got ${String(progress)}`);
    }
    const spinUs = opts.spinUs ?? UCX_SPIN_US_DEFAULT;
    if (!Number.isSafeInteger(spinUs) || spinUs < 0 || spinUs > 1e6) {
      throw new KvfError('BAD_REQUEST', `spinUs must be an integer in [0, 1e6], got ${spinUs}`);
    }
    const syncWaitUs = opts.syncWaitUs ?? UCX_SYNC_WAIT_US_DEFAULT;
    if (!Number.isSafeInteger(syncWaitUs) || syncWaitUs < 0 || syncWaitUs > 1e6) {
      throw new KvfError('BAD_REQUEST', `syncWaitUs must be an integer in [0, 1e6], got ${syncWaitUs}`);
    }
    const syncMaxBytes = opts.syncMaxBytes ?? UCX_SYNC_MAX_BYTES_DEFAULT;
    if (!Number.isSafeInteger(syncMaxBytes) || syncMaxBytes < 0) {
      throw new KvfError('BAD_REQUEST', `syncMaxBytes must be a non-negative integer, got ${syncMaxBytes}`);
    }
    const { NativeUcxWorker } = loadNative();
    const nativeOpts = {
      busy: progress === 'busy',
      spinUs,
      syncWaitUs,
      syncMaxBytes,
      opTimeoutMs,
      ...(opts.transports ? { transports: opts.transports } : {}),
    };
    return new UcxWorker(callNative(() => new NativeUcxWorker(nativeOpts)));
  }

  /** This worker's address (enveloped), to publish to peers. */
  address(): Buffer {
    return callNative(() => this.#handle.address());
  }

  info(): UcxWorkerInfo {
    return callNative(() => this.#handle.info());
  }

  /** Registers the arena's whole range (host or CUDA); the arena memory stays mapped while registered. */
  registerArena(arena: Arena): MemRegion {
    return new MemRegion(callNative(() => this.#handle.registerArena(nativeArenaHandle(arena))));
  }

  /** Registers a client-side buffer; it is kept alive until deregister(). */
  registerBuffer(buf: Uint8Array): MemRegion {
    return new MemRegion(callNative(() => this.#handle.registerBuffer(buf)));
  }

  /**
   * UCX-allocated memory (ucp_mem_map; shared memory when shm transports are on) as a Buffer with
   * no copy. Unmapped once the region is deregistered and the Buffer is garbage collected.
   */
  allocBuffer(bytes: number): { buffer: Buffer; region: MemRegion } {
    const { buffer, region } = callNative(() => this.#handle.allocBuffer(bytes));
    return { buffer, region: new MemRegion(region) };
  }

  /**
   * A host Arena whose memory UCX allocated (ucp_mem_map ALLOCATE), already registered. Over
   * shared memory UCX 1.13 reaches only such memory one-sided at copy speed; a plain Arena
   * registered with registerArena is served through active-message emulation (0.2-1.5 GB/s). The
   * Arena behaves exactly like Arena.open's (same class, errors, close()); the memory is freed
   * once the arena is closed, the region deregistered and every host view collected.
   */
  allocArena(opts: UcxArenaOptions): RegisteredArena {
    const blockBytes = positiveInteger('blockBytes', opts.blockBytes);
    const blockCount = positiveInteger('blockCount', opts.blockCount);
    const max = positiveInteger('arenaBytesMax', opts.arenaBytesMax ?? ARENA_BYTES_MAX_DEFAULT);
    if (blockBytes * blockCount > max) {
      throw new KvfError(
        'BAD_REQUEST',
        `arena of ${blockCount} x ${blockBytes} bytes exceeds arenaBytesMax (${max})`,
      );
    }
    const r = callNative(() => this.#handle.allocArena(blockBytes, blockCount, max, opts.populate ?? false));
    return { arena: wrapArenaHandle(r.arena), region: new MemRegion(r.region), backing: r.backing };
  }

  /**
   * Arena.open's kinds, registered: 'host' (and 'auto' without a usable GPU, logged once like
   * Arena.open) is allocArena; 'cuda' is Arena.open + registerArena. What a shard node serves.
   */
  openArena(opts: ArenaOptions): RegisteredArena {
    const c = compileArenaOptions(opts);
    let noCuda = c.kind === 'auto' ? cudaUnusableReason() : undefined;
    // A GPU, but a UCX build without CUDA support (Debian's libucx0): peers could not reach device
    // memory one-sided, so 'auto' serves from host memory and says why ('cuda' fails at register).
    if (c.kind === 'auto' && noCuda === undefined && this.info().cudaPath !== 'direct') {
      noCuda = `this UCX build cannot register CUDA memory (memory types: ${this.info().memoryTypes.join(', ')}); staging device blocks through host buffers is not implemented`;
    }
    if (c.kind === 'cuda' || (c.kind === 'auto' && noCuda === undefined)) {
      const arena = Arena.open(opts);
      if (arena.kind === 'cuda') return this.#registered(arena, 'cuda');
      arena.close(); // 'auto' fell back to host (and logged it): UCX-allocated host memory instead
    } else if (c.kind === 'auto') {
      c.log(
        `kvfabric arena: using host memory (${c.blockBytes * c.blockCount} bytes) instead of CUDA: ${noCuda}`,
      );
    }
    return this.allocArena(c);
  }

  #registered(arena: Arena, backing: string): RegisteredArena {
    try {
      return { arena, region: this.registerArena(arena), backing };
    } catch (err) {
      arena.close();
      throw err;
    }
  }

  /**
   * Endpoint to a peer's address (from its UcxWorker.address()). UCX connects lazily, so this does
   * not wait for the peer; timeoutMs bounds each op on the endpoint (default: opTimeoutMs).
   */
  connect(peerAddress: Uint8Array, opts: { timeoutMs?: number } = {}): Endpoint {
    return new Endpoint(callNative(() => this.#handle.connect(peerAddress, opts.timeoutMs)));
  }

  /** Fails in-flight ops with CLOSED, closes every endpoint, destroys the worker. Idempotent. */
  async close(): Promise<void> {
    await this.#handle.close();
  }
}

// ---- shared memory and CUDA IPC (owned by the agent task, native/src/shm.cc) ----
//
// The local agent (services/agent) maps a /dev/shm file that the engine maps too, and registers
// the mapping with UCX so gets land in it directly. The CUDA IPC functions are the compiled path
// for engines that hand over device buffers; without CUDA or a device they throw CUDA_UNAVAILABLE.

export interface NativeBinding {
  mapSharedFile(path: string, bytes: number): Buffer;
  openCudaIpcHandle(handle: Uint8Array, deviceId: number): bigint;
  closeCudaIpcHandle(address: bigint): void;
}

/**
 * A MAP_SHARED mapping of the first `bytes` bytes of an existing file (at least that long: else
 * OUT_OF_RANGE). Unmapped when the Buffer and all its views are garbage collected.
 */
export function mapSharedFile(path: string, bytes: number): Buffer {
  return callNative(() => loadNative().mapSharedFile(path, bytes));
}

/** Opens a peer process's cudaIpcMemHandle_t (64 bytes); CUDA_UNAVAILABLE without CUDA or a device. */
export function openCudaIpcHandle(handle: Uint8Array, deviceId = 0): bigint {
  return callNative(() => loadNative().openCudaIpcHandle(handle, deviceId));
}

export function closeCudaIpcHandle(address: bigint): void {
  callNative(() => loadNative().closeCudaIpcHandle(address));
}

// Arenas in UCX-allocated memory (UcxWorker.allocArena / openArena): the arena a shard node
// serves. Every Arena method on that backing, its close semantics, and a peer process moving its
// bytes by get and put over shared memory and tcp, checked byte for byte.
import { randomFillSync } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  Arena,
  crc32c,
  nativeInfo,
  UcxWorker,
  UCX_SPIN_US_DEFAULT,
  type ArenaTransferOp,
  type Endpoint,
  type RegisteredArena,
  type RemoteKey,
  type TransferOp,
} from '../../native/index.js';
import { isKvfError, type ErrorCodeName } from '../../shared/errors.js';
import type { PeerProcess } from '../../services/cli/commands/transfer-peer.js';
import { MiB, TRANSPORTS, spawnPeer } from './helpers/ucx-pair.js';

function expectCode(fn: () => unknown, code: ErrorCodeName): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(isKvfError(caught), `expected KvfError ${code}, got ${String(caught)}`).toBe(true);
  expect((caught as { codeName: string }).codeName).toBe(code);
}

function random(bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  randomFillSync(b);
  return b;
}

describe('UCX-allocated arena in this process', () => {
  let worker: UcxWorker;
  beforeAll(() => {
    worker = UcxWorker.create({ transports: 'sm,self' });
  });
  afterAll(async () => {
    await worker?.close();
  });

  it('defaults to hybrid progress and validates spinUs', () => {
    expect(worker.info().spinUs).toBe(UCX_SPIN_US_DEFAULT);
    expectCode(() => UcxWorker.create({ spinUs: -1 }), 'BAD_REQUEST');
    expectCode(() => UcxWorker.create({ spinUs: 1.5 }), 'BAD_REQUEST');
  });

  it('is shared memory, registered over its whole range, and supports every Arena method', () => {
    const blockBytes = 256 * 1024;
    const { arena, region, backing } = worker.allocArena({ blockBytes, blockCount: 8 });
    try {
      // sm transports allocate a sysv or posix segment: the memory a peer copies from directly.
      expect(['sysv', 'posix']).toContain(backing);
      expect(arena.kind).toBe('host');
      expect(arena.deviceId).toBe(-1);
      expect([arena.blockBytes, arena.blockCount, arena.bytes]).toEqual([blockBytes, 8, 8 * blockBytes]);
      expect(region.address).toBe(arena.baseAddress);
      expect(region.length).toBe(arena.bytes);
      expect(region.packRkey().length).toBeGreaterThan(32);
      expect([arena.capacity, arena.used, arena.free]).toEqual([8, 0, 8]);

      const a = arena.alloc();
      const many = arena.allocMany(6);
      expect(new Set([a, ...many]).size).toBe(7);
      expect(arena.isAllocated(a)).toBe(true);
      expect([arena.used, arena.free]).toEqual([7, 1]);
      expectCode(() => arena.allocMany(2), 'ARENA_FULL');
      expect(arena.used).toBe(7); // all or nothing
      const last = arena.alloc();
      expectCode(() => arena.alloc(), 'ARENA_FULL');
      arena.release(last);
      expectCode(() => arena.release(last), 'DOUBLE_FREE');
      expectCode(() => arena.isAllocated(8), 'OUT_OF_RANGE');
      expect(arena.addressOf(3)).toBe(arena.baseAddress + 3n * BigInt(blockBytes));
      expectCode(() => arena.addressOf(8), 'OUT_OF_RANGE');

      const data = random(blockBytes);
      arena.write(a, 0, data);
      const back = Buffer.alloc(blockBytes);
      arena.read(a, 0, back);
      expect(back.equals(data)).toBe(true);
      expect(arena.checksum(a)).toBe(crc32c(data));
      expect(arena.checksum(a, 100, 1000)).toBe(crc32c(data.subarray(100, 1100)));
      expectCode(() => arena.write(a, blockBytes - 1, new Uint8Array(2)), 'OUT_OF_RANGE');
      expectCode(() => arena.read(a, 0, new Uint8Array(blockBytes + 1)), 'OUT_OF_RANGE');
      const view = arena.hostView(a) as Buffer;
      expect(view.length).toBe(blockBytes);
      expect(view.equals(data)).toBe(true);
      view[0] = (view[0] ?? 0) ^ 0xff; // the view is the arena's memory, not a copy
      expect(arena.checksum(a)).not.toBe(crc32c(data));
    } finally {
      arena.close();
      region.deregister();
    }
  });

  it('closes like Arena: CLOSED afterwards, views and the registration keep the memory alive', () => {
    const { arena, region } = worker.allocArena({ blockBytes: 4096, blockCount: 4 });
    const data = random(4096);
    arena.write(2, 0, data);
    const view = arena.hostView(2) as Buffer;
    arena.close();
    arena.close(); // idempotent
    expect(arena.closed).toBe(true);
    expect(arena.blockBytes).toBe(4096); // descriptive fields stay readable
    for (const call of [
      () => arena.alloc(),
      () => arena.allocMany(1),
      () => arena.release(0),
      () => arena.isAllocated(0),
      () => arena.addressOf(0),
      () => arena.write(0, 0, new Uint8Array(1)),
      () => arena.read(0, 0, new Uint8Array(1)),
      () => arena.checksum(0),
      () => arena.hostView(0),
      () => arena.capacity,
      () => arena.used,
      () => arena.free,
      () => worker.registerArena(arena),
    ]) {
      expectCode(call, 'CLOSED');
    }
    // Still registered (a peer may be mid-get): the rkey packs and the view reads the bytes.
    expect(region.packRkey().length).toBeGreaterThan(32);
    expect(view.equals(data)).toBe(true);
    region.deregister();
    expectCode(() => region.deregister(), 'CLOSED');
    expect(view.equals(data)).toBe(true); // the view alone still holds the memory
  });

  it('rejects bad sizes like Arena.open', () => {
    expectCode(() => worker.allocArena({ blockBytes: 0, blockCount: 1 }), 'BAD_REQUEST');
    expectCode(() => worker.allocArena({ blockBytes: 4096, blockCount: -1 }), 'BAD_REQUEST');
    expectCode(
      () => worker.allocArena({ blockBytes: MiB, blockCount: 4, arenaBytesMax: 2 * MiB }),
      'BAD_REQUEST',
    );
  });

  it("openArena: 'host' and 'auto' without a GPU give a UCX-allocated arena; 'cuda' needs a device", () => {
    const host = worker.openArena({ kind: 'host', blockBytes: 8192, blockCount: 2 });
    expect(['sysv', 'posix']).toContain(host.backing);
    host.arena.close();
    host.region.deregister();
    if (nativeInfo().cudaDevices > 0) return; // on a GPU machine 'auto' and 'cuda' pick the device
    const lines: string[] = [];
    const auto = worker.openArena({
      kind: 'auto',
      blockBytes: 8192,
      blockCount: 2,
      log: (l) => lines.push(l),
    });
    expect(auto.arena.kind).toBe('host');
    expect(['sysv', 'posix']).toContain(auto.backing);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/using host memory .* instead of CUDA/);
    auto.arena.close();
    auto.region.deregister();
    expectCode(() => worker.openArena({ kind: 'cuda', blockBytes: 8192, blockCount: 2 }), 'CUDA_UNAVAILABLE');
  });
});

// The server is a peer process serving a UCX-allocated arena (the shard node's path); this
// process's side is a UCX-allocated arena too, its blocks used as local buffers through hostView.
const ARENA_BYTES = 64 * MiB;
const cases = [
  { transport: 'sm' as const, spinUs: undefined },
  { transport: 'tcp' as const, spinUs: '0' }, // pure event mode on the peer: no spin at all
];
for (const { transport, spinUs } of cases) {
  describe(`a peer's UCX-allocated arena over ${transport}`, () => {
    let server: PeerProcess;
    let worker: UcxWorker;
    let ep: Endpoint;
    let mine: RegisteredArena;
    let remote: Record<string, unknown>;
    let rkey: RemoteKey;
    const envBefore = process.env.UCX_NET_DEVICES;

    beforeAll(async () => {
      server = spawnPeer({ ...TRANSPORTS[transport], ...(spinUs ? { KVF_PEER_SPIN_US: spinUs } : {}) });
      if (transport === 'tcp') process.env.UCX_NET_DEVICES = 'lo';
      worker = UcxWorker.create({ transports: TRANSPORTS[transport].UCX_TLS });
      remote = await server.request('alloc', { bytes: ARENA_BYTES, mode: 'arena', fill: true });
      const hello = await server.request('hello');
      ep = worker.connect(Buffer.from(String(hello.address), 'base64'));
      rkey = ep.unpackRkey(Buffer.from(String(remote.rkey), 'base64'));
      mine = worker.allocArena({ blockBytes: MiB, blockCount: ARENA_BYTES / MiB });
    });
    afterAll(async () => {
      mine?.arena.close();
      mine?.region.deregister();
      await worker?.close();
      await server?.stop();
      if (envBefore === undefined) delete process.env.UCX_NET_DEVICES;
      else process.env.UCX_NET_DEVICES = envBefore;
    });

    function ops(): TransferOp[] {
      return Array.from({ length: mine.arena.blockCount }, (_, i) => ({
        remoteAddress: BigInt(String(remote.address)) + BigInt(i * MiB),
        rkey,
        local: mine.arena.hostView(i) as Buffer,
        length: MiB,
      }));
    }

    async function localCrc(): Promise<number> {
      let crc = 0;
      for (let i = 0; i < mine.arena.blockCount; i++) crc = crc32c(mine.arena.hostView(i) as Buffer, crc);
      return crc;
    }

    it('get: every block byte-exact, batched and single', async () => {
      if (transport === 'sm') expect(['sysv', 'posix']).toContain(remote.backing);
      const all = ops();
      for (let i = 0; i < all.length; i += 16) {
        const results = await ep.getBatch(all.slice(i, i + 16));
        expect(results.every((r) => r.ok)).toBe(true);
      }
      const { crc } = await server.request('crc', { region: remote.region });
      expect(await localCrc()).toBe(crc);
      mine.arena.write(0, 0, new Uint8Array(MiB)); // zero it, then one single get restores it
      await ep.get(all[0] as TransferOp);
      expect(await localCrc()).toBe(crc);
    });

    it('put: fresh bytes from this arena land byte-exact in the peer arena', async () => {
      for (let i = 0; i < mine.arena.blockCount; i++) mine.arena.write(i, 0, random(MiB));
      const results = await ep.putBatch(ops());
      expect(results.every((r) => r.ok)).toBe(true);
      const { crc } = await server.request('crc', { region: remote.region });
      expect(crc).toBe(await localCrc());
    });

    it('arena blocks: getToArena/putFromArena byte-exact, by UCX directly and staged through bounce buffers', async () => {
      const n = mine.arena.blockCount;
      const blocks = mine.arena.allocMany(n);
      const arenaOps = (): ArenaTransferOp[] =>
        blocks.map((index, i) => ({
          remoteAddress: BigInt(String(remote.address)) + BigInt(i * MiB),
          rkey,
          arena: mine.arena,
          index,
          length: MiB,
        }));
      try {
        for (const staged of [false, true]) {
          // The debug hook stages host blocks exactly as CUDA blocks are staged without UCX CUDA
          // support (cudaMemcpy replaced by memcpy), so the staging path runs without a GPU.
          if (staged) process.env.KVF_DEBUG_STAGE_HOST_ARENAS = '1';
          else delete process.env.KVF_DEBUG_STAGE_HOST_ARENAS;
          const before = worker.info().stagedOps;
          for (const i of blocks) mine.arena.write(i, 0, random(MiB));
          const want = await localCrc();
          for (let k = 0; k < n; k += 16) {
            const r = await ep.putFromArena(arenaOps().slice(k, k + 16));
            expect(r.every((x) => x.ok)).toBe(true);
          }
          expect((await server.request('crc', { region: remote.region })).crc).toBe(want);
          for (const i of blocks) mine.arena.write(i, 0, new Uint8Array(MiB));
          for (let k = 0; k < n; k += 16) {
            const r = await ep.getToArena(arenaOps().slice(k, k + 16));
            expect(r.every((x) => x.ok)).toBe(true);
          }
          expect(await localCrc()).toBe(want);
          // A sub-range of a block: only those bytes move.
          mine.arena.write(blocks[0]!, 0, new Uint8Array(MiB));
          const [first] = arenaOps();
          expect(
            (
              await ep.getToArena([
                { ...first!, offset: 4096, remoteAddress: first!.remoteAddress + 4096n, length: 8192 },
              ])
            )[0]!.ok,
          ).toBe(true);
          const view = mine.arena.hostView(blocks[0]!) as Buffer;
          expect(view.subarray(0, 4096).every((b) => b === 0)).toBe(true);
          expect(view.subarray(12288).every((b) => b === 0)).toBe(true);
          expect(view.subarray(4096, 12288).some((b) => b !== 0)).toBe(true);
          expect(worker.info().stagedOps - before).toBe(staged ? 2 * n + 1 : 0);
        }
        // Bad ops reject before anything moves.
        const [first] = arenaOps();
        mine.arena.release(blocks[1]!);
        await expect(ep.getToArena([{ ...first!, index: blocks[1]! }])).rejects.toMatchObject({
          codeName: 'BAD_REQUEST',
        });
        await expect(ep.getToArena([{ ...first!, offset: 1, length: MiB }])).rejects.toMatchObject({
          codeName: 'OUT_OF_RANGE',
        });
        await expect(ep.getToArena([{ ...first!, index: n }])).rejects.toMatchObject({
          codeName: 'OUT_OF_RANGE',
        });
        await expect(
          ep.putFromArena([{ ...first!, remoteAddress: first!.remoteAddress + BigInt(ARENA_BYTES) }]),
        ).rejects.toMatchObject({ codeName: 'OUT_OF_RANGE' });
        const closed = Arena.open({ kind: 'host', blockBytes: MiB, blockCount: 1 });
        const ci = closed.alloc();
        closed.close();
        await expect(ep.getToArena([{ ...first!, arena: closed, index: ci }])).rejects.toMatchObject({
          codeName: 'CLOSED',
        });
        mine.arena.alloc(); // block 1 again, so the release below covers every block
      } finally {
        delete process.env.KVF_DEBUG_STAGE_HOST_ARENAS;
        for (const i of blocks) if (mine.arena.isAllocated(i)) mine.arena.release(i);
      }
    });

    // Runs where a GPU is (reported as skipped elsewhere): device blocks move byte-exact, straight
    // through UCX when it can register CUDA memory, else through the pinned bounce buffers.
    it.skipIf(nativeInfo().cudaDevices === 0 || transport !== 'sm')(
      'a CUDA arena block moves byte-exact by getToArena/putFromArena (GPU only)',
      async () => {
        const dev = Arena.open({ kind: 'cuda', blockBytes: MiB, blockCount: 4 });
        try {
          const staged = worker.info().cudaPath === 'staged';
          const before = worker.info().stagedOps;
          const idx = dev.allocMany(4);
          const src = random(4 * MiB);
          idx.forEach((b, k) => dev.write(b, 0, src.subarray(k * MiB, (k + 1) * MiB)));
          const devOps = idx.map((index, k) => ({
            remoteAddress: BigInt(String(remote.address)) + BigInt(k * MiB),
            rkey,
            arena: dev,
            index,
            length: MiB,
          }));
          expect((await ep.putFromArena(devOps)).every((r) => r.ok)).toBe(true);
          const back = Buffer.alloc(4 * MiB);
          await ep.get({ remoteAddress: BigInt(String(remote.address)), rkey, local: back, length: 4 * MiB });
          expect(crc32c(back)).toBe(crc32c(src));
          idx.forEach((b) => dev.write(b, 0, new Uint8Array(MiB)));
          expect((await ep.getToArena(devOps)).every((r) => r.ok)).toBe(true);
          idx.forEach((b, k) => expect(dev.checksum(b)).toBe(crc32c(src.subarray(k * MiB, (k + 1) * MiB))));
          expect(worker.info().stagedOps - before).toBe(staged ? 8 : 0);
        } finally {
          dev.close();
        }
      },
    );

    it('direct: mapped over shared memory only; gets and puts byte-exact, with per-block CRCs', async () => {
      expect(ep.mapped(rkey)).toBe(transport === 'sm');
      if (transport !== 'sm') {
        // No mapping over tcp: directBatch refuses (the SDK uses getBatch/putBatch there).
        await expect(ep.directBatch('get', ops().slice(0, 1))).rejects.toMatchObject({
          codeName: 'BAD_REQUEST',
        });
        return;
      }
      // put fresh bytes directly, check them on the peer; zero ours; get them back directly.
      for (let i = 0; i < mine.arena.blockCount; i++) mine.arena.write(i, 0, random(MiB));
      const want = await localCrc();
      const put = await ep.directBatch('put', ops());
      expect(put.results.every((r) => r.ok)).toBe(true);
      expect(put.checksums).toBeUndefined();
      expect((await server.request('crc', { region: remote.region })).crc).toBe(want);
      for (let i = 0; i < mine.arena.blockCount; i++) mine.arena.write(i, 0, new Uint8Array(MiB));
      const got = await ep.directBatch('get', ops(), true);
      expect(got.results.every((r) => r.ok)).toBe(true);
      expect(await localCrc()).toBe(want);
      expect(got.checksums).toEqual(
        Array.from({ length: mine.arena.blockCount }, (_, i) => crc32c(mine.arena.hostView(i) as Buffer)),
      );
      // Bad ops reject before anything moves.
      const [first] = ops();
      await expect(
        ep.directBatch('get', [{ ...first!, remoteAddress: first!.remoteAddress + BigInt(ARENA_BYTES) }]),
      ).rejects.toMatchObject({ codeName: 'OUT_OF_RANGE' });
      await expect(ep.directBatch('get', [{ ...first!, length: MiB + 1 }])).rejects.toMatchObject({
        codeName: 'OUT_OF_RANGE',
      });
    });
  });
}

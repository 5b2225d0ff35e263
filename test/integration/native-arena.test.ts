// Arenas, the block allocator and checksums against the real addon (npm run build:native first).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { isKvfError, type ErrorCodeName } from '../../shared/errors.js';
import {
  Arena,
  callNative,
  crc32c,
  crc32cRange,
  crc32cRanges,
  loadAddonFile,
  loadNative,
  memcpyBench,
  nativeInfo,
  packageRoot,
} from '../../native/index.js';

// ---- helpers --------------------------------------------------------------------------------

/** mulberry32: small, seedable, good enough to drive a randomized test reproducibly. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(rand: () => number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * 256);
  return out;
}

/** Reference CRC-32C: byte-at-a-time with a table built from the reflected polynomial. */
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32cRef(data: Uint8Array, seed = 0): number {
  let crc = ~seed >>> 0;
  for (const byte of data) crc = (CRC_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8)) >>> 0;
  return ~crc >>> 0;
}

function expectCode(fn: () => unknown, code: ErrorCodeName): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown, `expected KvfError ${code}`).toBeDefined();
  expect(isKvfError(thrown) ? thrown.codeName : thrown).toBe(code);
}

const cpuHasSse42 = readFileSync('/proc/cpuinfo', 'utf8').includes(' sse4_2');
const nvccPresent = existsSync('/usr/local/cuda/bin/nvcc') || existsSync('/usr/local/bin/nvcc');
// The NVIDIA driver's control device exists only where a driver (and so possibly a GPU) is.
const gpuPresent = existsSync('/dev/nvidiactl');

const open: Arena[] = [];
function openArena(opts: Parameters<typeof Arena.open>[0]): Arena {
  const arena = Arena.open(opts);
  open.push(arena);
  return arena;
}
afterEach(() => {
  for (const a of open.splice(0)) a.close();
});

// ---- tests ----------------------------------------------------------------------------------

describe('native addon', () => {
  it('reports its build and runtime facts', () => {
    const info = nativeInfo();
    expect(info.napiVersion).toBe(8);
    expect(info.addonVersion).toBe(
      (JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string })
        .version,
    );
    expect(info.ucxVersion).toMatch(/^\d+\.\d+\.\d+/);
    expect(info.cudaCompiled).toBe(nvccPresent);
    expect(info.crc32c).toBe(cpuHasSse42 ? 'sse4.2' : 'software');
    if (!gpuPresent) {
      expect(info.cudaDevices).toBe(0);
      expect(info.cudaError).toMatch(/cudaGetDeviceCount/);
    } else {
      expect(info.cudaDevices).toBeGreaterThan(0);
    }
  });

  it('fails to load a missing or broken addon with NATIVE_UNAVAILABLE and the reason', () => {
    expectCode(() => loadAddonFile('/nonexistent/kvfabric_native.node'), 'NATIVE_UNAVAILABLE');
    const dir = mkdtempSync(path.join(tmpdir(), 'kvf-native-'));
    try {
      const bogus = path.join(dir, 'bogus.node');
      writeFileSync(bogus, 'not an ELF file');
      expect(() => loadAddonFile(bogus)).toThrow(
        /cannot load native addon .*bogus\.node: .*(ELF|header|short)/,
      );
      expectCode(() => loadAddonFile(bogus), 'NATIVE_UNAVAILABLE');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expectCode(() => packageRoot('/'), 'NATIVE_UNAVAILABLE');
  });

  it('measures memcpy bandwidth', () => {
    const { gbps } = memcpyBench(1 << 20, 8);
    expect(Number.isFinite(gbps) && gbps > 0.1).toBe(true);
    expectCode(() => memcpyBench(0, 1), 'BAD_REQUEST');
    expectCode(() => memcpyBench(2 ** 40, 1), 'BAD_REQUEST');
  });
});

describe('crc32c', () => {
  it('matches the standard test vectors', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    // RFC 3720 (iSCSI) appendix B.4 vectors.
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
  });

  it('matches a JS reference on random buffers, offsets and lengths, hardware and software', () => {
    const seed = Number(process.env.KVF_TEST_SEED ?? Date.now() % 2 ** 31);
    const rand = prng(seed);
    // Large enough for the 3 x 8192-byte interleaved path, with unaligned starts and tails.
    const buf = randomBytes(rand, 300_000);
    const soft = loadNative().crc32cSoftware;
    try {
      for (let i = 0; i < 60; i++) {
        const offset = Math.floor(rand() * 4096);
        const length = Math.floor(rand() * (buf.length - offset));
        const slice = buf.subarray(offset, offset + length);
        const want = crc32cRef(slice);
        expect(crc32cRange(buf, offset, length)).toBe(want);
        expect(crc32c(slice)).toBe(want);
        expect(soft(slice)).toBe(want);
        // Seeds chain: crc(a ++ b) === crc(b, crc(a)).
        const cut = Math.floor(rand() * length);
        expect(crc32c(slice.subarray(cut), crc32c(slice.subarray(0, cut)))).toBe(want);
      }
    } catch (err) {
      throw new Error(`crc32c mismatch with seed ${seed} (rerun with KVF_TEST_SEED=${seed})`, { cause: err });
    }
  });

  it('rejects ranges outside the buffer and bad arguments', () => {
    const buf = new Uint8Array(16);
    expectCode(() => crc32cRange(buf, 8, 9), 'OUT_OF_RANGE');
    expectCode(() => crc32cRange(buf, 17, 0), 'OUT_OF_RANGE');
    expectCode(() => crc32cRange(buf, -1, 1), 'BAD_REQUEST');
    expectCode(() => crc32c('abc' as unknown as Uint8Array), 'BAD_REQUEST');
    expectCode(() => crc32c(buf, 2 ** 32), 'BAD_REQUEST');
  });
});

describe('crc32c off the event loop', () => {
  it('gives crc32cRange values for every range, split over thread-pool tasks or not', async () => {
    const rand = prng(11);
    const buf = randomBytes(rand, 1 << 20);
    // 40 MiB of ranges over a 1 MiB buffer (ranges may overlap): enough to be split into tasks.
    const ranges = Array.from({ length: 80 }, () => {
      const offset = Math.floor(rand() * buf.length);
      return { offset, length: Math.floor(rand() * (buf.length - offset)) };
    });
    ranges.push({ offset: 0, length: buf.length }, { offset: buf.length, length: 0 });
    const want = ranges.map((r) => crc32cRange(buf, r.offset, r.length));
    expect(await crc32cRanges(buf, ranges)).toEqual(want);
    expect(await crc32cRanges(buf, ranges.slice(0, 3))).toEqual(want.slice(0, 3));
    expect(await crc32cRanges(buf, [])).toEqual([]);
    expect(await crc32cRanges(buf, [{ offset: 0, length: 9 }])).toEqual([crc32cRef(buf.subarray(0, 9))]);
  });

  it('rejects ranges outside the buffer with OUT_OF_RANGE and non-integers with BAD_REQUEST', async () => {
    const buf = new Uint8Array(16);
    const code = (p: Promise<unknown>): Promise<string> =>
      p.then(
        () => 'resolved',
        (e: unknown) => (isKvfError(e) ? e.codeName : String(e)),
      );
    expect(await code(crc32cRanges(buf, [{ offset: 8, length: 9 }]))).toBe('OUT_OF_RANGE');
    expect(
      await code(
        crc32cRanges(buf, [
          { offset: 0, length: 1 },
          { offset: 17, length: 0 },
        ]),
      ),
    ).toBe('OUT_OF_RANGE');
    expect(await code(crc32cRanges(buf, [{ offset: -1, length: 1 }]))).toBe('BAD_REQUEST');
    expect(await code(crc32cRanges(buf, [{ offset: 0.5, length: 1 }]))).toBe('BAD_REQUEST');
  });
});

describe('block allocator', () => {
  it('keeps used/free counts, never hands out a block twice, detects double and out-of-range frees', () => {
    const seed = Number(process.env.KVF_TEST_SEED ?? Date.now() % 2 ** 31);
    const rand = prng(seed);
    const blockCount = 64;
    const arena = openArena({ kind: 'host', blockBytes: 64, blockCount });
    const model = new Set<number>();
    const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const step = (): void => {
      const op = rand();
      if (op < 0.35) {
        if (model.size === blockCount) return expectCode(() => arena.alloc(), 'ARENA_FULL');
        const i = arena.alloc();
        expect(model.has(i), `block ${i} handed out twice`).toBe(false);
        expect(i >= 0 && i < blockCount).toBe(true);
        model.add(i);
      } else if (op < 0.5) {
        const n = Math.floor(rand() * 12);
        if (n > blockCount - model.size) {
          expectCode(() => arena.allocMany(n), 'ARENA_FULL'); // all or nothing: nothing taken
        } else {
          const got = arena.allocMany(n);
          expect(new Set(got).size).toBe(n);
          for (const i of got) expect(model.has(i), `block ${i} handed out twice`).toBe(false);
          for (const i of got) model.add(i);
        }
      } else if (op < 0.8) {
        if (model.size === 0) return;
        const i = pick([...model]);
        arena.release(i);
        model.delete(i);
      } else if (op < 0.9) {
        const free = [...Array(blockCount).keys()].filter((i) => !model.has(i));
        if (free.length > 0) expectCode(() => arena.release(pick(free)), 'DOUBLE_FREE');
      } else {
        const bad = pick([-1, blockCount, blockCount + Math.floor(rand() * 1000), 2 ** 32]);
        expectCode(() => arena.release(bad), 'OUT_OF_RANGE');
        expectCode(() => arena.isAllocated(bad), 'OUT_OF_RANGE');
      }
    };
    try {
      for (let k = 0; k < 5000; k++) {
        step();
        expect(arena.used).toBe(model.size);
        expect(arena.free).toBe(blockCount - model.size);
        expect(arena.capacity).toBe(blockCount);
        const probe = Math.floor(rand() * blockCount);
        expect(arena.isAllocated(probe)).toBe(model.has(probe));
      }
    } catch (err) {
      throw new Error(
        `allocator diverged from the model with seed ${seed} (rerun with KVF_TEST_SEED=${seed})`,
        {
          cause: err,
        },
      );
    }
  });

  it('rejects bad arena options with BAD_REQUEST', () => {
    const base = { kind: 'host' as const, blockBytes: 4096, blockCount: 4 };
    for (const bad of [0, -1, 1.5, Number.NaN, '8' as unknown as number]) {
      expectCode(() => Arena.open({ ...base, blockBytes: bad }), 'BAD_REQUEST');
      expectCode(() => Arena.open({ ...base, blockCount: bad }), 'BAD_REQUEST');
    }
    expectCode(() => Arena.open({ ...base, kind: 'gpu' as 'host' }), 'BAD_REQUEST');
    expectCode(() => Arena.open({ ...base, blockCount: 1025, arenaBytesMax: 4096 * 1024 }), 'BAD_REQUEST');
    expectCode(() => Arena.open({ ...base, blockBytes: 2 ** 30, blockCount: 2 ** 20 }), 'BAD_REQUEST');
    // The native side checks too, whatever the TypeScript layer lets through.
    const { NativeArena } = loadNative();
    expect(() => new NativeArena('host', 4096, 2 ** 20, 0, false, 4096)).toThrow(/^KVF_BAD_REQUEST: /);
    expectCode(() => callNative(() => new NativeArena('host', -5, 4, 0, false, 2 ** 30)), 'BAD_REQUEST');
    expectCode(
      () => callNative(() => new NativeArena('gpu' as 'host', 64, 4, 0, false, 2 ** 30)),
      'BAD_REQUEST',
    );
  });
});

describe('host arena', () => {
  it('is one page-aligned region; addressOf is base + index * blockBytes', () => {
    const arena = openArena({ kind: 'host', blockBytes: 1 << 20, blockCount: 8 });
    expect(arena.kind).toBe('host');
    expect(arena.bytes).toBe(8 << 20);
    expect(arena.baseAddress % 4096n).toBe(0n);
    for (let i = 0; i < 8; i++) expect(arena.addressOf(i)).toBe(arena.baseAddress + BigInt(i) * (1n << 20n));
    expectCode(() => arena.addressOf(8), 'OUT_OF_RANGE');
  });

  it('round-trips bytes exactly and bounds-checks every access', () => {
    const rand = prng(42);
    const blockBytes = 256 * 1024 + 3; // odd size: blocks start unaligned
    const arena = openArena({ kind: 'host', blockBytes, blockCount: 4 });
    const blocks = arena.allocMany(4);
    const data = blocks.map(() => randomBytes(rand, blockBytes));
    blocks.forEach((b, k) => arena.write(b, 0, data[k]!));
    blocks.forEach((b, k) => {
      const back = new Uint8Array(blockBytes);
      arena.read(b, 0, back);
      expect(Buffer.compare(back, data[k]!)).toBe(0);
    });
    // Partial write at an offset, read back through a subarray (non-zero byteOffset).
    const patch = randomBytes(rand, 1000);
    arena.write(1, 5000, patch);
    const big = new Uint8Array(3000);
    arena.read(1, 5000, big.subarray(1000, 2000));
    expect(Buffer.compare(big.subarray(1000, 2000), patch)).toBe(0);

    expectCode(() => arena.write(0, blockBytes - 10, new Uint8Array(11)), 'OUT_OF_RANGE');
    expectCode(() => arena.read(0, blockBytes + 1, new Uint8Array(0)), 'OUT_OF_RANGE');
    expectCode(() => arena.write(4, 0, new Uint8Array(1)), 'OUT_OF_RANGE');
    expectCode(() => arena.write(0, -1, new Uint8Array(1)), 'BAD_REQUEST');
    expectCode(() => arena.write(0, 0, [1, 2, 3] as unknown as Uint8Array), 'BAD_REQUEST');
    arena.write(0, blockBytes, new Uint8Array(0)); // empty write at the very end is in bounds
  });

  it('checksums block ranges exactly like crc32c of the bytes read back', () => {
    const rand = prng(7);
    const blockBytes = 1 << 20;
    const arena = openArena({ kind: 'host', blockBytes, blockCount: 2 });
    const data = randomBytes(rand, blockBytes);
    arena.write(1, 0, data);
    expect(arena.checksum(1)).toBe(crc32cRef(data));
    for (let k = 0; k < 20; k++) {
      const offset = Math.floor(rand() * blockBytes);
      const length = Math.floor(rand() * (blockBytes - offset));
      const back = new Uint8Array(length);
      arena.read(1, offset, back);
      expect(arena.checksum(1, offset, length)).toBe(crc32c(back));
    }
    expect(arena.checksum(1, 1000)).toBe(crc32c(data.subarray(1000)));
    expectCode(() => arena.checksum(1, 10, blockBytes), 'OUT_OF_RANGE');
  });

  it('checksums many blocks on the thread pool exactly like checksum()', async () => {
    const rand = prng(9);
    const blockBytes = 256 * 1024;
    const arena = openArena({ kind: 'host', blockBytes, blockCount: 8 });
    for (let i = 0; i < 8; i++) arena.write(i, 0, randomBytes(rand, blockBytes));
    const blocks = [0, 3, 7, 3].map((index, k) => ({ index, length: [blockBytes, 1000, 0, 17][k]! }));
    expect(await arena.checksums(blocks)).toEqual(blocks.map((b) => arena.checksum(b.index, 0, b.length)));
    expect(await arena.checksums([])).toEqual([]);
    const code = (p: Promise<unknown>): Promise<string> =>
      p.then(
        () => 'resolved',
        (e: unknown) => (isKvfError(e) ? e.codeName : String(e)),
      );
    expect(await code(arena.checksums([{ index: 8, length: 1 }]))).toBe('OUT_OF_RANGE');
    expect(await code(arena.checksums([{ index: 0, length: blockBytes + 1 }]))).toBe('OUT_OF_RANGE');
  });

  it('prefaults a host arena off the event loop without changing a byte', async () => {
    const blockBytes = 1 << 20;
    const arena = openArena({ kind: 'host', blockBytes, blockCount: 16 });
    const data = randomBytes(prng(3), blockBytes);
    arena.write(5, 0, data);
    const r = await arena.prefault();
    // Linux >= 5.14 has MADV_POPULATE_WRITE (CI and this project's hosts do).
    expect(r.method).toBe('populate');
    expect(r.ms).toBeGreaterThanOrEqual(0);
    expect(arena.checksum(5)).toBe(crc32cRef(data));
    expect(arena.checksum(6)).toBe(crc32c(new Uint8Array(blockBytes))); // untouched blocks stay zero
    arena.close();
    const after = await arena.prefault().then(
      () => 'resolved',
      (e: unknown) => (isKvfError(e) ? e.codeName : String(e)),
    );
    expect(after).toBe('CLOSED');
  });

  it('gives zero-copy views that stay valid after close', () => {
    const arena = openArena({ kind: 'host', blockBytes: 4096, blockCount: 2 });
    const view = arena.hostView(1)!;
    const again = arena.hostView(1)!;
    expect(view.length).toBe(4096);
    arena.write(1, 10, Uint8Array.of(1, 2, 3));
    expect([...view.subarray(10, 13)]).toEqual([1, 2, 3]);
    again[100] = 77; // writes through a view are the arena's bytes
    const one = new Uint8Array(1);
    arena.read(1, 100, one);
    expect(one[0]).toBe(77);
    arena.close();
    expect(view[100]).toBe(77); // the view holds the mapping alive
    view[0] = 5;
    expect(view[0]).toBe(5);
  });

  it('throws CLOSED from every call after close(), and close() is idempotent', () => {
    const arena = Arena.open({ kind: 'host', blockBytes: 4096, blockCount: 4 });
    const b = arena.alloc();
    arena.close();
    arena.close();
    expect(arena.closed).toBe(true);
    const calls: Array<() => unknown> = [
      () => arena.capacity,
      () => arena.used,
      () => arena.free,
      () => arena.alloc(),
      () => arena.allocMany(1),
      () => arena.release(b),
      () => arena.isAllocated(b),
      () => arena.addressOf(b),
      () => arena.write(b, 0, new Uint8Array(1)),
      () => arena.read(b, 0, new Uint8Array(1)),
      () => arena.checksum(b),
      () => arena.hostView(b),
    ];
    for (const call of calls) expectCode(call, 'CLOSED');
    expect(arena.blockBytes).toBe(4096); // descriptive fields stay readable
  });
});

describe('CUDA arenas', () => {
  it("'auto' picks CUDA when a device is usable, else host memory with one log line", () => {
    const lines: string[] = [];
    const arena = openArena({ kind: 'auto', blockBytes: 65536, blockCount: 4, log: (l) => lines.push(l) });
    if (gpuPresent) {
      expect(arena.kind).toBe('cuda');
      expect(lines).toEqual([]);
    } else {
      expect(arena.kind).toBe('host');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/host memory .*CUDA/);
    }
  });

  it("'cuda' throws CUDA_UNAVAILABLE without a device, and round-trips bytes with one", () => {
    const opts = { kind: 'cuda' as const, blockBytes: 6 << 20, blockCount: 2 };
    if (!gpuPresent) {
      expectCode(() => Arena.open(opts), 'CUDA_UNAVAILABLE');
      return;
    }
    const arena = openArena(opts);
    expect(arena.kind).toBe('cuda');
    expect(arena.hostView(0)).toBeUndefined();
    const data = randomBytes(prng(3), opts.blockBytes);
    arena.write(1, 0, data);
    const back = new Uint8Array(opts.blockBytes);
    arena.read(1, 0, back);
    expect(Buffer.compare(back, data)).toBe(0);
    // 6 MiB > the 4 MiB staging buffer: the checksum is chained across chunks.
    expect(arena.checksum(1)).toBe(crc32c(data));
    expect(arena.checksum(1, 123, 5 << 20)).toBe(crc32c(data.subarray(123, 123 + (5 << 20))));
    expectCode(() => Arena.open({ ...opts, deviceId: 999 }), 'CUDA_UNAVAILABLE');
  });
});

import { describe, expect, it } from 'vitest';
import { isKvfError, KvfError } from '../../shared/errors.js';
import {
  blockBytes,
  BUILTIN_PROFILES,
  bytesPerChunk,
  bytesPerToken,
  DTYPE_BYTES,
  getBuiltinProfile,
  layerGroups,
  maxBlockBytes,
  type ModelProfile,
  PROFILE_LIMITS,
  validateProfile,
} from '../../shared/profiles.js';

const llama8b: ModelProfile = {
  id: 'llama-3-8b',
  layers: 32,
  kvHeads: 8,
  headDim: 128,
  dtype: 'fp16',
  chunkTokens: 256,
};

function thrown(fn: () => unknown): KvfError {
  try {
    fn();
  } catch (err) {
    if (err instanceof KvfError) return err;
    throw err;
  }
  throw new Error('expected a KvfError, nothing was thrown');
}

describe('validateProfile', () => {
  it('accepts a valid profile and returns a fresh copy', () => {
    const p = validateProfile({ ...llama8b });
    expect(p).toEqual(llama8b);
    for (const dtype of ['fp16', 'bf16', 'fp32', 'fp8_e4m3'] as const) {
      expect(validateProfile({ ...llama8b, dtype }).dtype).toBe(dtype);
    }
    expect(validateProfile({ ...llama8b, id: 'org/Model_v2.1:fp8-x' }).id).toBe('org/Model_v2.1:fp8-x');
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['layers 0', { layers: 0 }, /layers.*integer in \[1, 512\]/],
    ['layers too many', { layers: 513 }, /layers.*\[1, 512\]/],
    ['layers fractional', { layers: 3.5 }, /layers/],
    ['layers as string', { layers: '32' }, /layers.*got "32"/],
    ['kvHeads negative', { kvHeads: -8 }, /kvHeads.*\[1, 1024\]/],
    ['kvHeads too many', { kvHeads: 1025 }, /kvHeads/],
    ['headDim 0', { headDim: 0 }, /headDim.*\[1, 1024\]/],
    ['headDim huge', { headDim: 4096 }, /headDim/],
    ['chunkTokens 0', { chunkTokens: 0 }, /chunkTokens.*\[1, 65536\]/],
    ['chunkTokens huge', { chunkTokens: 65537 }, /chunkTokens/],
    ['dtype unknown', { dtype: 'int8' }, /dtype.*fp16\|bf16\|fp32\|fp8_e4m3/],
    ['id empty', { id: '' }, /id/],
    ['id with space', { id: 'llama 3' }, /id/],
    ['id too long', { id: 'x'.repeat(129) }, /id/],
    ['id missing', { id: undefined }, /id/],
    ['unknown field', { kv_heads: 8 }, /kv_heads: unknown field/],
  ];
  for (const [name, patch, message] of bad) {
    it(`rejects ${name} with INVALID_PROFILE naming the field`, () => {
      const err = thrown(() => validateProfile({ ...llama8b, ...patch }));
      expect(err.codeName).toBe('INVALID_PROFILE');
      expect(err.message).toMatch(message);
    });
  }

  it('rejects non-objects', () => {
    for (const x of [null, undefined, 42, 'llama', [llama8b]]) {
      expect(
        isKvfError(
          thrown(() => validateProfile(x)),
          'INVALID_PROFILE',
        ),
      ).toBe(true);
    }
  });

  it('accepts every bound exactly, and the largest profile still has exact sizes', () => {
    const p = validateProfile({
      id: 'x'.repeat(PROFILE_LIMITS.idLengthMax),
      layers: 512,
      kvHeads: 1024,
      headDim: 1024,
      dtype: 'fp32',
      chunkTokens: 65536,
    });
    expect(bytesPerChunk(p)).toBe(2 ** 48);
    expect(Number.isSafeInteger(bytesPerChunk(p))).toBe(true);
  });
});

describe('derived sizes', () => {
  it('dtype widths', () => {
    expect(DTYPE_BYTES).toEqual({ fp16: 2, bf16: 2, fp32: 4, fp8_e4m3: 1 });
  });

  it('Llama-3-8B fp16: 128 KiB per token, 32 MiB per 256-token chunk (ARCHITECTURE.md)', () => {
    expect(bytesPerToken(llama8b)).toBe(128 * 1024);
    expect(bytesPerChunk(llama8b)).toBe(32 * 1024 * 1024);
    // 8K tokens is 1 GiB.
    expect(bytesPerToken(llama8b) * 8192).toBe(2 ** 30);
  });

  it('scales with dtype', () => {
    expect(bytesPerToken({ ...llama8b, dtype: 'fp32' })).toBe(256 * 1024);
    expect(bytesPerToken({ ...llama8b, dtype: 'fp8_e4m3' })).toBe(64 * 1024);
  });

  it('block bytes follow [layersInGroup, 2, kvHeads, chunkTokens, headDim]', () => {
    expect(blockBytes(llama8b, 8)).toBe(8 * 2 * 8 * 256 * 128 * 2);
    expect(blockBytes(llama8b, 32)).toBe(bytesPerChunk(llama8b));
    expect(
      isKvfError(
        thrown(() => blockBytes(llama8b, 0)),
        'INVALID_PROFILE',
      ),
    ).toBe(true);
    expect(
      isKvfError(
        thrown(() => blockBytes(llama8b, 33)),
        'INVALID_PROFILE',
      ),
    ).toBe(true);
  });
});

describe('layerGroups', () => {
  it('splits evenly when it can', () => {
    expect(layerGroups(llama8b, 4)).toEqual([
      { index: 0, firstLayer: 0, layers: 8 },
      { index: 1, firstLayer: 8, layers: 8 },
      { index: 2, firstLayer: 16, layers: 8 },
      { index: 3, firstLayer: 24, layers: 8 },
    ]);
  });

  it('gives the extra layers to the first groups', () => {
    const qwen = getBuiltinProfile('qwen2.5-7b'); // 28 layers
    expect(layerGroups(qwen, 3).map((g) => g.layers)).toEqual([10, 9, 9]);
    expect(layerGroups(qwen, 3).map((g) => g.firstLayer)).toEqual([0, 10, 19]);
  });

  it('covers every layer once, contiguously, for every group count', () => {
    for (const p of Object.values(BUILTIN_PROFILES)) {
      for (let n = 1; n <= p.layers; n++) {
        const groups = layerGroups(p, n);
        expect(groups).toHaveLength(n);
        let next = 0;
        for (const [i, g] of groups.entries()) {
          expect(g.index).toBe(i);
          expect(g.firstLayer).toBe(next);
          expect(g.layers).toBeGreaterThanOrEqual(1);
          next += g.layers;
        }
        expect(next).toBe(p.layers);
        const sizes = groups.map((g) => g.layers);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      }
    }
  });

  it('rejects group counts outside [1, layers]', () => {
    for (const n of [0, -1, 33, 1.5, Number.NaN]) {
      const err = thrown(() => layerGroups(llama8b, n));
      expect(err.codeName).toBe('INVALID_PROFILE');
      expect(err.message).toMatch(/\[1, 32\]/);
    }
  });

  it('maxBlockBytes is the largest group block', () => {
    const qwen = getBuiltinProfile('qwen2.5-7b');
    expect(maxBlockBytes(qwen, 3)).toBe(blockBytes(qwen, 10));
    expect(maxBlockBytes(llama8b, 4)).toBe(blockBytes(llama8b, 8));
    expect(maxBlockBytes(llama8b, 1)).toBe(bytesPerChunk(llama8b));
    expect(
      isKvfError(
        thrown(() => maxBlockBytes(llama8b, 0)),
        'INVALID_PROFILE',
      ),
    ).toBe(true);
  });
});

describe('built-in profiles', () => {
  it('has the required models with their published shapes', () => {
    expect(getBuiltinProfile('llama-3-8b')).toEqual(llama8b);
    expect(getBuiltinProfile('llama-3-70b')).toMatchObject({ layers: 80, kvHeads: 8, headDim: 128 });
    expect(getBuiltinProfile('qwen2.5-7b')).toMatchObject({ layers: 28, kvHeads: 4, headDim: 128 });
    expect(getBuiltinProfile('tiny-test')).toMatchObject({
      layers: 4,
      kvHeads: 2,
      headDim: 16,
      chunkTokens: 16,
    });
  });

  it('every built-in is valid and keyed by its id', () => {
    for (const [key, p] of Object.entries(BUILTIN_PROFILES)) {
      expect(p.id).toBe(key);
      expect(validateProfile({ ...p })).toEqual(p);
    }
  });

  it('cannot be modified through the table or through a returned copy', () => {
    const copy = getBuiltinProfile('tiny-test');
    copy.layers = 99;
    expect(getBuiltinProfile('tiny-test').layers).toBe(4);
    expect(Object.isFrozen(BUILTIN_PROFILES)).toBe(true);
    expect(Object.isFrozen(BUILTIN_PROFILES['tiny-test'])).toBe(true);
  });

  it('unknown ids throw UNKNOWN_MODEL naming the known ones', () => {
    for (const id of ['gpt-5', 'toString', '__proto__', '']) {
      const err = thrown(() => getBuiltinProfile(id));
      expect(err.codeName).toBe('UNKNOWN_MODEL');
      expect(err.message).toMatch(/llama-3-8b/);
    }
  });
});

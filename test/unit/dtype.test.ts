import { describe, expect, it } from 'vitest';
import {
  bf16BitsToF32,
  bf16ToF32Array,
  f16BitsToF32,
  f16ToF32Array,
  f32ArrayToBf16,
  f32ArrayToF16,
  f32BitsToF16Bits,
  f32ToBf16Bits,
  f32ToF16Bits,
} from '../../shared/dtype.js';

const isF16NaN = (h: number): boolean => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
const f32OfBits = (bits: number): number => new Float32Array(new Uint32Array([bits]).buffer)[0] as number;
const bitsOfF32 = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0] as number;
const hex = (n: number): string => `0x${n.toString(16)}`;

/** The fp16 value of pattern h computed from the definition, independent of the code under test. */
function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : Number.NaN;
  if (exp === 0) return sign * mant * 2 ** -24;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

describe('fp16, exhaustive over all 65,536 bit patterns', () => {
  it('decodes every pattern to its exact value', () => {
    const wrong: string[] = [];
    for (let h = 0; h < 0x10000; h++) {
      const want = f16Value(h);
      const got = f16BitsToF32(h);
      const ok = Number.isNaN(want) ? Number.isNaN(got) : Object.is(got, want);
      if (!ok) wrong.push(`${hex(h)}: ${got} vs ${want}`);
    }
    expect(wrong).toEqual([]);
  });

  it('f16 -> f32 -> f16 round-trips exactly; NaN stays NaN with its sign', () => {
    const wrong: string[] = [];
    for (let h = 0; h < 0x10000; h++) {
      const back = f32ToF16Bits(f16BitsToF32(h));
      const ok = isF16NaN(h) ? isF16NaN(back) && (back & 0x8000) === (h & 0x8000) : back === h;
      if (!ok) wrong.push(`${hex(h)} -> ${hex(back)}`);
    }
    expect(wrong).toEqual([]);
  });

  it('the array forms round-trip every pattern, NaN payloads included (only quietened)', () => {
    const all = Uint16Array.from({ length: 0x10000 }, (_, h) => h);
    const back = f32ArrayToF16(f16ToF32Array(all));
    const wrong: string[] = [];
    for (let h = 0; h < 0x10000; h++) {
      const want = isF16NaN(h) ? h | 0x0200 : h;
      if (back[h] !== want) wrong.push(`${hex(h)} -> ${hex(back[h] ?? -1)}`);
    }
    expect(wrong).toEqual([]);
  });

  it('ties between adjacent fp16 values round to the even one; anything off the tie rounds nearest', () => {
    // Every fp16 has 11 significant bits, so the midpoint of two neighbours is exact in fp32.
    const wrong: string[] = [];
    let ties = 0;
    for (let h = 0; h < 0x7c00; h++) {
      for (const sign of [0, 0x8000]) {
        const lo = f16Value(h | sign);
        const hi = f16Value((h + 1) | sign); // h + 1 = 0x7c00 is Inf: the tie above 65504
        const mid = h + 1 === 0x7c00 ? (sign ? -65520 : 65520) : (lo + hi) / 2;
        if (Math.fround(mid) !== mid) wrong.push(`midpoint above ${hex(h)} not exact in fp32`);
        const even = (h & 1) === 0 ? h : h + 1;
        const got = f32ToF16Bits(mid);
        if (got !== (even | sign)) wrong.push(`tie above ${hex(h | sign)} -> ${hex(got)}`);
        // One fp32 ulp either side of the tie is no longer a tie.
        const midBits = bitsOfF32(mid);
        const below = f32ToF16Bits(f32OfBits(midBits - 1)); // toward zero
        const above = f32ToF16Bits(f32OfBits(midBits + 1)); // away from zero
        if (below !== (h | sign)) wrong.push(`just below tie above ${hex(h | sign)} -> ${hex(below)}`);
        if (above !== ((h + 1) | sign)) wrong.push(`just above tie above ${hex(h | sign)} -> ${hex(above)}`);
        ties++;
      }
    }
    expect(wrong.slice(0, 20)).toEqual([]);
    expect(ties).toBe(2 * 0x7c00);
  });

  it('special values: zeros, infinities, overflow, underflow, subnormals', () => {
    expect(f32ToF16Bits(0)).toBe(0x0000);
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
    expect(isF16NaN(f32ToF16Bits(Number.NaN))).toBe(true);
    expect(f32ToF16Bits(65504)).toBe(0x7bff); // max finite
    expect(f32ToF16Bits(65519.99)).toBe(0x7bff);
    expect(f32ToF16Bits(1e6)).toBe(0x7c00); // overflow to Inf
    expect(f32ToF16Bits(-1e6)).toBe(0xfc00);
    expect(f32ToF16Bits(3.4e38)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // tie to even: zero
    expect(f32ToF16Bits(2 ** -25 * 1.0001)).toBe(0x0001);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 subnormal units -> 2
    expect(f32ToF16Bits(-(2 ** -30))).toBe(0x8000); // underflow keeps the sign
    expect(f32ToF16Bits(1e-45)).toBe(0x0000); // fp32 subnormal input
    expect(f32ToF16Bits(2 ** -14)).toBe(0x0400); // smallest normal
    expect(f32ToF16Bits(2 ** -14 - 2 ** -25)).toBe(0x0400); // largest subnormal rounds up into normal
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
    expect(f32ToF16Bits(Math.PI)).toBe(0x4248);
  });

  it('NaN payloads and signs survive fp32 -> fp16 at the bit level', () => {
    expect(f32BitsToF16Bits(0x7fc00000)).toBe(0x7e00);
    expect(f32BitsToF16Bits(0xffc00000)).toBe(0xfe00);
    expect(f32BitsToF16Bits(0x7f800001)).toBe(0x7e00); // signalling NaN with a low payload: quiet NaN
    expect(f32BitsToF16Bits(0x7fa00000)).toBe(0x7f00); // payload top bits kept, quiet bit set
  });

  it('random fp32 values in range round to the nearest fp16 (checked against neighbours)', () => {
    let state = 12345;
    const next = (): number => (state = (Math.imul(state, 1103515245) + 12345) >>> 0);
    const wrong: string[] = [];
    for (let k = 0; k < 100_000; k++) {
      // Random sign and mantissa, exponent across the fp16 range and a little beyond.
      const bits = ((next() & 0x80000000) | (((next() % 50) + 97) << 23) | (next() & 0x7fffff)) >>> 0;
      const x = f32OfBits(bits);
      const h = f32ToF16Bits(x);
      const err = Math.abs(f16Value(h) - x);
      const mag = h & 0x7fff;
      if (mag === 0x7c00) {
        if (Math.abs(x) < 65520) wrong.push(`${x} overflowed to Inf`);
        continue;
      }
      for (const n of [mag - 1, mag + 1]) {
        if (n < 0 || n >= 0x7c00) continue;
        const other = Math.abs(f16Value(n | (h & 0x8000)) - x);
        if (err > other) wrong.push(`${x} -> ${hex(h)} but ${hex(n)} is nearer`);
        if (err === other && (mag & 1) === 1) wrong.push(`tie at ${x} -> odd ${hex(h)}`);
      }
    }
    expect(wrong.slice(0, 20)).toEqual([]);
  });
});

describe('bf16', () => {
  it('known values', () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(-2)).toBe(0xc000);
    expect(f32ToBf16Bits(Math.PI)).toBe(0x4049);
    expect(f32ToBf16Bits(0)).toBe(0x0000);
    expect(f32ToBf16Bits(-0)).toBe(0x8000);
    expect(f32ToBf16Bits(Infinity)).toBe(0x7f80);
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    const nan = f32ToBf16Bits(Number.NaN);
    expect(nan & 0x7f80).toBe(0x7f80);
    expect(nan & 0x007f).not.toBe(0);
  });

  it('max finite, overflow to Inf, smallest subnormal', () => {
    const maxFinite = (2 - 2 ** -7) * 2 ** 127;
    expect(bf16BitsToF32(0x7f7f)).toBe(maxFinite);
    expect(f32ToBf16Bits(maxFinite)).toBe(0x7f7f);
    expect(f32ToBf16Bits(-maxFinite)).toBe(0xff7f);
    expect(f32ToBf16Bits(f32OfBits(0x7f7fffff))).toBe(0x7f80); // fp32 max rounds up to Inf
    expect(bf16BitsToF32(0x0001)).toBe(2 ** -133);
    expect(f32ToBf16Bits(2 ** -133)).toBe(0x0001);
    expect(f32ToBf16Bits(2 ** -134)).toBe(0x0000); // tie to even: zero
    expect(f32ToBf16Bits(3 * 2 ** -134)).toBe(0x0002); // tie to even: 2
  });

  it('ties round to even', () => {
    expect(f32ToBf16Bits(f32OfBits(0x3f808000))).toBe(0x3f80); // 1 + 2^-8: halfway, keep even
    expect(f32ToBf16Bits(f32OfBits(0x3f818000))).toBe(0x3f82); // halfway, odd rounds up
    expect(f32ToBf16Bits(f32OfBits(0x3f808001))).toBe(0x3f81); // just above halfway
    expect(f32ToBf16Bits(f32OfBits(0x3f817fff))).toBe(0x3f81); // just below halfway
    expect(f32ToBf16Bits(f32OfBits(0xbf808000))).toBe(0xbf80); // negative tie
  });

  it('NaN stays a quiet NaN with its sign, even with a payload only in the low bits', () => {
    const src = new Float32Array(new Uint32Array([0x7f800001, 0xff800001, 0x7fc00000, 0xffc12345]).buffer);
    expect(Array.from(f32ArrayToBf16(src))).toEqual([0x7fc0, 0xffc0, 0x7fc0, 0xffc1]);
  });

  it('every bf16 pattern round-trips exactly through fp32 (NaN only quietened)', () => {
    const all = Uint16Array.from({ length: 0x10000 }, (_, b) => b);
    const back = f32ArrayToBf16(bf16ToF32Array(all));
    const wrong: string[] = [];
    for (let b = 0; b < 0x10000; b++) {
      const isNaN = (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0;
      if (back[b] !== (isNaN ? b | 0x40 : b)) wrong.push(`${hex(b)} -> ${hex(back[b] ?? -1)}`);
    }
    expect(wrong).toEqual([]);
  });
});

describe('array forms agree with the scalar forms', () => {
  it('on random fp32 values', () => {
    const src = Float32Array.from({ length: 10_000 }, (_, i) => Math.sin(i) * 10 ** ((i % 20) - 10));
    const f16 = f32ArrayToF16(src);
    const bf16 = f32ArrayToBf16(src);
    const f16back = f16ToF32Array(f16);
    const bf16back = bf16ToF32Array(bf16);
    const wrong: number[] = [];
    for (let i = 0; i < src.length; i++) {
      if (f16[i] !== f32ToF16Bits(src[i] as number)) wrong.push(i);
      if (bf16[i] !== f32ToBf16Bits(src[i] as number)) wrong.push(i);
      if (f16back[i] !== f16BitsToF32(f16[i] as number)) wrong.push(i);
      if (bf16back[i] !== bf16BitsToF32(bf16[i] as number)) wrong.push(i);
    }
    expect(wrong).toEqual([]);
    expect(new Set(f16).size).toBeGreaterThan(1000); // the sample is not degenerate
  });

  it('work on views with a byte offset', () => {
    const backing = new Float32Array([9, 1, -2, 0.5, 9]);
    expect(Array.from(f32ArrayToF16(backing.subarray(1, 4)))).toEqual([0x3c00, 0xc000, 0x3800]);
    expect(Array.from(f32ArrayToBf16(backing.subarray(1, 4)))).toEqual([0x3f80, 0xc000, 0x3f00]);
  });
});

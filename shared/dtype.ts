/**
 * Host-side dtype conversion (fp32 <-> fp16, fp32 <-> bf16) for engines that hand kvfabric fp32
 * tensors on the host, e.g. the seed's serializer use case. IEEE 754 semantics throughout:
 * round-to-nearest-even, overflow to +-Inf, subnormals exact, +-Inf kept, NaN kept as a quiet NaN
 * with its sign and the top bits of its payload.
 *
 * The scalar forms take a JS number, which is first rounded to fp32 (Math.fround) so that they
 * agree with the array forms bit for bit. The array forms work on raw bits, so NaN payloads
 * survive them (a JS number may canonicalise a NaN's payload).
 */

const F32_SCRATCH = new Float32Array(1);
const U32_SCRATCH = new Uint32Array(F32_SCRATCH.buffer);

function f32Bits(x: number): number {
  F32_SCRATCH[0] = x;
  return U32_SCRATCH[0] as number;
}

function f32FromBits(bits: number): number {
  U32_SCRATCH[0] = bits;
  return F32_SCRATCH[0] as number;
}

/** fp32 bit pattern (u32) -> fp16 bit pattern (u16), round to nearest even. */
export function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) {
    // Inf stays Inf; NaN keeps the top 10 payload bits and gets the quiet bit.
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e16 = exp - 127 + 15;
  if (e16 >= 0x1f) return sign | 0x7c00; // too large even before rounding
  if (e16 <= 0) return sign | f16Subnormal(mant, e16, exp);
  // Normal: keep 10 mantissa bits, round on the 13 dropped ones. A carry out of the mantissa
  // correctly bumps the exponent, and 0x7bff rounding up becomes 0x7c00 (Inf).
  const rounded = (e16 << 10) | (mant >>> 13);
  return sign | (rounded + roundUp(mant & 0x1fff, 13, rounded));
}

/** Magnitude bits of an fp16 subnormal (or zero, or the smallest normal after rounding). */
function f16Subnormal(mant: number, e16: number, exp: number): number {
  // Below half the smallest subnormal (2^-25) everything rounds to zero; fp32 subnormals too.
  if (e16 < -10 || exp === 0) return 0;
  // value = m * 2^(e16 - 38) with the implicit bit; in units of 2^-24 that is m >> (14 - e16).
  const m = mant | 0x800000;
  const shift = 14 - e16; // 14..24
  const kept = m >>> shift;
  return kept + roundUp(m & ((1 << shift) - 1), shift, kept);
}

/** 1 when dropping `dropped` (the low `width` bits) must round `kept` up, by nearest-even. */
function roundUp(dropped: number, width: number, kept: number): number {
  const half = 1 << (width - 1);
  return dropped > half || (dropped === half && (kept & 1) === 1) ? 1 : 0;
}

/** fp16 bit pattern (u16) -> fp32 bit pattern (u32); exact (every fp16 is an fp32). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal: shift the leading 1 into the implicit position, lowering the exponent each time.
  let e = -14;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return (sign | ((e + 127) << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

/** fp32 bit pattern (u32) -> bf16 bit pattern (u16), round to nearest even. */
export function f32BitsToBf16Bits(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) {
    // NaN: keep sign and top payload bits, force the quiet bit (a payload only in the low 16
    // bits would otherwise truncate to Inf).
    return (bits >>> 16) | 0x40;
  }
  // Adding 0x7fff plus the kept LSB rounds to nearest even; a carry bumps the exponent, and the
  // largest values round up to Inf, as IEEE wants. The sum stays below 2^32.
  const lsb = (bits >>> 16) & 1;
  return ((bits >>> 0) + 0x7fff + lsb) >>> 16;
}

/** bf16 bit pattern (u16) -> fp32 bit pattern (u32); exact. */
export function bf16BitsToF32Bits(b: number): number {
  return ((b & 0xffff) << 16) >>> 0;
}

/** A number (rounded to fp32 first) -> fp16 bits. */
export function f32ToF16Bits(x: number): number {
  return f32BitsToF16Bits(f32Bits(x));
}

/** fp16 bits -> its value as a number (exact). */
export function f16BitsToF32(h: number): number {
  return f32FromBits(f16BitsToF32Bits(h));
}

/** A number (rounded to fp32 first) -> bf16 bits. */
export function f32ToBf16Bits(x: number): number {
  return f32BitsToBf16Bits(f32Bits(x));
}

/** bf16 bits -> its value as a number (exact). */
export function bf16BitsToF32(b: number): number {
  return f32FromBits(bf16BitsToF32Bits(b));
}

function bitsOf(src: Float32Array): Uint32Array {
  return new Uint32Array(src.buffer, src.byteOffset, src.length);
}

export function f32ArrayToF16(src: Float32Array): Uint16Array {
  const bits = bitsOf(src);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16Bits(bits[i] as number);
  return out;
}

export function f16ToF32Array(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = bitsOf(out);
  for (let i = 0; i < src.length; i++) bits[i] = f16BitsToF32Bits(src[i] as number);
  return out;
}

export function f32ArrayToBf16(src: Float32Array): Uint16Array {
  const bits = bitsOf(src);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToBf16Bits(bits[i] as number);
  return out;
}

export function bf16ToF32Array(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = bitsOf(out);
  for (let i = 0; i < src.length; i++) bits[i] = bf16BitsToF32Bits(src[i] as number);
  return out;
}

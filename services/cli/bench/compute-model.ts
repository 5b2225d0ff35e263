/**
 * A MODEL (not a measurement) of prefill time, to turn measured load rates into a projected time
 * to first token. Prefill of T prompt tokens costs about
 *
 *   FLOPs(T) = 2 * params * T  +  2 * layers * hidden * T^2
 *
 * (two FLOPs per weight per token for the matmuls, plus causal attention: QK^T and PV each
 * T^2 * hidden / 2 multiply-adds per layer). Time = FLOPs / gpuTflops. The default GPU rate,
 * 400 TFLOP/s, is an H100-class GPU's dense bf16 peak (~989 TFLOP/s) at ~40% utilisation, a
 * typical prefill figure; pass --gpu-tflops to model another GPU.
 *
 * Loading a cached prefix instead costs T * kvBytesPerToken / loadBytesPerSec, where the load rate
 * is what the bench MEASURED for a strategy on this host (bytes per second into the worker),
 * applied to the real model's KV size per token.
 */
import { BUILTIN_PROFILES, bytesPerToken, type ModelProfile } from '../../../shared/profiles.js';

export interface ModelShape {
  id: string;
  /** Parameter count. */
  params: number;
  layers: number;
  /** Model (hidden) dimension. */
  hidden: number;
  /** KV layout (kvHeads, headDim, dtype) from the built-in profile. */
  kv: ModelProfile;
}

/** Shapes from each model's published config.json. */
export const MODEL_SHAPES: Readonly<Record<string, ModelShape>> = {
  'llama-3-8b': {
    id: 'llama-3-8b',
    params: 8.03e9,
    layers: 32,
    hidden: 4096,
    kv: BUILTIN_PROFILES['llama-3-8b'] as ModelProfile,
  },
  'llama-3-70b': {
    id: 'llama-3-70b',
    params: 70.6e9,
    layers: 80,
    hidden: 8192,
    kv: BUILTIN_PROFILES['llama-3-70b'] as ModelProfile,
  },
};

/** Effective prefill rate in TFLOP/s (model assumption, see above). */
export const GPU_TFLOPS_DEFAULT = 400;

export function prefillFlops(shape: ModelShape, tokens: number): number {
  return 2 * shape.params * tokens + 2 * shape.layers * shape.hidden * tokens * tokens;
}

/** Modelled seconds to recompute a prefix of `tokens` from scratch. */
export function recomputeSeconds(shape: ModelShape, tokens: number, gpuTflops: number): number {
  if (!(gpuTflops > 0)) throw new RangeError('gpuTflops must be > 0');
  return prefillFlops(shape, tokens) / (gpuTflops * 1e12);
}

/** Seconds to move the prefix's KV at a (measured) rate. */
export function loadSeconds(shape: ModelShape, tokens: number, loadBytesPerSec: number): number {
  return loadBytesPerSec > 0
    ? (tokens * bytesPerToken(shape.kv)) / loadBytesPerSec
    : Number.POSITIVE_INFINITY;
}

export interface TtftProjection {
  kind: 'model';
  model: string;
  strategy: string;
  prefixTokens: number;
  recomputeMs: number;
  loadMs: number;
  /** recompute / load: how many times faster loading is than recomputing (< 1: slower). */
  speedup: number;
  /** Projected TTFT reduction for the cached prefix: max(0, recompute - load). */
  ttftReductionMs: number;
}

export function projectTtft(
  shape: ModelShape,
  strategy: string,
  prefixTokens: number,
  loadBytesPerSec: number,
  gpuTflops: number,
): TtftProjection {
  const rec = recomputeSeconds(shape, prefixTokens, gpuTflops);
  const load = loadSeconds(shape, prefixTokens, loadBytesPerSec);
  return {
    kind: 'model',
    model: shape.id,
    strategy,
    prefixTokens,
    recomputeMs: rec * 1000,
    loadMs: load * 1000,
    speedup: load > 0 ? rec / load : Number.POSITIVE_INFINITY,
    ttftReductionMs: Math.max(0, rec - load) * 1000,
  };
}

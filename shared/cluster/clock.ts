/**
 * Time sources for cluster actors. Liveness and lease decisions use only `nowMs()`, a monotonic
 * clock of the deciding process: wall clocks of different hosts are never compared. `wallMs()`
 * only stamps records for humans.
 */
import { performance } from 'node:perf_hooks';

export interface Clock {
  /** Monotonic milliseconds (arbitrary origin); never goes backwards. */
  nowMs(): number;
  /** Wall-clock milliseconds since the epoch, for informational timestamps only. */
  wallMs(): number;
}

export const systemClock: Clock = {
  nowMs: () => performance.now(),
  wallMs: () => Date.now(),
};

/** Random source for incarnations and jitter, injectable so that simulations are reproducible. */
export type RandomSource = () => number;

/** A random id of `length` characters from [A-Za-z0-9]. */
export function randomId(length = 12, random: RandomSource = Math.random): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[Math.floor(random() * alphabet.length)] ?? 'x';
  return out;
}

/**
 * `kvfabric doctor` results and options. A check never throws: it returns a result whose status
 * says whether this host can serve (`fail` means it cannot) and whose fix says what to do.
 */

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  /** Stable id (`nats`, `jetstream`, `redis`, ...), for --json consumers. */
  id: string;
  status: CheckStatus;
  /** One line: what was found. */
  summary: string;
  /** One or more lines: what to do about a warn or fail. */
  fix?: string;
  details?: Record<string, unknown>;
}

export interface DoctorOptions {
  /** Bound on connecting to NATS (per server tried). @default 3000 */
  natsConnectTimeoutMs: number;
  /** Bound on connecting to Redis and on each probe command. @default 2000 */
  redisTimeoutMs: number;
  /** Local clock vs the NATS server's beyond this (after the round-trip uncertainty) warns. @default 500 */
  clockSkewWarnMs: number;
  /** Older servers warn: production needs sync_interval (docs/architecture.md). @default '2.12.3' */
  natsVersionMin: string;
  /** Bytes moved per op of the UCX loopback probe. @default 4 MiB */
  ucxProbeBytes: number;
  /** Timed ops of the probe (after one warm-up op). @default 4 */
  ucxProbeIterations: number;
  /** Bound on each UCX probe op. @default 5000 */
  ucxProbeTimeoutMs: number;
  /** A loopback below this many GB/s warns (the host is starved or UCX picked a slow path). @default 0.5 */
  ucxProbeWarnGbps: number;
  /** Bound on `ucx_info -d`. @default 10000 */
  ucxInfoTimeoutMs: number;
}

export const DOCTOR_DEFAULTS: Readonly<DoctorOptions> = Object.freeze({
  natsConnectTimeoutMs: 3000,
  redisTimeoutMs: 2000,
  clockSkewWarnMs: 500,
  natsVersionMin: '2.12.3',
  ucxProbeBytes: 4 * 1024 * 1024,
  ucxProbeIterations: 4,
  ucxProbeTimeoutMs: 5000,
  ucxProbeWarnGbps: 0.5,
  ucxInfoTimeoutMs: 10_000,
});

/** `2.9.10` < `2.12.3`; pre-release suffixes are ignored. */
export function versionLess(a: string, b: string): boolean {
  const parse = (v: string): number[] =>
    v
      .replace(/^v/, '')
      .split(/[-+]/)[0]!
      .split('.')
      .map((x) => Number.parseInt(x, 10) || 0);
  const [x, y] = [parse(a), parse(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d < 0;
  }
  return false;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}

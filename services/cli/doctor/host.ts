/**
 * Checks of this host: the native addon, UCX_MEM_MMAP_HOOK_MODE, CUDA devices, UCX transports and
 * devices (`ucx_info -d`), a UCX loopback bandwidth probe, and the locked-memory limit.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

import { memcpyBench, nativeInfo, UcxWorker, type NativeInfo } from '../../../native/index.js';
import type { KvfConfig } from '../../../shared/config.js';
import { errorMessage, type CheckResult, type DoctorOptions } from './types.js';

export function checkNative(): { result: CheckResult; info?: NativeInfo } {
  try {
    const info = nativeInfo();
    return {
      info,
      result: {
        id: 'native',
        status: 'ok',
        summary: `addon ${info.addonVersion} (N-API ${info.napiVersion}), UCX ${info.ucxVersion}, CUDA ${info.cudaCompiled ? 'compiled in' : 'not compiled in'}, crc32c ${info.crc32c}`,
        details: { ...info },
      },
    };
  } catch (err) {
    return {
      result: {
        id: 'native',
        status: 'fail',
        summary: `the native addon does not load: ${errorMessage(err)}`,
        fix: [
          'install libucx0 (apt-get install libucx0; libucx-dev to build) and build the addon: npm run build:native.',
          'Shard nodes and workers move KV bytes through it; nothing serves without it.',
        ].join('\n'),
      },
    };
  }
}

export function checkMmapHook(env: NodeJS.ProcessEnv): CheckResult {
  const v = env.UCX_MEM_MMAP_HOOK_MODE;
  if (v === 'none') {
    return { id: 'ucx-mmap-hook', status: 'ok', summary: 'UCX_MEM_MMAP_HOOK_MODE=none' };
  }
  return {
    id: 'ucx-mmap-hook',
    status: 'fail',
    summary: `UCX_MEM_MMAP_HOOK_MODE=${v ?? '(unset)'}: UCX's mmap hooks patch the allocator under V8 and crash Node`,
    fix: 'set UCX_MEM_MMAP_HOOK_MODE=none in the environment of every kvfabric process (the systemd units and the image do).',
  };
}

export function checkCuda(cfg: KvfConfig, info: NativeInfo | undefined): CheckResult {
  const kind = cfg.shard.arenaKind;
  if (!info) return { id: 'cuda', status: 'skip', summary: 'needs the native addon' };
  const devices = info.cudaDevices;
  const why = !info.cudaCompiled ? 'the addon was built without CUDA' : (info.cudaError ?? 'no device');
  const details = { arenaKind: kind, cudaCompiled: info.cudaCompiled, cudaDevices: devices };
  if (devices > 0) {
    return {
      id: 'cuda',
      status: 'ok',
      summary: `${devices} CUDA device(s) visible (arenaKind ${kind})`,
      details,
    };
  }
  if (kind === 'host') {
    return {
      id: 'cuda',
      status: 'ok',
      summary: `no CUDA device (${why}); not needed: arenaKind host`,
      details,
    };
  }
  const fix = [
    'on a GPU host: install the NVIDIA driver, check nvidia-smi and CUDA_VISIBLE_DEVICES, and build the addon',
    'with nvcc on PATH (npm run build:native; docker: --build-arg KVF_CUDA=ON and a GPU reservation).',
    'On a host without GPUs set shard.arenaKind: host.',
  ].join('\n');
  if (kind === 'cuda') {
    return {
      id: 'cuda',
      status: 'fail',
      summary: `shard.arenaKind is cuda but no CUDA device is usable: ${why}`,
      fix,
      details,
    };
  }
  return {
    id: 'cuda',
    status: 'warn',
    summary: `no CUDA device (${why}): arenaKind auto falls back to host memory`,
    fix,
    details,
  };
}

export interface UcxDevices {
  transports: string[];
  devices: string[];
}

/** Parses `ucx_info -d`: `#      Transport: tcp` / `#         Device: eth0` pairs. */
export function parseUcxInfo(text: string): UcxDevices {
  const transports = new Set<string>();
  const devices = new Set<string>();
  for (const line of text.split('\n')) {
    const t = /^#\s+Transport:\s+(\S+)/.exec(line);
    if (t) transports.add(t[1] as string);
    const d = /^#\s+Device:\s+(\S+)/.exec(line);
    if (d) devices.add(d[1] as string);
  }
  return { transports: [...transports], devices: [...devices] };
}

function runUcxInfo(timeoutMs: number): Promise<{ text: string } | { error: string }> {
  return new Promise((resolve) => {
    const child = spawn('ucx_info', ['-d'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.stderr.resume();
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({ error: errorMessage(err) });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve(code === 0 ? { text } : { error: `ucx_info -d exited ${code ?? signal}` });
    });
  });
}

/** UCX_TLS aliases that name several transports (ucx_info lists the concrete ones). */
const TLS_ALIASES: Record<string, RegExp> = {
  sm: /^(posix|sysv|cma|knem|xpmem)$/,
  shm: /^(posix|sysv|cma|knem|xpmem)$/,
  rc: /^rc_(verbs|mlx5)$/,
  ud: /^ud_(verbs|mlx5)$/,
  dc: /^dc_mlx5$/,
  ib: /^(rc|ud|dc)_(verbs|mlx5)$/,
  cuda: /^cuda_(copy|ipc)$/,
  rocm: /^rocm_/,
};

/** Configured transports (ucx.transports, UCX_TLS syntax) that no listed transport provides. */
export function missingTransports(wanted: string | undefined, have: string[]): string[] {
  if (wanted === undefined || wanted.startsWith('^')) return [];
  return wanted
    .split(',')
    .filter((t) => t !== 'all' && !have.includes(t) && !have.some((h) => TLS_ALIASES[t]?.test(h)));
}

const RDMA = /^(rc|ud|dc)_(verbs|mlx5)$/;

export async function checkUcxTransports(
  cfg: KvfConfig,
  env: NodeJS.ProcessEnv,
  o: DoctorOptions,
): Promise<{ result: CheckResult; ucx?: UcxDevices }> {
  const r = await runUcxInfo(o.ucxInfoTimeoutMs);
  if ('error' in r) {
    return {
      result: {
        id: 'ucx-transports',
        status: 'warn',
        summary: `cannot list UCX transports: ${r.error}`,
        fix: 'install ucx-utils (ucx_info) to let doctor check transports and devices.',
      },
    };
  }
  const ucx = parseUcxInfo(r.text);
  const missing = missingTransports(cfg.ucx.transports, ucx.transports);
  const netDevices = env.UCX_NET_DEVICES;
  const unknownDevices = (netDevices ?? '')
    .split(',')
    .filter((d) => d !== '' && d !== 'all' && !ucx.devices.includes(d));
  const rdma = ucx.transports.filter((t) => RDMA.test(t));
  const details = { ...ucx, configured: cfg.ucx.transports ?? '(UCX default)', netDevices, rdma };
  const summary = `${ucx.transports.join(', ')}${rdma.length ? '' : ' (no RDMA transport)'}; UCX_NET_DEVICES=${netDevices ?? '(unset)'}`;
  if (missing.length > 0 || unknownDevices.length > 0) {
    return {
      ucx,
      result: {
        id: 'ucx-transports',
        status: 'fail',
        summary: `${summary}; not available here: ${[...missing, ...unknownDevices].join(', ')}`,
        fix: [
          `ucx.transports (${cfg.ucx.transports ?? 'unset'}) and UCX_NET_DEVICES must name what ucx_info -d lists on this host;`,
          'for RDMA install rdma-core and the NIC driver (ibv_devinfo), and run with LimitMEMLOCK=infinity.',
        ].join('\n'),
        details,
      },
    };
  }
  if (netDevices === undefined || netDevices === 'all') {
    return {
      ucx,
      result: {
        id: 'ucx-transports',
        status: 'warn',
        summary,
        fix: [
          'set UCX_NET_DEVICES to the cluster NIC (mlx5_0:1, eth1): UCX otherwise listens on every interface, and',
          'anyone who obtains an rkey and reaches the port can read and write arenas (docs/security.md).',
        ].join('\n'),
        details,
      },
    };
  }
  return { ucx, result: { id: 'ucx-transports', status: 'ok', summary, details } };
}

/** A few MiB through a UCX worker connected to itself, with the configured transports. */
export async function checkUcxProbe(cfg: KvfConfig, o: DoctorOptions): Promise<CheckResult> {
  let worker: UcxWorker;
  try {
    worker = UcxWorker.create({
      opTimeoutMs: o.ucxProbeTimeoutMs,
      ...(cfg.ucx.transports !== undefined ? { transports: cfg.ucx.transports } : {}),
    });
  } catch (err) {
    return {
      id: 'ucx-probe',
      status: 'fail',
      summary: `cannot create a UCX worker (transports ${cfg.ucx.transports ?? 'UCX default'}): ${errorMessage(err)}`,
      fix: 'fix ucx.transports / UCX_TLS / UCX_NET_DEVICES so UCX finds a usable transport (ucx_info -d lists them).',
    };
  }
  const bytes = o.ucxProbeBytes;
  try {
    const remote = worker.allocBuffer(bytes);
    const local = worker.allocBuffer(bytes);
    remote.buffer.fill(0xa5);
    const ep = worker.connect(worker.address());
    try {
      const rkey = ep.unpackRkey(remote.region.packRkey());
      const op = { remoteAddress: remote.region.address, rkey, local: local.buffer, length: bytes };
      await ep.get(op); // wire-up
      const t0 = performance.now();
      for (let i = 0; i < o.ucxProbeIterations; i++) await ep.get(op);
      const seconds = (performance.now() - t0) / 1000;
      if (local.buffer[bytes - 1] !== 0xa5) throw new Error('loopback get returned wrong bytes');
      const gbps = (bytes * o.ucxProbeIterations) / seconds / 1e9;
      const memcpyGbps = memcpyBench(bytes, 4).gbps;
      const summary = `loopback get ${gbps.toFixed(2)} GB/s in ${o.ucxProbeIterations} x ${bytes / 1024 ** 2} MiB (memcpy ${memcpyGbps.toFixed(1)} GB/s); not a network test: kvfabric bench transfer is`;
      const details = { gbps, memcpyGbps, bytes, iterations: o.ucxProbeIterations };
      if (gbps < o.ucxProbeWarnGbps) {
        return {
          id: 'ucx-probe',
          status: 'warn',
          summary,
          fix: `below ${o.ucxProbeWarnGbps} GB/s: the host is CPU-starved or UCX chose a slow path; compare with kvfabric bench transfer.`,
          details,
        };
      }
      return { id: 'ucx-probe', status: 'ok', summary, details };
    } finally {
      await ep.close();
      remote.region.deregister();
      local.region.deregister();
    }
  } catch (err) {
    return {
      id: 'ucx-probe',
      status: 'fail',
      summary: `UCX loopback transfer failed: ${errorMessage(err)}`,
      fix: 'run ucx_perftest between two shells on this host to isolate UCX from kvfabric (docs/native.md).',
    };
  } finally {
    await worker.close();
  }
}

/** Soft "Max locked memory" of this process, in bytes (Infinity = unlimited); undefined off Linux. */
export function lockedMemoryLimit(limitsText?: string): number | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return undefined;
    }
  }
  const m = /^Max locked memory\s+(\S+)/m.exec(text);
  if (!m) return undefined;
  return m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

export function checkMemlock(ucx: UcxDevices | undefined, limitsText?: string): CheckResult {
  const limit = lockedMemoryLimit(limitsText);
  if (limit === undefined) return { id: 'memlock', status: 'skip', summary: 'no /proc/self/limits' };
  const shown = limit === Infinity ? 'unlimited' : `${(limit / 1024 ** 2).toFixed(0)} MiB`;
  const rdma = (ucx?.transports ?? []).some((t) => RDMA.test(t));
  if (limit !== Infinity && rdma) {
    return {
      id: 'memlock',
      status: 'warn',
      summary: `locked-memory limit ${shown} with RDMA transports present: registering an arena will fail or bounce`,
      fix: 'run kvfabric with LimitMEMLOCK=infinity (systemd) or --ulimit memlock=-1 (docker; compose sets it).',
    };
  }
  return {
    id: 'memlock',
    status: 'ok',
    summary: `locked-memory limit ${shown}${rdma ? '' : ' (no RDMA transport needs it)'}`,
  };
}

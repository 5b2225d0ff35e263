/**
 * Which network devices UCX may use, and therefore listen on: UCX_NET_DEVICES, from ucx.netDevices.
 * UCX reads its environment when a worker's context is created (ucp_config_read), so every actor
 * applies this before its first UcxWorker.create() (and before the addon loads, where it can).
 *
 * Unset ucx.netDevices keeps an operator's UCX_NET_DEVICES (systemd EnvironmentFile, compose
 * `environment:`), else falls back to `lo`: a process that nobody configured listens on loopback
 * only, never on every interface. `all` lets UCX choose among every device (UCX's own default).
 */
import type { KvfConfig } from './config.js';
import type { Logger } from './log.js';

export const UCX_NET_DEVICES_DEFAULT = 'lo';

/** The UCX_NET_DEVICES value the config and environment give. */
export function ucxNetDevices(config: KvfConfig, env: NodeJS.ProcessEnv = process.env): string {
  return config.ucx.netDevices ?? (env.UCX_NET_DEVICES || UCX_NET_DEVICES_DEFAULT);
}

/** Set UCX_NET_DEVICES in this process's environment; returns the value applied. */
export function applyUcxNetDevices(
  config: KvfConfig,
  log?: Logger,
  env: NodeJS.ProcessEnv = process.env,
): string {
  const value = ucxNetDevices(config, env);
  const before = env.UCX_NET_DEVICES;
  if (before !== undefined && before !== value) {
    log?.warn('ucx.netDevices overrides UCX_NET_DEVICES from the environment', { before, value });
  }
  env.UCX_NET_DEVICES = value;
  log?.debug('ucx network devices', { UCX_NET_DEVICES: value });
  return value;
}

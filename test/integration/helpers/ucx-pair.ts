// Helpers for the native UCX tests: spawn peer processes (ucx-peer.mjs, which runs the compiled
// transfer peer from dist/), and the env per transport. Needs `npm run build:ts` beforehand.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { PeerProcess } from '../../../services/cli/commands/transfer-peer.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const PEER_SCRIPT = path.join(here, 'ucx-peer.mjs');
const COMPILED_PEER = path.join(here, '../../../dist/services/cli/commands/transfer-peer.js');

export const TRANSPORTS: Record<'sm' | 'tcp', Record<string, string>> = {
  sm: { UCX_TLS: 'sm,self' },
  tcp: { UCX_TLS: 'tcp', UCX_NET_DEVICES: 'lo' },
};

export const MiB = 1 << 20;
export const GiB = 1 << 30;

export function spawnPeer(env: Record<string, string>): PeerProcess {
  if (!existsSync(COMPILED_PEER)) {
    throw new Error(`${COMPILED_PEER} is missing: run npm run build:ts before the UCX integration tests`);
  }
  return PeerProcess.spawn(env, PEER_SCRIPT);
}

/** A client connected to a server, with the server's region unpacked on the client. */
export async function connectPair(
  client: PeerProcess,
  server: PeerProcess,
  remote: Record<string, unknown>,
  timeoutMs?: number,
): Promise<{ ep: number; rkey: number }> {
  const hello = await server.request('hello');
  const { ep } = await client.request('connect', {
    address: hello.address,
    ...(timeoutMs ? { timeoutMs } : {}),
  });
  const { rkey } = await client.request('unpack', { ep, rkey: remote.rkey });
  return { ep: Number(ep), rkey: Number(rkey) };
}

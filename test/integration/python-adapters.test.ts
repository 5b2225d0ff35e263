/**
 * Runs the Python package's tests (clients/python/tests, standard library unittest) with Debian's
 * /usr/bin/python3 (python3-torch lives in /usr/lib/python3/dist-packages, not in a pyenv
 * Python) against a real 2-node cluster and a real agent. The Python tests start extra agents of
 * their own (to kill them) with KVF_TEST_AGENT_ARGV.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useLocalCluster } from '../harness/cluster.js';
import { agentArgv, ROOT, startAgent, type AgentProcess } from './agent-helpers.js';

const PYTHON = '/usr/bin/python3';
const fixture = useLocalCluster({ shards: 2 });
let agent: AgentProcess;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kvf-py-'));
  agent = await startAgent(fixture.cluster, path.join(dir, 'agent.sock'));
}, 60_000);

afterAll(async () => {
  await agent?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function runUnittest(modules: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...fixture.cluster.env,
      KVF_TEST_AGENT_SOCKET: agent.socketPath,
      KVF_TEST_AGENT_ARGV: JSON.stringify(agentArgv('{socket}')),
      PYTHONDONTWRITEBYTECODE: '1',
    };
    // A pyenv or venv on PATH must not shadow Debian's interpreter and its dist-packages.
    delete env.PYTHONPATH;
    delete env.PYTHONHOME;
    const p = spawn(PYTHON, ['-m', 'unittest', '-v', ...modules], {
      cwd: path.join(ROOT, 'clients/python'),
      env,
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.on('close', (code) => resolve({ code, out }));
  });
}

describe('python client and engine adapters (Debian python3 + python3-torch)', () => {
  it('keys: kvfabric vectors, CBOR subset == cbor2 canonical, vLLM sha256_cbor block hashes', async () => {
    const r = await runUnittest(['tests.test_keys']);
    expect(r.out).toMatch(/Ran 4 tests/);
    expect(r.code, r.out).toBe(0);
  });

  it('client: put/get_into (memoryview, tensor), lookup, batch_exists, stats, typed errors', async () => {
    const r = await runUnittest(['tests.test_client']);
    expect(r.code, r.out).toBe(0);
  }, 60_000);

  it('vLLM connector: engine loop, both key modes, byte-exact KV and matched tokens', async () => {
    const r = await runUnittest(['tests.test_vllm']);
    expect(r.code, r.out).toBe(0);
  }, 90_000);

  it('SGLang HiCache storage and LMCache remote connector: engine loops', async () => {
    const r = await runUnittest(['tests.test_sglang', 'tests.test_lmcache']);
    expect(r.code, r.out).toBe(0);
  }, 90_000);

  it('agent killed or stalled mid-load: blocks reported failed in bounded time, the loop recomputes', async () => {
    const r = await runUnittest(['tests.test_agent_kill']);
    expect(r.code, r.out).toBe(0);
  }, 120_000);
});

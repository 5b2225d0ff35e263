"""Test harness: the agent under test (started by the vitest wrapper) and a way to start more
(KVF_TEST_AGENT_ARGV, a JSON argv with "{socket}" where the socket path goes), against the real
local cluster whose KVFABRIC_* variables are in the environment."""

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from kvfabric_client import AgentUnavailable, Client  # noqa: E402

SOCKET = os.environ.get("KVF_TEST_AGENT_SOCKET", "")
AGENT_ARGV = json.loads(os.environ.get("KVF_TEST_AGENT_ARGV", "[]"))

# The built-in tiny-test profile (chunkTokens 16 = the engines' block/page size in these tests).
PROFILE = {"id": "tiny-test", "layers": 4, "kvHeads": 2, "headDim": 16, "dtype": "fp16", "chunkTokens": 16}
MODEL = PROFILE["id"]
BS = PROFILE["chunkTokens"]


def require_env(testcase):
    if not SOCKET or not AGENT_ARGV:
        testcase.fail("run through test/integration/python-adapters.test.ts (KVF_TEST_AGENT_* unset)")


def unique_ns(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def start_agent(ready_s=30.0):
    """A fresh agent process on its own socket; returns (Popen, socket_path)."""
    path = os.path.join(tempfile.mkdtemp(prefix="kvf-py-"), "agent.sock")
    argv = [a.replace("{socket}", path) for a in AGENT_ARGV]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + ready_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}")
        try:
            Client(path, timeout_s=5).close()
            return proc, path
        except AgentUnavailable:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


def stop_agent(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def tokens_for(seed, n):
    return [(seed * 7919 + i * 104729 + (i * i) % 97) % 128000 for i in range(n)]


def expected_kv(layer, tokens, positions):
    """The engine's deterministic "model": KV of `positions`, [2, len, kvHeads, headDim] fp16."""
    import torch

    t = torch.tensor([tokens[p] for p in positions], dtype=torch.int64)[None, :, None, None]
    pos = torch.tensor(list(positions), dtype=torch.int64)[None, :, None, None]
    kv = torch.arange(2)[:, None, None, None]
    h = torch.arange(PROFILE["kvHeads"])[None, None, :, None]
    d = torch.arange(PROFILE["headDim"])[None, None, None, :]
    v = (t * 7 + pos * 3 + h * 5 + d * 11 + layer * 13 + kv * 17) % 2003
    return (v.to(torch.float32) / 2003.0 - 0.5).to(torch.float16)

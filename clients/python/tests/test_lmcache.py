import asyncio
import unittest

from kvfabric_client.adapters.lmcache import BytesMemoryObj, KvfabricRemoteConnector
from tests.harness import BS, MODEL, PROFILE, SOCKET, require_env, tokens_for, unique_ns
from kvfabric_client import Client
from kvfabric_client.keys import chunk_hashes


class Key:
    """Shape of LMCache's CacheEngineKey: fmt@model@world_size@worker_id@chunk_hash."""

    def __init__(self, chunk_hash):
        self.chunk_hash = chunk_hash

    def to_string(self):
        return f"vllm@tiny-test@1@0@{self.chunk_hash}"


def value(key, n):
    seed = int(key.chunk_hash[:8], 16)
    return bytes((seed + i * 131) % 256 for i in range(n))


class LmcacheConnectorTest(unittest.TestCase):
    def setUp(self):
        require_env(self)
        with Client(SOCKET) as c:
            c.register_model(PROFILE)
            self.n = c.bytes_for(MODEL, 1)
        self.conn = KvfabricRemoteConnector({"socket_path": SOCKET, "model": PROFILE, "namespace": unique_ns("lmcache")})

    def serve(self, tokens):
        """LMCache's retrieve/store order: contains (prefix), get the hits, compute, put the rest."""
        keys = [Key(h) for h in chunk_hashes(tokens, MODEL, "lmc", BS)]
        hit = asyncio.run(self.conn.batched_async_contains("req", keys))
        objs = asyncio.run(self.conn.batched_get(keys[:hit]))
        for k, o in zip(keys[:hit], objs):
            self.assertIsNotNone(o)
            self.assertEqual(bytes(o.byte_array), value(k, self.n))
        new = []
        for k in keys[hit:]:
            o = BytesMemoryObj(self.n)
            o.byte_array[:] = value(k, self.n)
            new.append(o)
        asyncio.run(self.conn.batched_put(keys[hit:], new))
        return hit

    def test_engine_loop(self):
        a = tokens_for(30, 3 * BS + 1)
        self.assertEqual(self.serve(a), 0)
        self.assertEqual(self.serve(a), 3)
        b = a[:BS] + tokens_for(31, 2 * BS)
        self.assertEqual(self.serve(b), 1)
        k0 = Key(chunk_hashes(a, MODEL, "lmc", BS)[0])
        self.assertTrue(asyncio.run(self.conn.exists(k0)))
        self.assertTrue(self.conn.exists_sync(k0))
        self.assertFalse(self.conn.exists_sync(Key("ff" * 32)))
        got = asyncio.run(self.conn.get(k0))
        self.assertEqual(bytes(got.byte_array), value(k0, self.n))
        self.assertIsNone(asyncio.run(self.conn.get(Key("ee" * 32))))
        listed = asyncio.run(self.conn.list())
        self.assertIn(k0.to_string(), listed)
        self.assertEqual(len(listed), 5)
        asyncio.run(self.conn.put(Key("dd" * 32), BytesMemoryObj(self.n)))
        self.assertTrue(self.conn.exists_sync(Key("dd" * 32)))
        asyncio.run(self.conn.close())


if __name__ == "__main__":
    unittest.main()

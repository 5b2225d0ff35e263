import hashlib
import unittest

import torch

from kvfabric_client.adapters.sglang import KvfabricHiCacheStorage
from tests.harness import BS, MODEL, PROFILE, SOCKET, require_env, tokens_for, unique_ns
from kvfabric_client import Client


def page_keys(tokens, page_size):
    """SGLang's chained page keys: sha256(prior hash bytes || u32le token ids), hex."""
    keys, prior = [], None
    for i in range(len(tokens) // page_size):
        h = hashlib.sha256()
        if prior:
            h.update(bytes.fromhex(prior))
        for t in tokens[i * page_size : (i + 1) * page_size]:
            h.update(t.to_bytes(4, "little"))
        prior = h.hexdigest()
        keys.append(prior)
    return keys


def page_value(key, nbytes):
    g = torch.Generator().manual_seed(int(key[:8], 16))
    return torch.randint(-30000, 30000, (nbytes // 2,), generator=g, dtype=torch.int16).view(torch.float16)


class SglangHiCacheTest(unittest.TestCase):
    def setUp(self):
        require_env(self)
        with Client(SOCKET) as c:
            c.register_model(PROFILE)
            self.page_bytes = c.bytes_for(MODEL, 1)
        self.storage = KvfabricHiCacheStorage({"socket_path": SOCKET, "model": PROFILE, "namespace": unique_ns("sglang")})

    def tearDown(self):
        self.storage.close()

    def serve(self, tokens):
        """HiCache's order: batch_exists (prefetch query), batch_get into host pages for the hits,
        compute the rest, batch_set (write-back) of the computed pages. Returns pages hit."""
        keys = page_keys(tokens, BS)
        hit = self.storage.batch_exists(keys)
        host = [torch.full((self.page_bytes // 2,), float("nan"), dtype=torch.float16) for _ in keys]
        got = self.storage.batch_get(keys[:hit], host[:hit])
        for i, t in enumerate(got):
            self.assertIsNotNone(t, f"page {i} reported present but not loaded")
        for i in range(hit, len(keys)):
            host[i].copy_(page_value(keys[i], self.page_bytes))  # the forward pass
        if hit < len(keys):
            self.assertTrue(self.storage.batch_set(keys[hit:], host[hit:]))
        for i, k in enumerate(keys):
            self.assertTrue(torch.equal(host[i].view(torch.int16), page_value(k, self.page_bytes).view(torch.int16)), f"page {i}")
        return hit

    def test_engine_loop(self):
        a = tokens_for(20, 4 * BS + 3)
        self.assertEqual(self.serve(a), 0)
        self.assertEqual(self.serve(a), 4)
        b = a[: 2 * BS] + tokens_for(21, 3 * BS)
        self.assertEqual(self.serve(b), 2)
        self.assertEqual(self.serve(b), 5)
        keys = page_keys(a, BS)
        self.assertTrue(self.storage.exists(keys[0]))
        self.assertFalse(self.storage.exists("00" * 32))
        one = self.storage.get(keys[1], torch.empty(self.page_bytes // 2, dtype=torch.float16))
        self.assertTrue(torch.equal(one.view(torch.int16), page_value(keys[1], self.page_bytes).view(torch.int16)))
        self.assertIsNone(self.storage.get("11" * 32))
        self.assertEqual(self.storage.batch_exists(["22" * 32] + keys), 0)


if __name__ == "__main__":
    unittest.main()

import base64
import unittest

from tests.harness import BS, MODEL, PROFILE, SOCKET, require_env, tokens_for, unique_ns
from kvfabric_client import Client, KvfError


class ClientTest(unittest.TestCase):
    def setUp(self):
        require_env(self)
        self.c = Client(SOCKET)
        self.layout = self.c.register_model(PROFILE)
        self.ns = unique_ns("client")

    def tearDown(self):
        self.c.close()

    def test_put_get_into_memoryview_and_tensor_byte_exact(self):
        import torch

        tokens = tokens_for(1, 3 * BS + 7)
        n = self.c.bytes_for(MODEL, 3)
        src = bytearray((i * 13 + 5) % 251 for i in range(n))
        self.assertEqual(self.c.lookup(tokens, MODEL, self.ns), 0)
        r = self.c.put(tokens, memoryview(src), MODEL, self.ns)
        self.assertEqual(r["tokensIndexed"], 3 * BS)
        self.assertEqual(self.c.lookup(tokens, MODEL, self.ns), 3 * BS)

        dst = bytearray(n)
        self.assertEqual(self.c.get_into(tokens, memoryview(dst), MODEL, self.ns), 3 * BS)
        self.assertEqual(dst, src)

        t = torch.zeros(n // 2, dtype=torch.float16)
        self.assertEqual(self.c.get_into(tokens, t, MODEL, self.ns), 3 * BS)
        self.assertEqual(bytes(t.view(torch.uint8).numpy().tobytes()), bytes(src))

        # A longer prompt sharing the first two chunks hits exactly two.
        other = tokens[: 2 * BS] + tokens_for(2, 2 * BS)
        self.assertEqual(self.c.lookup(other, MODEL, self.ns), 2 * BS)
        # batch_exists: consecutive fully cached prompts from the first.
        self.assertEqual(self.c.batch_exists([tokens[: 2 * BS], tokens, other], MODEL, self.ns), 2)
        st = self.c.stats()
        self.assertGreaterEqual(st["sdk"]["gets"]["count"], 2)
        self.assertGreaterEqual(st["agent"]["connections"], 1)

    def test_namespaces_are_separate(self):
        tokens = tokens_for(3, 2 * BS)
        self.c.put(tokens, bytearray(self.c.bytes_for(MODEL, 2)), MODEL, self.ns)
        self.assertEqual(self.c.lookup(tokens, MODEL, self.ns), 2 * BS)
        self.assertEqual(self.c.lookup(tokens, MODEL, self.ns + "-other"), 0)

    def test_typed_errors(self):
        region = self.c.create_region(64)
        with self.assertRaises(KvfError) as e:
            self.c.wait(self.c.submit_get(tokens_for(4, BS), region, [0] * len(self.layout["blockBytes"]), MODEL))
        self.assertEqual(e.exception.name, "OUT_OF_RANGE")
        with self.assertRaises(KvfError) as e:
            self.c.call("no_such_op")
        self.assertEqual(e.exception.name, "UNKNOWN_OPERATION")
        with self.assertRaises(KvfError) as e:
            self.c.call("cuda_ipc_open", handle=base64.b64encode(bytes(64)).decode(), bytes=16)
        self.assertEqual(e.exception.name, "CUDA_UNAVAILABLE")
        self.assertEqual(self.c.hello_info["cuda"]["available"], False)


if __name__ == "__main__":
    unittest.main()

import unittest

from tests.engines import MiniVllm
from tests.harness import BS, PROFILE, SOCKET, require_env, tokens_for, unique_ns


class VllmConnectorTest(unittest.TestCase):
    def setUp(self):
        require_env(self)

    def loop(self, key_mode):
        eng = MiniVllm({"socket_path": SOCKET, "model": PROFILE, "namespace": unique_ns("vllm"), "key_mode": key_mode, "python_hash_seed": "0"})
        a = tokens_for(10, 5 * BS + 3)
        # First sight: nothing cached, the whole prompt is computed and saved.
        self.assertEqual(eng.run("a1", a), (0, set()))
        # The same prompt: every full block comes from kvfabric (byte-exact, verified in run()).
        self.assertEqual(eng.run("a2", a), (5 * BS, set()))
        # Shares three blocks then diverges mid-block 3: three blocks hit.
        b = a[: 3 * BS + 5] + tokens_for(11, 2 * BS)
        self.assertEqual(eng.run("b1", b), (3 * BS, set()))
        # Block-aligned prompt fully cached: the last block is recomputed (vLLM needs one token).
        c = tokens_for(12, 4 * BS)
        self.assertEqual(eng.run("c1", c), (0, set()))
        self.assertEqual(eng.run("c2", c), (3 * BS, set()))
        # b's own tail blocks were saved too.
        self.assertEqual(eng.run("b2", b), (5 * BS, set()))
        stats = eng.worker.link.get().stats()
        self.assertGreater(stats["sdk"]["gets"]["hitTokens"], 0)

    def test_engine_loop_vllm_block_hash_keys(self):
        self.loop("vllm")

    def test_engine_loop_kvfabric_keys(self):
        self.loop("kvfabric")


if __name__ == "__main__":
    unittest.main()

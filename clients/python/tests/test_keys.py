import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from kvfabric_client import keys  # noqa: E402


class KeysTest(unittest.TestCase):
    def test_kvfabric_scheme_matches_docs_vector(self):
        self.assertEqual(
            keys.seed_hash("llama-3-8b", "default").hex(),
            "6d96cc175cea9c7c2c212b5e6890cbf9532908ee2558a267a989076bea717556",
        )
        self.assertEqual(
            keys.chunk_hashes(list(range(10)), "llama-3-8b", "default", 4),
            [
                "ad1f9ce4d7d77500af269b98fe84a09f3c92e9883bd2e285835226c7bdc87288",
                "bb39e001d9e53d68e3c3494f635b68969b6db1bea94bd847dbe16a86acd5d76b",
            ],
        )

    def test_cbor_subset_matches_cbor2_canonical(self):
        import cbor2  # Debian python3-cbor2: a reference only, not a dependency of the package

        samples = [
            0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -24, -25, -(2**63),
            b"", b"\x00" * 32, "", "0", "héllo", None, True, False,
            (b"\x01" * 32, tuple(range(300)), None),
            (b"p", (1, 2, 3), ("lora-a", (b"mm", 5))),
            [], [[]], ("x" * 300,),
        ]
        for s in samples:
            self.assertEqual(keys.cbor(s), cbor2.dumps(s, canonical=True), repr(s)[:60])

    def test_vllm_block_hashes_follow_sha256_cbor(self):
        import cbor2
        import hashlib

        def ref(obj):
            return hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()

        tokens = list(range(1000, 1040))
        got = keys.vllm_block_hashes(tokens, 16, "0")
        parent = ref("0")
        want = []
        for i in range(2):
            parent = ref((parent, tuple(tokens[i * 16 : (i + 1) * 16]), None))
            want.append(parent)
        self.assertEqual(got, want)
        self.assertEqual(len(got), 2)  # the partial tail has no hash
        self.assertNotEqual(keys.vllm_block_hashes(tokens, 16, "1"), got)
        with self.assertRaises(ValueError):
            keys.vllm_none_hash(None)

    def test_engine_key_tokens(self):
        a = keys.key_tokens(b"\x01" * 32, 16)
        self.assertEqual(len(a), 16)
        self.assertEqual(a[8:], [0] * 8)
        self.assertNotEqual(a, keys.key_tokens(b"\x02" + b"\x01" * 31, 16))
        self.assertEqual(keys.key_tokens("abc", 16), keys.key_tokens(b"abc", 16))
        self.assertNotEqual(keys.key_tokens(1, 16), keys.key_tokens(-1, 16))
        with self.assertRaises(ValueError):
            keys.key_tokens(b"x", 4)


if __name__ == "__main__":
    unittest.main()

"""Keys: kvfabric's own scheme (docs/keys.md) and engine-supplied keys (vLLM block hashes,
SGLang page keys, LMCache chunk keys), standard library only.

The agent always names KV by token sequences (the kvfabric key scheme hashes them). An engine
key is turned into one chunk of "key tokens" that the agent hashes like any other chunk:

    d       = sha256(b"kvfabric/engine-key/v1" || key_bytes)
    tokens  = the 8 little-endian u32 words of d, then zeros up to chunkTokens

so kvfabric's chained hash of a list of engine keys is a function of exactly those keys, in
order. For vLLM the keys are its block hashes (themselves chained, so the chain adds nothing
and loses nothing); for SGLang and LMCache each key is stored as its own one-chunk prompt.
chunkTokens must be >= 8.
"""

import hashlib
import struct

ENGINE_KEY_TAG = b"kvfabric/engine-key/v1"
KVFABRIC_TAG = b"kvfabric/keys/v1"


# ---- kvfabric key scheme v1 (reference; the agent computes these) -------------------------------

def seed_hash(model_id, namespace):
    m, n = model_id.encode(), namespace.encode()
    return hashlib.sha256(KVFABRIC_TAG + struct.pack("<I", len(m)) + m + struct.pack("<I", len(n)) + n).digest()


def chunk_hashes(tokens, model_id, namespace, chunk_tokens):
    prev, out = seed_hash(model_id, namespace), []
    for i in range(len(tokens) // chunk_tokens):
        chunk = tokens[i * chunk_tokens : (i + 1) * chunk_tokens]
        prev = hashlib.sha256(prev + struct.pack(f"<{chunk_tokens}I", *chunk)).digest()
        out.append(prev.hex())
    return out


# ---- engine keys -> key tokens ------------------------------------------------------------------

def key_bytes(key):
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, int):
        # vLLM may expose block hashes as ints (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES); big-endian,
        # signed, minimal length, so that distinct ints never share bytes.
        return key.to_bytes((key.bit_length() + 8) // 8 or 1, "big", signed=True)
    raise TypeError(f"unsupported key type {type(key).__name__}")


def key_tokens(key, chunk_tokens):
    if chunk_tokens < 8:
        raise ValueError("engine keys need chunkTokens >= 8")
    d = hashlib.sha256(ENGINE_KEY_TAG + key_bytes(key)).digest()
    return list(struct.unpack("<8I", d)) + [0] * (chunk_tokens - 8)


def keys_to_tokens(keys, chunk_tokens):
    out = []
    for k in keys:
        out.extend(key_tokens(k, chunk_tokens))
    return out


# ---- vLLM's reproducible block hashes (sha256_cbor) --------------------------------------------
#
# vLLM (v1 engine, prefix_caching_hash_algo="sha256_cbor"):
#   NONE_HASH  = sha256(cbor(PYTHONHASHSEED as a text string))      (needs PYTHONHASHSEED set)
#   h[i]       = sha256(cbor((h[i-1] or NONE_HASH, tuple(block_tokens), extra_keys)))
# with cbor = cbor2.dumps(..., canonical=True). extra_keys is None for plain text requests; LoRA
# names, multimodal hashes and cache salts make it a tuple. The encoder below covers exactly the
# types that appear: unsigned/negative ints, bytes, text, tuples/lists, None, booleans.

def cbor(obj):
    out = bytearray()
    _cbor(obj, out)
    return bytes(out)


def _head(major, n, out):
    if n < 24:
        out.append((major << 5) | n)
    elif n < 1 << 8:
        out += bytes([(major << 5) | 24, n])
    elif n < 1 << 16:
        out.append((major << 5) | 25)
        out += struct.pack(">H", n)
    elif n < 1 << 32:
        out.append((major << 5) | 26)
        out += struct.pack(">I", n)
    elif n < 1 << 64:
        out.append((major << 5) | 27)
        out += struct.pack(">Q", n)
    else:
        raise ValueError("integer out of CBOR's 64-bit range")


def _cbor(obj, out):
    if obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(0, obj, out)
        else:
            _head(1, -1 - obj, out)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        b = bytes(obj)
        _head(2, len(b), out)
        out += b
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        _head(3, len(b), out)
        out += b
    elif isinstance(obj, (tuple, list)):
        _head(4, len(obj), out)
        for x in obj:
            _cbor(x, out)
    else:
        raise TypeError(f"CBOR subset: unsupported type {type(obj).__name__}")


def sha256_cbor(obj):
    return hashlib.sha256(cbor(obj)).digest()


def vllm_none_hash(python_hash_seed):
    """vLLM's NONE_HASH for sha256_cbor; python_hash_seed is the PYTHONHASHSEED string."""
    if python_hash_seed is None:
        raise ValueError("reproducible vLLM block hashes need PYTHONHASHSEED to be set")
    return sha256_cbor(str(python_hash_seed))


def vllm_block_hashes(tokens, block_size, python_hash_seed, extra_keys=None):
    """Block hashes of the full blocks of `tokens`, as vLLM computes them with sha256_cbor."""
    parent = vllm_none_hash(python_hash_seed)
    out = []
    for i in range(len(tokens) // block_size):
        block = tuple(tokens[i * block_size : (i + 1) * block_size])
        parent = sha256_cbor((parent, block, extra_keys))
        out.append(parent)
    return out

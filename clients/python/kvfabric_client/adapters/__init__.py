"""Engine adapters: vLLM KV connector (vllm.py), SGLang HiCache storage (sglang.py), LMCache
remote connector (lmcache.py). Each follows its engine's documented interface; see
docs/integration.md for how to plug them in."""

// kvfabric_native: module entry. Free functions (checksums, memcpy benchmark, build info) live
// here; arenas in arena_js.cc, UCX in ucx.cc. The typed boundary is native/index.ts.
#include <napi.h>
#include <ucp/api/ucp.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "arena.h"
#include "async_work.h"
#include "checksum.h"
#include "cuda_mem.h"
#include "errors.h"
#include "js_args.h"
#include "ucx.h"

#ifndef KVF_ADDON_VERSION
#define KVF_ADDON_VERSION "0.0.0"
#endif

namespace kvf {
namespace {

// Limits for memcpyBench: enough for any block size the benchmark uses, bounded so a typo
// cannot allocate the machine away or block the event loop for minutes.
constexpr double kMemcpyBenchBytesMax = 4.0 * 1024 * 1024 * 1024;
constexpr double kMemcpyBenchIterationsMax = 1e6;

// crc32c(data, seed?)
Napi::Value Crc32cJs(const Napi::CallbackInfo& info) {
  Bytes data = BytesArg(info, 0, "data");
  return Napi::Number::New(info.Env(), Crc32c(data.data, data.length, SeedArg(info, 1)));
}

// crc32cRange(data, offset, length, seed?)
Napi::Value Crc32cRangeJs(const Napi::CallbackInfo& info) {
  Bytes data = BytesArg(info, 0, "data");
  uint64_t offset = SizeArg(info, 1, "offset");
  uint64_t length = SizeArg(info, 2, "length");
  if (offset > data.length || length > data.length - offset) {
    Fail(Code::OutOfRange, "range [" + std::to_string(offset) + ", +" + std::to_string(length) +
                               ") leaves the " + std::to_string(data.length) + "-byte buffer");
  }
  return Napi::Number::New(info.Env(), Crc32c(data.data + offset, length, SeedArg(info, 3)));
}

// crc32cSoftware(data, seed?): the portable path, so tests can check it on SSE4.2 machines.
Napi::Value Crc32cSoftwareJs(const Napi::CallbackInfo& info) {
  Bytes data = BytesArg(info, 0, "data");
  return Napi::Number::New(info.Env(), Crc32cSoftware(data.data, data.length, SeedArg(info, 1)));
}

// Float64Array [offset0, length0, offset1, length1, ...] -> pairs, each checked against `limit`.
std::vector<std::pair<uint64_t, uint64_t>> RangePairs(const Napi::Value& v, uint64_t limit) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    Fail(Code::BadRequest, "ranges must be a Float64Array of [offset, length] pairs");
  }
  Napi::Float64Array a = v.As<Napi::Float64Array>();
  if (a.ElementLength() % 2 != 0) Fail(Code::BadRequest, "ranges must hold [offset, length] pairs");
  std::vector<std::pair<uint64_t, uint64_t>> out;
  out.reserve(a.ElementLength() / 2);
  for (size_t k = 0; k < a.ElementLength(); k += 2) {
    double o = a[k], l = a[k + 1];
    if (!(o >= 0 && l >= 0 && o <= 9007199254740991.0 && l <= 9007199254740991.0) ||
        o != static_cast<double>(static_cast<uint64_t>(o)) ||
        l != static_cast<double>(static_cast<uint64_t>(l))) {
      Fail(Code::BadRequest, "range " + std::to_string(k / 2) + " is not a pair of non-negative integers");
    }
    uint64_t off = static_cast<uint64_t>(o), len = static_cast<uint64_t>(l);
    if (off > limit || len > limit - off) {
      Fail(Code::OutOfRange, "range [" + std::to_string(off) + ", +" + std::to_string(len) +
                                 ") leaves the " + std::to_string(limit) + "-byte buffer");
    }
    out.emplace_back(off, len);
  }
  return out;
}

// crc32cRangesAsync(data, ranges: Float64Array) -> Promise<Uint32Array>: one CRC per range,
// computed on libuv's thread pool. `data` is held until the promise settles; the caller must not
// write the ranges meanwhile (the SDK checks blocks it has just received or is about to send).
Napi::Value Crc32cRangesAsyncJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Bytes data = BytesArg(info, 0, "data");
  auto ranges = std::make_shared<std::vector<std::pair<uint64_t, uint64_t>>>(RangePairs(info[1], data.length));
  auto crcs = std::make_shared<std::vector<uint32_t>>(ranges->size());
  const uint8_t* base = data.data;
  return PromiseWork::Start(
      env, "kvf.crc32cRanges",
      [base, ranges, crcs] {
        for (size_t k = 0; k < ranges->size(); ++k) {
          (*crcs)[k] = Crc32c(base + (*ranges)[k].first, (*ranges)[k].second);
        }
      },
      [crcs](Napi::Env e) -> Napi::Value {
        Napi::Uint32Array out = Napi::Uint32Array::New(e, crcs->size());
        for (size_t k = 0; k < crcs->size(); ++k) out[k] = (*crcs)[k];
        return out;
      },
      {info[0]});
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// memcpyBench(bytes, iterations) -> GB/s (1e9 bytes copied per second), buffers pre-touched.
Napi::Value MemcpyBenchJs(const Napi::CallbackInfo& info) {
  size_t bytes = SizeArg(info, 0, "bytes", kMemcpyBenchBytesMax);
  uint64_t iterations = SizeArg(info, 1, "iterations", kMemcpyBenchIterationsMax);
  if (bytes == 0 || iterations == 0) Fail(Code::BadRequest, "bytes and iterations must be positive");
  size_t rounded = (bytes + 4095) / 4096 * 4096;
  std::unique_ptr<void, FreeDeleter> src(std::aligned_alloc(4096, rounded));
  std::unique_ptr<void, FreeDeleter> dst(std::aligned_alloc(4096, rounded));
  if (!src || !dst) Fail(Code::BadRequest, "cannot allocate 2 x " + std::to_string(bytes) + " bytes");
  std::memset(src.get(), 0x5a, bytes);
  std::memset(dst.get(), 0, bytes);
  std::memcpy(dst.get(), src.get(), bytes);  // warm-up: page tables, caches
  auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < iterations; ++i) {
    std::memcpy(dst.get(), src.get(), bytes);
    // Keep the compiler from eliding repeated identical copies.
    asm volatile("" : : "r"(dst.get()) : "memory");
  }
  std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  double gbps = static_cast<double>(bytes) * static_cast<double>(iterations) / elapsed.count() / 1e9;
  return Napi::Number::New(info.Env(), gbps);
}

// info() -> build and runtime facts for nativeInfo().
Napi::Value InfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("addonVersion", KVF_ADDON_VERSION);
  out.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  out.Set("ucxVersion", ucp_get_version_string());
  out.Set("cudaCompiled", Napi::Boolean::New(env, cuda::Compiled()));
  std::string cuda_error;
  out.Set("cudaDevices", Napi::Number::New(env, cuda::DeviceCount(&cuda_error)));
  if (!cuda_error.empty()) out.Set("cudaError", cuda_error);
  out.Set("crc32c", Crc32cImplementation());
  return out;
}

}  // namespace

// shm.cc (agent shared memory, CUDA IPC handles).
void InitShm(Napi::Env env, Napi::Object exports);

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("crc32c", Napi::Function::New<Crc32cJs>(env, "crc32c"));
  exports.Set("crc32cRange", Napi::Function::New<Crc32cRangeJs>(env, "crc32cRange"));
  exports.Set("crc32cRangesAsync", Napi::Function::New<Crc32cRangesAsyncJs>(env, "crc32cRangesAsync"));
  exports.Set("crc32cSoftware", Napi::Function::New<Crc32cSoftwareJs>(env, "crc32cSoftware"));
  exports.Set("memcpyBench", Napi::Function::New<MemcpyBenchJs>(env, "memcpyBench"));
  exports.Set("info", Napi::Function::New<InfoJs>(env, "info"));
  InitArena(env, exports);
  InitShm(env, exports);
  return InitUcx(env, exports);
}

}  // namespace kvf

// NODE_API_MODULE wants a plain identifier.
static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return kvf::Init(env, exports); }
NODE_API_MODULE(kvfabric_native, InitModule)

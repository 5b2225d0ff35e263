// NativeArena: the JS face of kvf::Arena. native/index.ts wraps it in the typed Arena class.
#include <chrono>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "arena.h"
#include "async_work.h"
#include "errors.h"
#include "js_args.h"

namespace kvf {
namespace {

// Tags NativeArena objects so ArenaFromJs can tell them from other wrapped objects.
const napi_type_tag kArenaTag = {0x6b76666172656e61ULL, 0x4172656e61763031ULL};

Napi::FunctionReference* g_arena_ctor = nullptr;
// NewArenaJs passes its Arena through the constructor as a single External argument; a NativeArena
// is built this way only from native code (JS cannot make an External).
using ArenaHolder = std::shared_ptr<Arena>;

class ArenaWrap : public Napi::ObjectWrap<ArenaWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "NativeArena",
        {
            InstanceAccessor<&ArenaWrap::Kind>("kind"),
            InstanceAccessor<&ArenaWrap::BlockBytes>("blockBytes"),
            InstanceAccessor<&ArenaWrap::BlockCount>("blockCount"),
            InstanceAccessor<&ArenaWrap::TotalBytes>("bytes"),
            InstanceAccessor<&ArenaWrap::BaseAddress>("baseAddress"),
            InstanceAccessor<&ArenaWrap::DeviceId>("deviceId"),
            InstanceAccessor<&ArenaWrap::Capacity>("capacity"),
            InstanceAccessor<&ArenaWrap::Used>("used"),
            InstanceAccessor<&ArenaWrap::Free>("free"),
            InstanceAccessor<&ArenaWrap::Closed>("closed"),
            InstanceMethod<&ArenaWrap::Alloc>("alloc"),
            InstanceMethod<&ArenaWrap::AllocMany>("allocMany"),
            InstanceMethod<&ArenaWrap::Release>("release"),
            InstanceMethod<&ArenaWrap::IsAllocated>("isAllocated"),
            InstanceMethod<&ArenaWrap::AddressOf>("addressOf"),
            InstanceMethod<&ArenaWrap::Write>("write"),
            InstanceMethod<&ArenaWrap::Read>("read"),
            InstanceMethod<&ArenaWrap::Checksum>("checksum"),
            InstanceMethod<&ArenaWrap::ChecksumsAsync>("checksumsAsync"),
            InstanceMethod<&ArenaWrap::PrefaultAsync>("prefault"),
            InstanceMethod<&ArenaWrap::HostView>("hostView"),
            InstanceMethod<&ArenaWrap::Close>("close"),
        });
  }

  // new NativeArena(kind: 'host'|'cuda', blockBytes, blockCount, deviceId, populate, arenaBytesMax)
  explicit ArenaWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ArenaWrap>(info) {
    info.This().As<Napi::Object>().TypeTag(&kArenaTag);
    if (info.Length() == 1 && info[0].IsExternal()) {
      arena_ = *info[0].As<Napi::External<ArenaHolder>>().Data();
      return;
    }
    ArenaConfig config;
    std::string kind = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
    if (kind != "host" && kind != "cuda") Fail(Code::BadRequest, "kind must be 'host' or 'cuda'");
    config.kind = kind == "cuda" ? ArenaKind::Cuda : ArenaKind::Host;
    config.block_bytes = SizeArg(info, 1, "blockBytes");
    config.block_count = static_cast<uint32_t>(SizeArg(info, 2, "blockCount", 4294967294.0));
    config.device = static_cast<int>(SizeArg(info, 3, "deviceId", 1024));
    config.populate = info[4].ToBoolean();
    config.arena_bytes_max = SizeArg(info, 5, "arenaBytesMax");
    arena_ = std::make_shared<Arena>(config);
  }

  std::shared_ptr<Arena> arena() const {
    if (arena_->closed()) Fail(Code::Closed, "arena is closed");
    return arena_;
  }

 private:
  // Fixed properties stay readable after close (they describe what the arena was).
  Napi::Value Kind(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), ArenaKindName(arena_->config().kind));
  }
  Napi::Value BlockBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(arena_->config().block_bytes));
  }
  Napi::Value BlockCount(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), arena_->config().block_count);
  }
  Napi::Value TotalBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(arena_->bytes()));
  }
  Napi::Value BaseAddress(const Napi::CallbackInfo& info) {
    return Napi::BigInt::New(info.Env(), arena_->base_address());
  }
  Napi::Value DeviceId(const Napi::CallbackInfo& info) {
    bool cuda = arena_->config().kind == ArenaKind::Cuda;
    return Napi::Number::New(info.Env(), cuda ? arena_->config().device : -1);
  }
  Napi::Value Closed(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), arena_->closed());
  }

  Napi::Value Capacity(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), arena_->capacity());
  }
  Napi::Value Used(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), arena_->used());
  }
  Napi::Value Free(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), arena_->free());
  }

  Napi::Value Alloc(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), arena_->Alloc());
  }
  Napi::Value AllocMany(const Napi::CallbackInfo& info) {
    auto n = static_cast<uint32_t>(SizeArg(info, 0, "n", 4294967294.0));
    std::vector<uint32_t> indexes = arena_->AllocMany(n);
    Napi::Array out = Napi::Array::New(info.Env(), indexes.size());
    for (uint32_t i = 0; i < indexes.size(); ++i) out.Set(i, Napi::Number::New(info.Env(), indexes[i]));
    return out;
  }
  Napi::Value Release(const Napi::CallbackInfo& info) {
    arena_->Release(IndexArg(info, 0));
    return info.Env().Undefined();
  }
  Napi::Value IsAllocated(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), arena_->IsAllocated(IndexArg(info, 0)));
  }
  Napi::Value AddressOf(const Napi::CallbackInfo& info) {
    return Napi::BigInt::New(info.Env(), arena_->AddressOf(IndexArg(info, 0)));
  }

  // write(index, offset, src)
  Napi::Value Write(const Napi::CallbackInfo& info) {
    uint32_t index = IndexArg(info, 0);
    uint64_t offset = SizeArg(info, 1, "offset");
    Bytes src = BytesArg(info, 2, "src");
    arena_->Write(index, offset, src.data, src.length);
    return info.Env().Undefined();
  }
  // read(index, offset, dst): fills all of dst
  Napi::Value Read(const Napi::CallbackInfo& info) {
    uint32_t index = IndexArg(info, 0);
    uint64_t offset = SizeArg(info, 1, "offset");
    Bytes dst = BytesArg(info, 2, "dst");
    arena_->Read(index, offset, dst.data, dst.length);
    return info.Env().Undefined();
  }
  // checksum(index, offset = 0, length = blockBytes - offset)
  Napi::Value Checksum(const Napi::CallbackInfo& info) {
    uint32_t index = IndexArg(info, 0);
    uint64_t block = arena_->config().block_bytes;
    uint64_t offset = OptSizeArg(info, 1, "offset", 0);
    uint64_t length = OptSizeArg(info, 2, "length", offset <= block ? block - offset : 0);
    return Napi::Number::New(info.Env(), arena_->Checksum(index, offset, length));
  }

  // checksumsAsync(indices: Uint32Array, lengths: Float64Array) -> Promise<Uint32Array>: the CRC
  // of the first lengths[k] bytes of block indices[k], on libuv's thread pool.
  Napi::Value ChecksumsAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
        !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
      Fail(Code::BadRequest, "checksumsAsync(indices: Uint32Array, lengths: Float64Array)");
    }
    Napi::Uint32Array idx = info[0].As<Napi::Uint32Array>();
    Napi::Float64Array len = info[1].As<Napi::Float64Array>();
    if (idx.ElementLength() != len.ElementLength()) Fail(Code::BadRequest, "indices and lengths differ in length");
    auto blocks = std::make_shared<std::vector<std::pair<uint32_t, uint64_t>>>();
    blocks->reserve(idx.ElementLength());
    const uint64_t bb = arena_->config().block_bytes;
    for (size_t k = 0; k < idx.ElementLength(); ++k) {
      double l = len[k];
      if (!(l >= 0 && l <= static_cast<double>(bb)) || l != static_cast<double>(static_cast<uint64_t>(l))) {
        Fail(Code::OutOfRange, "length " + Num(l) + " is not an integer in [0, " + std::to_string(bb) + "]");
      }
      blocks->emplace_back(idx[k], static_cast<uint64_t>(l));
    }
    std::shared_ptr<Arena> a = arena();
    auto out = std::make_shared<std::vector<uint32_t>>();
    return PromiseWork::Start(
        env, "kvf.arenaChecksums", [a, blocks, out] { *out = a->ChecksumMany(*blocks); },
        [out](Napi::Env e) -> Napi::Value {
          Napi::Uint32Array r = Napi::Uint32Array::New(e, out->size());
          for (size_t k = 0; k < out->size(); ++k) r[k] = (*out)[k];
          return r;
        });
  }

  // prefault() -> Promise<{method, ms}> (Arena::Prefault on libuv's thread pool).
  Napi::Value PrefaultAsync(const Napi::CallbackInfo& info) {
    std::shared_ptr<Arena> a = arena();
    auto method = std::make_shared<std::string>();
    auto ms = std::make_shared<double>(0);
    return PromiseWork::Start(
        info.Env(), "kvf.arenaPrefault",
        [a, method, ms] {
          auto t0 = std::chrono::steady_clock::now();
          *method = a->Prefault();
          *ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        },
        [method, ms](Napi::Env e) -> Napi::Value {
          Napi::Object o = Napi::Object::New(e);
          o.Set("method", *method);
          o.Set("ms", *ms);
          return o;
        });
  }

  // A Buffer over the block's memory (host arenas only). The finalizer holds a reference to the
  // region, so the mapping outlives close() for as long as JS can reach the view.
  Napi::Value HostView(const Napi::CallbackInfo& info) {
    uint32_t index = IndexArg(info, 0);
    void* ptr = nullptr;
    std::shared_ptr<Region> region = arena_->HostBlock(index, &ptr);
    if (!region) return info.Env().Undefined();
    auto* hold = new std::shared_ptr<Region>(std::move(region));
    return Napi::Buffer<uint8_t>::New(
        info.Env(), static_cast<uint8_t*>(ptr), static_cast<size_t>(arena_->config().block_bytes),
        [](Napi::Env, uint8_t*, std::shared_ptr<Region>* held) { delete held; }, hold);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    arena_->Close();
    return info.Env().Undefined();
  }

  std::shared_ptr<Arena> arena_;
};

}  // namespace

void InitArena(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = ArenaWrap::Define(env);
  g_arena_ctor = new Napi::FunctionReference(Napi::Persistent(ctor));
  exports.Set("NativeArena", ctor);
}

Napi::Object NewArenaJs(Napi::Env env, std::shared_ptr<Arena> arena) {
  ArenaHolder holder = std::move(arena);
  return g_arena_ctor->New({Napi::External<ArenaHolder>::New(env, &holder)});
}

std::shared_ptr<Arena> ArenaFromJs(Napi::Value value) {
  if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kArenaTag)) {
    Fail(Code::BadRequest, "expected a NativeArena");
  }
  return ArenaWrap::Unwrap(value.As<Napi::Object>())->arena();
}

}  // namespace kvf

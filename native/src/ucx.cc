// N-API bindings for the UCX core (ucx_core.h): NativeUcxWorker, NativeUcxEndpoint and
// NativeUcxRegion. The typed JS API on top of these is the UCX section of native/index.ts.
//
// Buffers: every op keeps a reference to its local Uint8Array until UCX has called the op back
// (not merely until the promise settles: a timed-out op settles first and is released later).
// Worker addresses and rkeys leave the addon inside an envelope (ucx_wire.h) with a magic, the
// registered range and a checksum, so garbage bytes are BAD_REQUEST instead of a UCX crash, and a
// remote range outside the registered region is OUT_OF_RANGE before it reaches UCX.
#include "ucx.h"

#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "arena.h"
#include "checksum.h"
#include "cuda_mem.h"
#include "async_work.h"
#include "js_args.h"
#include "ucx_core.h"
#include "ucx_wire.h"

namespace kvf {
namespace {

using ucx::Batch;
using ucx::WorkerCore;

Napi::FunctionReference* g_region_ctor = nullptr;
Napi::FunctionReference* g_endpoint_ctor = nullptr;
bool g_worker_open = false;  // one worker per process (JS thread only)
// A longer spin is busy polling by another name; 'busy' progress exists for that.
constexpr int64_t kSpinUsMax = 1000000;

// How long SyncWait spins with `pause` before it starts yielding the core between polls.
constexpr int64_t kSyncPureSpinNs = 20'000;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Context-level UCX calls (mem_map, rkey_pack) run on the progress thread while it lives, since
// it may be using the same registration cache; once it is gone they run here.
void OnUcxThread(const std::shared_ptr<WorkerCore>& core, const std::function<void()>& fn) {
  if (!core->closing()) {
    core->RunSync(fn);
    return;
  }
  core->Join();
  fn();
}

struct JsBaton {
  Napi::Promise::Deferred deferred;
  std::vector<Napi::ObjectReference> keep;
  explicit JsBaton(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

Bytes TypedBytes(Napi::Value v, const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Fail(Code::BadRequest, std::string(name) + " must be a Uint8Array");
  }
  auto arr = v.As<Napi::Uint8Array>();
  return Bytes{arr.Data(), arr.ByteLength()};
}

uint64_t BigIntArg(Napi::Value v, const char* name) {
  if (!v.IsBigInt()) Fail(Code::BadRequest, std::string(name) + " must be a bigint");
  bool lossless = false;
  uint64_t out = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) Fail(Code::BadRequest, std::string(name) + " must fit in 64 bits");
  return out;
}

double NumberProp(Napi::Object o, const char* name, double fallback) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) Fail(Code::BadRequest, std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > kMaxSafeInteger || d != static_cast<double>(static_cast<uint64_t>(d))) {
    Fail(Code::BadRequest, std::string(name) + " must be a non-negative integer");
  }
  return d;
}

// ---- regions ---------------------------------------------------------------------------------

class RegionWrap : public Napi::ObjectWrap<RegionWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeUcxRegion",
                       {InstanceAccessor<&RegionWrap::Address>("address"),
                        InstanceAccessor<&RegionWrap::Length>("length"),
                        InstanceAccessor<&RegionWrap::MemoryType>("memoryType"),
                        InstanceMethod<&RegionWrap::PackRkey>("packRkey"),
                        InstanceMethod<&RegionWrap::Deregister>("deregister")});
  }
  explicit RegionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RegionWrap>(info) {}
  ~RegionWrap() override { Unmap(); }

  void Init(std::shared_ptr<WorkerCore> core, ucp_mem_h memh, uint64_t addr, size_t len,
            bool allocated, const char* mem_type, Napi::Object keep,
            std::shared_ptr<void> keep_native = nullptr) {
    keep_native_ = std::move(keep_native);
    core_ = std::move(core);
    context_ = core_->context();
    memh_ = memh;
    address_ = addr;
    length_ = len;
    allocated_ = allocated;
    mem_type_ = mem_type;
    keep_ = Napi::Persistent(keep);
  }

 private:
  Napi::Value Address(const Napi::CallbackInfo& info) { return Napi::BigInt::New(info.Env(), address_); }
  Napi::Value Length(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(length_));
  }
  Napi::Value MemoryType(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), mem_type_); }

  Napi::Value PackRkey(const Napi::CallbackInfo& info) {
    if (memh_ == nullptr) Fail(Code::Closed, "region is deregistered");
    std::vector<uint8_t> packed;
    OnUcxThread(core_, [&] {
      void* buf = nullptr;
      size_t size = 0;
      ucs_status_t st = ucp_rkey_pack(context_->ctx, memh_, &buf, &size);
      if (st != UCS_OK) Fail(Code::Transport, std::string("ucp_rkey_pack: ") + ucs_status_string(st));
      packed.assign(static_cast<uint8_t*>(buf), static_cast<uint8_t*>(buf) + size);
      ucp_rkey_buffer_release(buf);
    });
    std::vector<uint8_t> wire = ucx::Seal(ucx::kRkeyMagic, address_, length_, packed);
    return Napi::Buffer<uint8_t>::Copy(info.Env(), wire.data(), wire.size());
  }

  Napi::Value Deregister(const Napi::CallbackInfo& info) {
    if (memh_ == nullptr) Fail(Code::Closed, "region is already deregistered");
    Unmap();
    return info.Env().Undefined();
  }

  // Memory from allocBuffer is unmapped by the Buffer's finalizer (JS may still read it); here we
  // only drop our reference. Registered memory is unmapped now.
  void Unmap() {
    if (memh_ == nullptr) return;
    if (!allocated_) {
      ucp_mem_h memh = memh_;
      auto ctx = context_;
      OnUcxThread(core_, [&] { ucp_mem_unmap(ctx->ctx, memh); });
    }
    memh_ = nullptr;
    keep_native_.reset();
    if (!keep_.IsEmpty()) keep_.Reset();
  }

  std::shared_ptr<WorkerCore> core_;
  std::shared_ptr<ucx::Context> context_;
  ucp_mem_h memh_ = nullptr;
  uint64_t address_ = 0;
  size_t length_ = 0;
  bool allocated_ = false;
  const char* mem_type_ = "host";
  Napi::ObjectReference keep_;
  std::shared_ptr<void> keep_native_;  // an arena's memory region: stays mapped while registered
};

Napi::Object NewRegion(Napi::Env env, std::shared_ptr<WorkerCore> core, ucp_mem_h memh,
                       uint64_t addr, size_t len, bool allocated, const char* mem_type,
                       Napi::Object keep, std::shared_ptr<void> keep_native = nullptr) {
  Napi::Object obj = g_region_ctor->New({});
  RegionWrap::Unwrap(obj)->Init(std::move(core), memh, addr, len, allocated, mem_type, keep,
                                std::move(keep_native));
  return obj;
}

ucp_mem_h MapMemory(const std::shared_ptr<WorkerCore>& core, void* addr, size_t len,
                    ucs_memory_type_t type, bool allocate) {
  ucp_mem_map_params_t p{};
  p.field_mask = UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_FLAGS |
                 UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
  p.length = len;
  p.memory_type = type;
  if (allocate) {
    p.flags = UCP_MEM_MAP_ALLOCATE;
  } else {
    p.field_mask |= UCP_MEM_MAP_PARAM_FIELD_ADDRESS;
    p.address = addr;
  }
  ucp_mem_h memh = nullptr;
  OnUcxThread(core, [&] {
    ucs_status_t st = ucp_mem_map(core->context()->ctx, &p, &memh);
    if (st != UCS_OK) Fail(Code::Transport, std::string("ucp_mem_map: ") + ucs_status_string(st));
  });
  return memh;
}

// ---- endpoints -------------------------------------------------------------------------------

struct RkeyInfo {
  ucp_rkey_h rkey;
  uint64_t base;
  uint64_t length;
  // The peer's region mapped into this process by UCX (ucp_rkey_ptr: shared-memory transports),
  // linear over [base, base + length); nullptr when UCX cannot map it (tcp, RDMA, device memory).
  uint8_t* mapped = nullptr;
};

// One direct copy: between a local range and the peer's mapped memory.
struct DirectOp {
  uint8_t* local;
  uint8_t* remote;
  size_t length;
};

class WorkerWrap;

class EndpointWrap : public Napi::ObjectWrap<EndpointWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeUcxEndpoint",
                       {InstanceMethod<&EndpointWrap::UnpackRkey>("unpackRkey"),
                        InstanceMethod<&EndpointWrap::Submit>("submit"),
                        InstanceMethod<&EndpointWrap::SubmitArena>("submitArena"),
                        InstanceMethod<&EndpointWrap::Direct>("direct"),
                        InstanceMethod<&EndpointWrap::RkeyMapped>("rkeyMapped"),
                        InstanceAccessor<&EndpointWrap::Dead>("dead"),
                        InstanceMethod<&EndpointWrap::Close>("close")});
  }
  explicit EndpointWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EndpointWrap>(info) {}
  void Init(WorkerWrap* worker, std::shared_ptr<WorkerCore> core, std::shared_ptr<ucx::EpCore> ep,
            Napi::Object worker_obj) {
    worker_ = worker;
    core_ = std::move(core);
    ep_ = std::move(ep);
    worker_ref_ = Napi::Persistent(worker_obj);
  }

 private:
  Napi::Value UnpackRkey(const Napi::CallbackInfo& info);
  Napi::Value Submit(const Napi::CallbackInfo& info);
  Napi::Value SubmitArena(const Napi::CallbackInfo& info);
  const RkeyInfo& RemoteRange(const Napi::Object& o, uint32_t i, uint64_t len, uint64_t* remote);
  // submit/submitArena/direct's first two arguments: 'get' | 'put' and an array of ops.
  static ucx::OpKind KindAndOps(const Napi::CallbackInfo& info, Napi::Array* ops, bool allow_empty);
  // Hands a parsed batch to the worker (deadline, promise); the promise settles with its statuses.
  Napi::Value Launch(Napi::Env env, std::unique_ptr<Batch> batch, std::unique_ptr<JsBaton> baton, uint64_t bytes);
  Napi::Value Direct(const Napi::CallbackInfo& info);
  Napi::Value RkeyMapped(const Napi::CallbackInfo& info);
  struct ParsedOp {
    Napi::Value local;  // the JS buffer, to keep alive while the op is in flight
    uint8_t* data;      // local range start
    uint64_t length;
    uint64_t remote;
    const RkeyInfo* rkey;
  };
  ParsedOp ParseOp(const Napi::Array& ops, uint32_t i);
  Napi::Value Dead(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), ep_ && ep_->dead.load());
  }
  Napi::Value Close(const Napi::CallbackInfo& info);
  void CheckOpen();

  WorkerWrap* worker_ = nullptr;
  std::shared_ptr<WorkerCore> core_;
  std::shared_ptr<ucx::EpCore> ep_;
  Napi::ObjectReference worker_ref_;
  std::unordered_map<uint32_t, RkeyInfo> rkeys_;
  uint32_t next_rkey_ = 1;
  bool closed_ = false;
};

// ---- worker ----------------------------------------------------------------------------------

class WorkerWrap : public Napi::ObjectWrap<WorkerWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeUcxWorker",
                       {InstanceMethod<&WorkerWrap::Address>("address"),
                        InstanceMethod<&WorkerWrap::Info>("info"),
                        InstanceMethod<&WorkerWrap::RegisterArena>("registerArena"),
                        InstanceMethod<&WorkerWrap::RegisterBuffer>("registerBuffer"),
                        InstanceMethod<&WorkerWrap::AllocBuffer>("allocBuffer"),
                        InstanceMethod<&WorkerWrap::AllocArena>("allocArena"),
                        InstanceMethod<&WorkerWrap::Connect>("connect"),
                        InstanceMethod<&WorkerWrap::Close>("close")});
  }

  explicit WorkerWrap(const Napi::CallbackInfo& info);
  ~WorkerWrap() override { Teardown(); }

  bool closed() const { return closed_; }
  int64_t op_timeout_ms() const { return op_timeout_ms_; }
  void CountStaged(uint64_t ops, uint64_t bytes) {
    staged_ops_ += ops;
    staged_bytes_ += bytes;
  }
  void Track(Napi::Env env, Batch* batch, uint64_t bytes) {
    if (inflight_++ == 0) tsfn_.Ref(env);
    const bool wait = sync_wait_us_ > 0 && bytes <= sync_max_bytes_ && batch->ep->watch_pid &&
                      core_->shm_capable();
    const uint64_t seen = core_->completion_count();
    core_->Submit(batch);
    if (wait) SyncWait(env, batch, seen);
  }
  void Drain(Napi::Env env);

 private:
  Napi::Value Address(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value RegisterArena(const Napi::CallbackInfo& info);
  Napi::Value RegisterBuffer(const Napi::CallbackInfo& info);
  Napi::Value AllocBuffer(const Napi::CallbackInfo& info);
  Napi::Value AllocArena(const Napi::CallbackInfo& info);
  Napi::Value Connect(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void CheckOpen() const {
    if (closed_) Fail(Code::Closed, "UCX worker is closed");
  }
  void SyncWait(Napi::Env env, Batch* batch, uint64_t seen);
  void Teardown();
  static void CallJs(Napi::Env env, Napi::Function, WorkerWrap* self, void*) {
    if (env != nullptr) self->Drain(env);
  }
  static void Cleanup(void* arg) { static_cast<WorkerWrap*>(arg)->Teardown(); }

  using Tsfn = Napi::TypedThreadSafeFunction<WorkerWrap, void, &WorkerWrap::CallJs>;
  std::shared_ptr<WorkerCore> core_;
  Tsfn tsfn_;
  std::string transports_;
  bool busy_ = false;
  int64_t op_timeout_ms_ = 10000;
  int64_t sync_wait_us_ = 0;
  uint64_t sync_max_bytes_ = 0;
  const Batch* waiting_for_ = nullptr;  // SyncWait's batch; Drain sets waiting_done_ on it
  bool waiting_done_ = false;
  int64_t inflight_ = 0;
  uint64_t staged_ops_ = 0;    // ops moved through host bounce buffers (submitArena)
  uint64_t staged_bytes_ = 0;
  bool closed_ = false;
  bool tsfn_released_ = false;
  std::atomic<bool> close_done_{false};
  std::unique_ptr<Napi::Promise::Deferred> close_deferred_;
  napi_env env_ = nullptr;
};

WorkerWrap::WorkerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<WorkerWrap>(info) {
  Napi::Env env = info.Env();
  if (g_worker_open) Fail(Code::BadRequest, "a UCX worker is already open in this process");
  Napi::Object opts = info.Length() > 0 && info[0].IsObject() ? info[0].As<Napi::Object>()
                                                              : Napi::Object::New(env);
  ucx::WorkerOptions wo;
  if (opts.Get("transports").IsString()) wo.transports = opts.Get("transports").As<Napi::String>();
  if (opts.Get("busy").IsBoolean()) wo.busy_poll = opts.Get("busy").As<Napi::Boolean>();
  wo.spin_us = static_cast<int64_t>(NumberProp(opts, "spinUs", static_cast<double>(wo.spin_us)));
  if (wo.spin_us > kSpinUsMax) Fail(Code::BadRequest, "spinUs must be at most " + std::to_string(kSpinUsMax));
  wo.sync_wait_us = static_cast<int64_t>(NumberProp(opts, "syncWaitUs", 0));
  if (wo.sync_wait_us > kSpinUsMax) Fail(Code::BadRequest, "syncWaitUs must be at most " + std::to_string(kSpinUsMax));
  wo.sync_max_bytes = static_cast<int64_t>(NumberProp(opts, "syncMaxBytes", 0));
  sync_wait_us_ = wo.sync_wait_us;
  sync_max_bytes_ = static_cast<uint64_t>(wo.sync_max_bytes);
  wo.op_timeout_ms = static_cast<int64_t>(NumberProp(opts, "opTimeoutMs", 10000));
  if (wo.op_timeout_ms <= 0) Fail(Code::BadRequest, "opTimeoutMs must be positive");
  transports_ = wo.transports;
  busy_ = wo.busy_poll;
  op_timeout_ms_ = wo.op_timeout_ms;
  tsfn_ = Tsfn::New(env, "kvf-ucx-completions", 0, 1, this);
  tsfn_.Unref(env);  // referenced only while ops are in flight or close() is pending
  Tsfn tsfn = tsfn_;
  core_ = std::make_shared<WorkerCore>(wo, [tsfn]() mutable { tsfn.NonBlockingCall(); });
  g_worker_open = true;
  env_ = env;
  napi_add_env_cleanup_hook(env, &WorkerWrap::Cleanup, this);
}

void WorkerWrap::Drain(Napi::Env env) {
  Napi::HandleScope scope(env);
  for (const ucx::Completion& c : core_->TakeCompletions()) {
    auto* baton = static_cast<JsBaton*>(c.batch->js);
    if (c.report && c.batch == waiting_for_) waiting_done_ = true;
    if (c.report) {
      Napi::Array out = Napi::Array::New(env, c.batch->status.size());
      for (uint32_t i = 0; i < c.batch->status.size(); ++i) {
        const ucx::OpStatus& s = c.batch->status[i];
        if (s.ok) {
          out.Set(i, env.Null());
        } else {
          Napi::Array e = Napi::Array::New(env, 2);
          e.Set(0u, Napi::String::New(env, CodeName(s.code)));
          e.Set(1u, Napi::String::New(env, s.message));
          out.Set(i, e);
        }
      }
      baton->deferred.Resolve(out);
    }
    if (c.release) {
      delete baton;
      delete c.batch;
      if (--inflight_ == 0 && !close_deferred_) tsfn_.Unref(env);
    }
  }
  if (close_done_.load() && close_deferred_) {
    core_->Shutdown();
    auto deferred = std::move(close_deferred_);
    if (!tsfn_released_) {
      tsfn_released_ = true;
      tsfn_.Release();
    }
    deferred->Resolve(env.Undefined());
  }
}

Napi::Value WorkerWrap::Address(const Napi::CallbackInfo& info) {
  CheckOpen();
  static const ucx::PeerIdentity self = ucx::SelfIdentity();
  const uint64_t who = (uint64_t{self.boot_hash} << 32) | self.pid;
  std::vector<uint8_t> wire = ucx::Seal(ucx::kAddressMagic, who, self.start_ticks, core_->address());
  return Napi::Buffer<uint8_t>::Copy(info.Env(), wire.data(), wire.size());
}

Napi::Value WorkerWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  const uint64_t types = core_->context()->memory_types;
  const bool cuda = (types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
  Napi::Array names = Napi::Array::New(env);
  for (int t = 0; t < UCS_MEMORY_TYPE_LAST; ++t) {
    if (types & UCS_BIT(t)) names.Set(names.Length(), ucs_memory_type_names[t]);
  }
  out.Set("memoryTypes", names);
  // direct: UCX registers CUDA memory itself (cuda_copy/cuda_ipc loaded); staged: it cannot.
  out.Set("cudaPath", cuda ? "direct" : "staged");
  out.Set("transports", transports_.empty() ? "env" : transports_);
  out.Set("progress", busy_ ? "busy" : "event");
  out.Set("spinUs", Napi::Number::New(env, static_cast<double>(core_->spin_us())));
  out.Set("syncWaitUs", Napi::Number::New(env, static_cast<double>(sync_wait_us_)));
  out.Set("syncMaxBytes", Napi::Number::New(env, static_cast<double>(sync_max_bytes_)));
  out.Set("stagedOps", Napi::Number::New(env, static_cast<double>(staged_ops_)));
  out.Set("stagedBytes", Napi::Number::New(env, static_cast<double>(staged_bytes_)));
  out.Set("opTimeoutMs", Napi::Number::New(env, static_cast<double>(op_timeout_ms_)));
  out.Set("closed", Napi::Boolean::New(env, closed_));
  out.Set("sharedMemory", Napi::Boolean::New(env, core_->shm_capable()));
  return out;
}

// registerArena(nativeArena): the arena's whole range. The registration holds the arena's memory
// region, so arena.close() does not unmap memory that a peer may still address.
Napi::Value WorkerWrap::RegisterArena(const Napi::CallbackInfo& info) {
  CheckOpen();
  std::shared_ptr<Region> region = ArenaFromJs(info[0])->region();
  ucs_memory_type_t mt = UCS_MEMORY_TYPE_HOST;
  if (region->kind() == ArenaKind::Cuda) {
    // Staged path (UCX without cuda_copy): not implemented in this layer; see docs/benchmarks.md.
    if (!(core_->context()->memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA))) {
      Fail(Code::CudaUnavailable,
           "UCX has no CUDA memory support (no cuda_copy/cuda_ipc transport); cannot register a CUDA arena");
    }
    mt = UCS_MEMORY_TYPE_CUDA;
  }
  ucp_mem_h memh = MapMemory(core_, region->base(), region->bytes(), mt, false);
  const uint64_t addr = reinterpret_cast<uint64_t>(region->base());
  return NewRegion(info.Env(), core_, memh, addr, region->bytes(), false,
                   mt == UCS_MEMORY_TYPE_CUDA ? "cuda" : "host", info[0].As<Napi::Object>(), region);
}

Napi::Value WorkerWrap::RegisterBuffer(const Napi::CallbackInfo& info) {
  CheckOpen();
  Bytes b = TypedBytes(info[0], "buffer");
  if (b.length == 0) Fail(Code::BadRequest, "cannot register an empty buffer");
  ucp_mem_h memh = MapMemory(core_, b.data, b.length, UCS_MEMORY_TYPE_HOST, false);
  return NewRegion(info.Env(), core_, memh, reinterpret_cast<uint64_t>(b.data), b.length, false,
                   "host", info[0].As<Napi::Object>());
}

struct AllocHint {
  std::shared_ptr<WorkerCore> core;
  ucp_mem_h memh;
};

Napi::Value WorkerWrap::AllocBuffer(const Napi::CallbackInfo& info) {
  CheckOpen();
  Napi::Env env = info.Env();
  uint64_t bytes = SizeArg(info, 0, "bytes", 1ull << 40);
  if (bytes == 0) Fail(Code::BadRequest, "bytes must be positive");
  ucp_mem_h memh = MapMemory(core_, nullptr, bytes, UCS_MEMORY_TYPE_HOST, true);
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  ucp_mem_query(memh, &attr);
  auto* hint = new AllocHint{core_, memh};
  // External buffer: JS reads UCX-allocated (for shm: shared) memory with no copy; the
  // finalizer unmaps it once neither JS nor the region references it.
  Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(
      env, static_cast<uint8_t*>(attr.address), bytes,
      [](Napi::Env, uint8_t*, AllocHint* h) {
        OnUcxThread(h->core, [h] { ucp_mem_unmap(h->core->context()->ctx, h->memh); });
        delete h;
      },
      hint);
  Napi::Object region = NewRegion(env, core_, memh, reinterpret_cast<uint64_t>(attr.address),
                                  bytes, true, "host", buf);
  Napi::Object out = Napi::Object::New(env);
  out.Set("buffer", buf);
  out.Set("region", region);
  return out;
}

// allocArena(blockBytes, blockCount, arenaBytesMax, populate)
//   -> {arena: NativeArena, region: NativeUcxRegion, backing: string}
// A host arena in memory UCX allocated (ucp_mem_map ALLOCATE): with shared-memory transports
// that is a sysv/posix segment a same-host peer maps and copies from directly (an arena that is a
// plain mmap registered afterwards is reached only through active-message emulation in UCX
// 1.13, 10-100x slower). The registration is the allocation: the memory is unmapped once the
// arena is closed, the region deregistered and every host view collected, whichever is last.
Napi::Value WorkerWrap::AllocArena(const Napi::CallbackInfo& info) {
  CheckOpen();
  Napi::Env env = info.Env();
  ArenaConfig config;
  config.kind = ArenaKind::Host;
  config.block_bytes = SizeArg(info, 0, "blockBytes");
  config.block_count = static_cast<uint32_t>(SizeArg(info, 1, "blockCount", 4294967294.0));
  config.arena_bytes_max = SizeArg(info, 2, "arenaBytesMax");
  config.populate = info[3].ToBoolean();
  Arena::Validate(config);
  const size_t bytes = static_cast<size_t>(config.block_bytes * config.block_count);
  ucp_mem_h memh = MapMemory(core_, nullptr, bytes, UCS_MEMORY_TYPE_HOST, true);
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  ucp_mem_query(memh, &attr);
  std::shared_ptr<WorkerCore> core = core_;
  auto unmap = [core, memh] {
    OnUcxThread(core, [&] { ucp_mem_unmap(core->context()->ctx, memh); });
  };
  // From here the memory is owned by the region: any failure below releases it exactly once.
  auto region = std::make_shared<ExternalRegion>(attr.address, bytes, unmap);
  const std::string backing = ucx::MappingName(attr.address);
  // Forked children (child_process) must not inherit the page tables of a multi-GiB arena.
  madvise(attr.address, bytes, MADV_DONTFORK);
  if (config.populate) {
    const long page = sysconf(_SC_PAGESIZE);
    auto* p = static_cast<volatile uint8_t*>(attr.address);
    for (size_t off = 0; off < bytes; off += static_cast<size_t>(page)) p[off] = p[off];
  }
  auto arena = std::make_shared<Arena>(config, region);
  Napi::Object arena_obj = NewArenaJs(env, arena);
  Napi::Object region_obj = NewRegion(env, core_, memh, reinterpret_cast<uint64_t>(attr.address),
                                      bytes, true, "host", arena_obj, region);
  Napi::Object out = Napi::Object::New(env);
  out.Set("arena", arena_obj);
  out.Set("region", region_obj);
  out.Set("backing", backing);
  return out;
}

// The bounded synchronous wait (WorkerOptions::sync_wait_us): poll the completion counter and
// drain here until this batch is settled or the window ends. Settling other batches on the way is
// harmless (their promises resolve as they would from the loop). After the window, whatever was
// queued while the progress thread skipped its wake-up is drained here too, so nothing strands.
void WorkerWrap::SyncWait(Napi::Env env, Batch* batch, uint64_t seen) {
  waiting_for_ = batch;
  waiting_done_ = false;
  core_->SetJsPolling(true);
  const int64_t start = ucx::NowNs();
  const int64_t until = start + sync_wait_us_ * 1000;
  while (!waiting_done_) {
    const uint64_t now_count = core_->completion_count();
    if (now_count != seen) {
      seen = now_count;
      Drain(env);
      continue;
    }
    const int64_t now = ucx::NowNs();
    if (now >= until) break;
    // Pause-spin briefly, then yield: on a 2-core host the progress thread (or the peer) may be
    // queued on this very core, and a pure spin would hold it off for the whole window.
    if (now - start < kSyncPureSpinNs) {
      CpuRelax();
    } else {
      sched_yield();
    }
  }
  core_->SetJsPolling(false);
  waiting_for_ = nullptr;
  if (core_->HasCompletions()) Drain(env);
}

Napi::Value WorkerWrap::Connect(const Napi::CallbackInfo& info) {
  CheckOpen();
  Bytes b = TypedBytes(info[0], "peerAddress");
  ucx::Opened opened = ucx::Open(ucx::kAddressMagic, b.data, b.length);
  int64_t timeout_ms = static_cast<int64_t>(OptSizeArg(info, 1, "timeoutMs", op_timeout_ms_));
  if (timeout_ms <= 0) Fail(Code::BadRequest, "timeoutMs must be positive");
  std::shared_ptr<ucx::EpCore> ep;
  ucx::PeerIdentity peer;
  peer.pid = static_cast<uint32_t>(opened.base & 0xffffffffu);
  peer.boot_hash = static_cast<uint32_t>(opened.base >> 32);
  peer.start_ticks = opened.length;
  core_->RunSync([&] { ep = core_->CreateEp(opened.payload, peer, timeout_ms); });
  Napi::Object obj = g_endpoint_ctor->New({});
  EndpointWrap::Unwrap(obj)->Init(this, core_, ep, Value());
  return obj;
}

Napi::Value WorkerWrap::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Resolve(env.Undefined());
    return d.Promise();
  }
  closed_ = true;
  g_worker_open = false;
  close_deferred_ = std::make_unique<Napi::Promise::Deferred>(env);
  Napi::Promise promise = close_deferred_->Promise();
  tsfn_.Ref(env);
  core_->BeginClose([this] {
    close_done_.store(true);
    tsfn_.NonBlockingCall();
  });
  return promise;
}

// Process exit with the worker still open: stop the thread before V8 goes away.
void WorkerWrap::Teardown() {
  if (env_ != nullptr) {
    napi_remove_env_cleanup_hook(env_, &WorkerWrap::Cleanup, this);
    env_ = nullptr;
  }
  if (!closed_) {
    closed_ = true;
    g_worker_open = false;
    core_->BeginClose([] {});
  }
  if (core_) core_->Shutdown();
  if (!tsfn_released_) {
    tsfn_released_ = true;
    tsfn_.Abort();
  }
}

// ---- endpoint methods ------------------------------------------------------------------------

void EndpointWrap::CheckOpen() {
  if (closed_) Fail(Code::Closed, "endpoint is closed");
  if (worker_->closed()) Fail(Code::Closed, "UCX worker is closed");
}

Napi::Value EndpointWrap::UnpackRkey(const Napi::CallbackInfo& info) {
  CheckOpen();
  Bytes b = TypedBytes(info[0], "packed rkey");
  ucx::Opened opened = ucx::Open(ucx::kRkeyMagic, b.data, b.length);
  uint32_t id = next_rkey_++;
  ucp_rkey_h rkey = nullptr;
  core_->RunSync([&] {
    if (ep_->ep == nullptr) Fail(ep_->fail_code, "endpoint failed: " + ep_->fail_message);
    ucs_status_t st = ucp_ep_rkey_unpack(ep_->ep, opened.payload.data(), &rkey);
    if (st != UCS_OK) Fail(Code::BadRequest, std::string("ucp_ep_rkey_unpack: ") + ucs_status_string(st));
    ep_->rkeys[id] = rkey;
  });
  RkeyInfo ri{rkey, opened.base, opened.length, nullptr};
  if (opened.length > 0) {
    core_->RunSync([&] {
      void* first = nullptr;
      void* last = nullptr;
      if (ucp_rkey_ptr(rkey, opened.base, &first) == UCS_OK &&
          ucp_rkey_ptr(rkey, opened.base + opened.length - 1, &last) == UCS_OK &&
          static_cast<uint8_t*>(last) - static_cast<uint8_t*>(first) ==
              static_cast<std::ptrdiff_t>(opened.length - 1)) {
        ri.mapped = static_cast<uint8_t*>(first);
      }
    });
  }
  rkeys_[id] = ri;
  return Napi::Number::New(info.Env(), id);
}

ucx::OpKind EndpointWrap::KindAndOps(const Napi::CallbackInfo& info, Napi::Array* ops, bool allow_empty) {
  const std::string kind = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (kind != "get" && kind != "put") Fail(Code::BadRequest, "kind must be get or put");
  if (!info[1].IsArray()) Fail(Code::BadRequest, "ops must be an array");
  *ops = info[1].As<Napi::Array>();
  if (!allow_empty && ops->Length() == 0) Fail(Code::BadRequest, "ops must not be empty");
  return kind == "get" ? ucx::OpKind::Get : ucx::OpKind::Put;
}

Napi::Value EndpointWrap::Launch(Napi::Env env, std::unique_ptr<Batch> batch, std::unique_ptr<JsBaton> baton,
                                 uint64_t bytes) {
  batch->deadline_ns = ucx::NowNs() + ep_->op_timeout_ns;
  Napi::Promise promise = baton->deferred.Promise();
  batch->js = baton.release();
  worker_->Track(env, batch.release(), bytes);
  return promise;
}

// ---- staged transfers: arena blocks UCX cannot reach (device memory without UCX CUDA support) --

namespace {

// Debug hook for tests without a GPU: KVF_DEBUG_STAGE_HOST_ARENAS=1 stages host-arena ops through
// bounce buffers too (memcpy where a CUDA arena uses cudaMemcpy), so the staging path (bounce
// buffers, ordering, the timed-out-batch rule) runs on any machine.
bool StageHostArenas() {
  const char* v = std::getenv("KVF_DEBUG_STAGE_HOST_ARENAS");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

// A bounce buffer: page-locked host memory (cudaHostAlloc) for CUDA arenas, so cudaMemcpy runs
// at full PCIe speed and UCX can register it; plain aligned memory for the host-arena debug mode.
// Reused through a small per-process cache: pinned allocation costs milliseconds per call.
class StagingPool {
 public:
  struct Buf {
    uint8_t* ptr = nullptr;
    size_t bytes = 0;
    bool pinned = false;
  };
  static StagingPool& Get() {
    static StagingPool pool;
    return pool;
  }
  Buf Take(size_t want, bool pinned) {
    const size_t bytes = SizeClass(want);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t k = 0; k < free_.size(); ++k) {
        if (free_[k].bytes == bytes && free_[k].pinned == pinned) {
          Buf b = free_[k];
          free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(k));
          cached_ -= b.bytes;
          return b;
        }
      }
    }
    Buf b{nullptr, bytes, pinned};
    if (pinned) {
      b.ptr = static_cast<uint8_t*>(cuda::PinnedAlloc(bytes));
    } else {
      void* p = nullptr;
      if (posix_memalign(&p, 4096, bytes) != 0) Fail(Code::Internal, "cannot allocate a staging buffer");
      b.ptr = static_cast<uint8_t*>(p);
    }
    return b;
  }
  void Give(Buf b) {
    if (b.ptr == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + b.bytes <= kCacheBytesMax) {
        free_.push_back(b);
        cached_ += b.bytes;
        return;
      }
    }
    Free(b);
  }

 private:
  static constexpr size_t kCacheBytesMax = size_t{256} << 20;
  static size_t SizeClass(size_t n) {
    size_t c = size_t{1} << 20;
    while (c < n) c <<= 1;
    return c;
  }
  static void Free(const Buf& b) {
    if (b.pinned) {
      cuda::PinnedFree(b.ptr);
    } else {
      std::free(b.ptr);
    }
  }
  std::mutex mu_;
  std::vector<Buf> free_;
  size_t cached_ = 0;
};

// One staged op: its device (or debug host) block range and its slice of the bounce buffer.
struct StagedOp {
  size_t index;  // op index in the batch
  uint8_t* block;
  uint8_t* bounce;
  size_t length;
};

// Everything a staged batch holds until UCX is done with it (freed with the batch).
struct Staging {
  StagingPool::Buf buf;
  std::vector<StagedOp> ops;
  std::vector<std::shared_ptr<Region>> regions;  // arena memory stays mapped while in flight
  bool device = false;
  int device_id = 0;
  ~Staging() { StagingPool::Get().Give(buf); }
  void ToBounce() const {
    for (const StagedOp& s : ops) {
      if (device) {
        cuda::CopyToHost(device_id, s.bounce, s.block, s.length);
      } else {
        std::memcpy(s.bounce, s.block, s.length);
      }
    }
  }
  void FromBounce(const std::vector<ucx::OpStatus>& status) const {
    for (const StagedOp& s : ops) {
      if (!status[s.index].ok) continue;
      if (device) {
        cuda::CopyToDevice(device_id, s.block, s.bounce, s.length);
      } else {
        std::memcpy(s.block, s.bounce, s.length);
      }
    }
  }
};

}  // namespace

// submitArena(kind, ops: {remoteAddress, rkey, arena, index, offset?, length}[])
//   -> Promise<(null | [codeName, message])[]>
// Like submit(), with the local side a block range of an Arena. A host arena block, or a CUDA
// arena block when UCX can register CUDA memory, is moved by UCX directly (the CUDA memory type is
// passed to UCX); a CUDA arena block that this UCX cannot reach goes through a page-locked bounce
// buffer: a put copies device -> bounce before the transfer, a get copies bounce -> device after
// it (on the progress thread; the promise settles after the copy). Same results either way.
// Errors: BAD_REQUEST (not an arena, a block not allocated, mixed device arenas), OUT_OF_RANGE
// (offset/length past the block, remote range), CLOSED (arena closed), CUDA_UNAVAILABLE.
Napi::Value EndpointWrap::SubmitArena(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen();
  Napi::Array ops;
  const ucx::OpKind kind = KindAndOps(info, &ops, false);
  const uint32_t n = ops.Length();
  const bool cuda_direct = (core_->context()->memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
  const bool stage_host = StageHostArenas();
  auto batch = std::make_unique<Batch>();
  auto baton = std::make_unique<JsBaton>(env);
  auto staging = std::make_shared<Staging>();
  batch->kind = kind;
  batch->ep = ep_;
  batch->ops.reserve(n);
  uint64_t bytes = 0;
  size_t staged_bytes = 0;
  bool any_device_staged = false;
  for (uint32_t i = 0; i < n; ++i) {
    Napi::Value v = ops.Get(i);
    if (!v.IsObject()) Fail(Code::BadRequest, "op " + std::to_string(i) + " must be an object");
    Napi::Object o = v.As<Napi::Object>();
    std::shared_ptr<Arena> arena = ArenaFromJs(o.Get("arena"));
    const uint64_t index = static_cast<uint64_t>(NumberProp(o, "index", 0));
    const uint64_t off = static_cast<uint64_t>(NumberProp(o, "offset", 0));
    const uint64_t len = static_cast<uint64_t>(NumberProp(o, "length", 0));
    if (len == 0) Fail(Code::BadRequest, "op " + std::to_string(i) + ": length must be positive");
    if (index >= arena->capacity()) {
      Fail(Code::OutOfRange, "op " + std::to_string(i) + ": block " + std::to_string(index) + " is outside the arena");
    }
    if (!arena->IsAllocated(static_cast<uint32_t>(index))) {
      Fail(Code::BadRequest, "op " + std::to_string(i) + ": block " + std::to_string(index) + " is not allocated");
    }
    const uint64_t bb = arena->config().block_bytes;
    if (off > bb || len > bb - off) {
      Fail(Code::OutOfRange, "op " + std::to_string(i) + ": range [" + std::to_string(off) + ", +" +
                                 std::to_string(len) + ") leaves the " + std::to_string(bb) + "-byte block");
    }
    uint64_t remote = 0;
    const RkeyInfo& ri = RemoteRange(o, i, len, &remote);
    std::shared_ptr<Region> region = arena->region();
    auto* block = reinterpret_cast<uint8_t*>(arena->AddressOf(static_cast<uint32_t>(index)) + off);
    const bool device = region->kind() == ArenaKind::Cuda;
    ucx::OpDesc d{remote, ri.rkey, block, static_cast<size_t>(len)};
    if (device && cuda_direct) {
      d.mem_type = UCS_MEMORY_TYPE_CUDA;
    } else if (device || stage_host) {
      if (!staging->ops.empty() && (staging->device != device || (device && staging->device_id != region->device()))) {
        Fail(Code::BadRequest, "one submitArena batch may stage blocks of one device only");
      }
      staging->device = device;
      staging->device_id = device ? region->device() : 0;
      any_device_staged = any_device_staged || device;
      staging->ops.push_back(StagedOp{i, block, nullptr, static_cast<size_t>(len)});
      staged_bytes += len;
    }
    staging->regions.push_back(std::move(region));
    batch->ops.push_back(d);
    baton->keep.push_back(Napi::Persistent(o.Get("arena").As<Napi::Object>()));
    bytes += len;
  }
  if (!staging->ops.empty()) {
    staging->buf = StagingPool::Get().Take(staged_bytes, any_device_staged);
    size_t at = 0;
    for (StagedOp& s : staging->ops) {
      s.bounce = staging->buf.ptr + at;
      batch->ops[s.index].local = s.bounce;
      batch->ops[s.index].mem_type = UCS_MEMORY_TYPE_HOST;
      at += s.length;
    }
    if (batch->kind == ucx::OpKind::Put) {
      batch->before_start = [staging] { staging->ToBounce(); };
    }
    if (batch->kind == ucx::OpKind::Get) {
      batch->after_done = [staging](std::vector<ucx::OpStatus>& st) { staging->FromBounce(st); };
    }
    worker_->CountStaged(staging->ops.size(), staged_bytes);
  }
  batch->hold = staging;  // the arenas' memory (and bounce buffer) until UCX lets go of it
  return Launch(env, std::move(batch), std::move(baton), bytes);
}

// submit(kind: 'get'|'put', ops: {remoteAddress, rkey, local, localOffset?, length}[])
//   -> Promise<(null | [codeName, message])[]>
Napi::Value EndpointWrap::Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen();
  Napi::Array ops;
  const ucx::OpKind kind = KindAndOps(info, &ops, false);
  const uint32_t n = ops.Length();
  auto batch = std::make_unique<Batch>();
  auto baton = std::make_unique<JsBaton>(env);
  batch->kind = kind;
  batch->ep = ep_;
  batch->ops.reserve(n);
  baton->keep.reserve(n);
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const ParsedOp op = ParseOp(ops, i);
    bytes += op.length;
    batch->ops.push_back(ucx::OpDesc{op.remote, op.rkey->rkey, op.data, op.length});
    baton->keep.push_back(Napi::Persistent(op.local.As<Napi::Object>()));
  }
  return Launch(env, std::move(batch), std::move(baton), bytes);
}

// One op of submit()/direct(), validated: a typed local range inside its buffer, a known rkey, and
// a remote range inside that rkey's registered region (BAD_REQUEST / OUT_OF_RANGE otherwise).
EndpointWrap::ParsedOp EndpointWrap::ParseOp(const Napi::Array& ops, uint32_t i) {
  Napi::Value v = ops.Get(i);
  if (!v.IsObject()) Fail(Code::BadRequest, "op " + std::to_string(i) + " must be an object");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value local = o.Get("local");
  Bytes b = TypedBytes(local, "local");
  const uint64_t off = static_cast<uint64_t>(NumberProp(o, "localOffset", 0));
  const uint64_t len = static_cast<uint64_t>(NumberProp(o, "length", 0));
  if (len == 0) Fail(Code::BadRequest, "op " + std::to_string(i) + ": length must be positive");
  if (off > b.length || len > b.length - off) {
    Fail(Code::OutOfRange, "op " + std::to_string(i) + ": local range [" + std::to_string(off) + ", +" +
                               std::to_string(len) + ") exceeds the " + std::to_string(b.length) +
                               "-byte buffer");
  }
  uint64_t at = 0;
  const RkeyInfo& ri = RemoteRange(o, i, len, &at);
  return ParsedOp{local, b.data + off, len, at, &ri};
}

// An op's remote side: a known rkey and [remoteAddress, +len) inside its registered region.
const RkeyInfo& EndpointWrap::RemoteRange(const Napi::Object& o, uint32_t i, uint64_t len, uint64_t* remote) {
  *remote = BigIntArg(o.Get("remoteAddress"), "remoteAddress");
  const uint32_t rk = static_cast<uint32_t>(NumberProp(o, "rkey", 0));
  auto it = rkeys_.find(rk);
  if (it == rkeys_.end()) Fail(Code::BadRequest, "op " + std::to_string(i) + ": unknown rkey id");
  const RkeyInfo& ri = it->second;
  const uint64_t r = *remote;
  if (r < ri.base || r - ri.base > ri.length || len > ri.length - (r - ri.base)) {
    Fail(Code::OutOfRange, "op " + std::to_string(i) + ": remote range exceeds the registered region (" +
                               std::to_string(ri.length) + " bytes)");
  }
  return ri;
}

// rkeyMapped(id) -> boolean: whether direct() can serve ops on this rkey.
Napi::Value EndpointWrap::RkeyMapped(const Napi::CallbackInfo& info) {
  CheckOpen();
  auto it = rkeys_.find(static_cast<uint32_t>(SizeArg(info, 0, "rkey", 4294967295.0)));
  return Napi::Boolean::New(info.Env(), it != rkeys_.end() && it->second.mapped != nullptr);
}

// direct(kind: 'get'|'put', ops, checksum: boolean) -> Promise<Uint32Array | undefined>
// The same ops as submit(), moved by a thread-pool thread through the peer's memory as UCX mapped
// it (ucp_rkey_ptr), with the CRC-32C of each op's local range afterwards when asked (for a get,
// of the bytes just received, while they are still in cache). Every op must use a mapped rkey
// (BAD_REQUEST otherwise). All ops succeed or the promise rejects: the copies are memcpys
// that cannot fail half-way, and a peer found dead after copying rejects with PEER_UNREACHABLE.
Napi::Value EndpointWrap::Direct(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen();
  Napi::Array ops;
  const ucx::OpKind kind = KindAndOps(info, &ops, true);
  const bool checksum = info[2].ToBoolean();
  if (ep_->dead.load()) Fail(Code::PeerUnreachable, "endpoint failed: peer unreachable");
  const uint32_t n = ops.Length();
  auto descs = std::make_shared<std::vector<DirectOp>>();
  descs->reserve(n);
  std::vector<Napi::Value> keep;
  keep.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    const ParsedOp op = ParseOp(ops, i);
    if (op.rkey->mapped == nullptr) {
      Fail(Code::BadRequest, "op " + std::to_string(i) + ": the peer's memory is not mapped here (no direct path)");
    }
    descs->push_back(DirectOp{op.data, op.rkey->mapped + (op.remote - op.rkey->base), static_cast<size_t>(op.length)});
    keep.push_back(op.local);
  }
  const bool get = kind == ucx::OpKind::Get;
  auto crcs = std::make_shared<std::vector<uint32_t>>(checksum ? n : 0);
  std::shared_ptr<ucx::EpCore> ep = ep_;
  ep->direct_inflight.fetch_add(1);
  // Counted from here until the copies end (on the pool thread, so a worker shutdown on the JS
  // thread that waits for the count cannot deadlock on the promise's settlement); a task that
  // never ran gives its count back when it is destroyed.
  struct Inflight {
    std::shared_ptr<ucx::EpCore> ep;
    std::atomic<bool> released{false};
    void Release() {
      if (!released.exchange(true)) ep->direct_inflight.fetch_sub(1);
    }
    ~Inflight() { Release(); }
  };
  auto guard = std::make_shared<Inflight>();
  guard->ep = ep;
  return PromiseWork::Start(
      env, "kvf.ucxDirect",
      [descs, crcs, get, checksum, guard] {
        struct Scope {
          Inflight* g;
          ~Scope() { g->Release(); }
        } scope{guard.get()};
        for (size_t k = 0; k < descs->size(); ++k) {
          const DirectOp& d = (*descs)[k];
          if (get) {
            std::memcpy(d.local, d.remote, d.length);
          } else {
            std::memcpy(d.remote, d.local, d.length);
          }
          if (checksum) (*crcs)[k] = Crc32c(d.local, d.length);
        }
        if (guard->ep->dead.load()) Fail(Code::PeerUnreachable, "peer failed during a direct copy");
      },
      [crcs, checksum](Napi::Env e) -> Napi::Value {
        if (!checksum) return e.Undefined();
        Napi::Uint32Array out = Napi::Uint32Array::New(e, crcs->size());
        for (size_t k = 0; k < crcs->size(); ++k) out[k] = (*crcs)[k];
        return out;
      },
      keep);
}

Napi::Value EndpointWrap::Close(const Napi::CallbackInfo& info) {
  if (!closed_ && !worker_->closed()) {
    closed_ = true;
    core_->RunSync([&] { core_->CloseEp(ep_, [] {}); });
  }
  closed_ = true;
  rkeys_.clear();
  return info.Env().Undefined();
}

}  // namespace

Napi::Object InitUcx(Napi::Env env, Napi::Object exports) {
  g_region_ctor = new Napi::FunctionReference(Napi::Persistent(RegionWrap::Define(env)));
  g_endpoint_ctor = new Napi::FunctionReference(Napi::Persistent(EndpointWrap::Define(env)));
  exports.Set("NativeUcxWorker", WorkerWrap::Define(env));
  return exports;
}

}  // namespace kvf

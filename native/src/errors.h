// Typed errors that cross the native boundary.
//
// Core code (allocator, arena, checksum, CUDA, UCX) throws kvf::KvfException. The addon is built
// with NODE_ADDON_API_CPP_EXCEPTIONS_ALL, so an exception escaping a JS callback becomes a JS
// Error whose message is what(): "KVF_<CODE>: <text>". native/index.ts turns every such Error
// into a KvfError with that code. Where an error must be built as a value (to reject a promise
// from a threadsafe-function completion), use MakeJsError: same message plus a `kvfCode` property.
#pragma once

#include <stdexcept>
#include <string>

namespace kvf {

// Names match shared/errors.ts ErrorCode keys exactly; native/index.ts relies on that.
enum class Code {
  BadRequest,
  ArenaFull,
  Closed,
  OutOfRange,
  DoubleFree,
  Transport,
  PeerUnreachable,
  Timeout,
  CudaUnavailable,
  NativeUnavailable,
  Internal,
};

inline const char* CodeName(Code code) {
  switch (code) {
    case Code::BadRequest: return "BAD_REQUEST";
    case Code::ArenaFull: return "ARENA_FULL";
    case Code::Closed: return "CLOSED";
    case Code::OutOfRange: return "OUT_OF_RANGE";
    case Code::DoubleFree: return "DOUBLE_FREE";
    case Code::Transport: return "TRANSPORT";
    case Code::PeerUnreachable: return "PEER_UNREACHABLE";
    case Code::Timeout: return "TIMEOUT";
    case Code::CudaUnavailable: return "CUDA_UNAVAILABLE";
    case Code::NativeUnavailable: return "NATIVE_UNAVAILABLE";
    case Code::Internal: return "INTERNAL";
  }
  return "INTERNAL";
}

// "KVF_ARENA_FULL: arena has no free block (capacity 16)"
inline std::string TaggedMessage(Code code, const std::string& message) {
  return std::string("KVF_") + CodeName(code) + ": " + message;
}

class KvfException : public std::runtime_error {
 public:
  KvfException(Code code, const std::string& message)
      : std::runtime_error(TaggedMessage(code, message)), code_(code) {}
  Code code() const { return code_; }

 private:
  Code code_;
};

[[noreturn]] inline void Fail(Code code, const std::string& message) {
  throw KvfException(code, message);
}

}  // namespace kvf

// nvcc compiles cuda_mem.cu without N-API; everything below is for the JS-facing files only.
#ifndef __CUDACC__
#include <napi.h>

namespace kvf {

// A JS Error value carrying the code both in the message tag and as `kvfCode`.
inline Napi::Error MakeJsError(Napi::Env env, Code code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, TaggedMessage(code, message));
  err.Value().Set("kvfCode", Napi::String::New(env, CodeName(code)));
  return err;
}

inline Napi::Error MakeJsError(Napi::Env env, const KvfException& e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  err.Value().Set("kvfCode", Napi::String::New(env, CodeName(e.code())));
  return err;
}

}  // namespace kvf
#endif  // __CUDACC__

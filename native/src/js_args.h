// Argument checks for JS-facing functions. Wrong types and impossible sizes are BAD_REQUEST;
// a block index outside the arena is OUT_OF_RANGE (the caller asked for a block that is not
// there, which the allocator reports the same way).
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "errors.h"

namespace kvf {

constexpr double kMaxSafeInteger = 9007199254740991.0;  // 2^53 - 1

struct Bytes {
  uint8_t* data;
  size_t length;
};

// 12 -> "12", 1.5 -> "1.5" (std::to_string would print 12.000000).
inline std::string Num(double v) {
  std::ostringstream out;
  out.precision(17);
  out << v;
  return out.str();
}

inline double IntegerArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    Fail(Code::BadRequest, std::string(name) + " must be a number");
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || std::trunc(v) != v || std::fabs(v) > kMaxSafeInteger) {
    Fail(Code::BadRequest, std::string(name) + " must be an integer, got " + Num(v));
  }
  return v;
}

// A non-negative safe integer no larger than `max`.
inline uint64_t SizeArg(const Napi::CallbackInfo& info, size_t i, const char* name,
                        double max = kMaxSafeInteger) {
  double v = IntegerArg(info, i, name);
  if (v < 0 || v > max) {
    Fail(Code::BadRequest, std::string(name) + " must be in [0, " + Num(max) +
                               "], got " + Num(v));
  }
  return static_cast<uint64_t>(v);
}

inline uint64_t OptSizeArg(const Napi::CallbackInfo& info, size_t i, const char* name,
                           uint64_t fallback, double max = kMaxSafeInteger) {
  if (i >= info.Length() || info[i].IsUndefined()) return fallback;
  return SizeArg(info, i, name, max);
}

// CRC seed: a previous CRC value, an unsigned 32-bit integer; absent means 0.
inline uint32_t SeedArg(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<uint32_t>(OptSizeArg(info, i, "seed", 0, 4294967295.0));
}

inline uint32_t IndexArg(const Napi::CallbackInfo& info, size_t i) {
  double v = IntegerArg(info, i, "block index");
  if (v < 0 || v >= 4294967295.0) {
    Fail(Code::OutOfRange, "block index " + Num(v) + " out of range");
  }
  return static_cast<uint32_t>(v);
}

// Any TypedArray (Uint8Array, Buffer, ...) or ArrayBuffer, as raw bytes.
inline Bytes BytesArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i < info.Length() && info[i].IsTypedArray()) {
    auto ta = info[i].As<Napi::TypedArray>();
    auto* base = static_cast<uint8_t*>(ta.ArrayBuffer().Data());
    return {base + ta.ByteOffset(), ta.ByteLength()};
  }
  if (i < info.Length() && info[i].IsArrayBuffer()) {
    auto ab = info[i].As<Napi::ArrayBuffer>();
    return {static_cast<uint8_t*>(ab.Data()), ab.ByteLength()};
  }
  Fail(Code::BadRequest, std::string(name) + " must be a Uint8Array");
}

}  // namespace kvf

// Envelope for bytes that leave the addon (worker addresses, packed rkeys) and come back from a
// peer. UCX parses its own formats without bounds checks, so a truncated or garbage buffer fed to
// ucp_ep_create / ucp_ep_rkey_unpack can crash the process; the envelope (magic, lengths, a
// 64-bit FNV-1a checksum) turns those into BAD_REQUEST. It also carries the registered range of
// an rkey so that remote out-of-range ops are refused before they reach UCX (shared-memory
// transports do not check remote bounds themselves).
//
// Layout (little endian): magic u32 | payload length u32 | base u64 | length u64 |
//                         checksum u64 (over the 24 header bytes before it and the payload) | payload
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "errors.h"

namespace kvf::ucx {

constexpr uint32_t kAddressMagic = 0x4b564641;  // "KVFA"
constexpr uint32_t kRkeyMagic = 0x4b564652;     // "KVFR"
constexpr size_t kHeaderBytes = 32;
constexpr size_t kPayloadBytesMax = 1 << 20;

inline uint64_t Fnv1a(const uint8_t* p, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

inline std::vector<uint8_t> Seal(uint32_t magic, uint64_t base, uint64_t length,
                                 const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> out(kHeaderBytes + payload.size());
  const uint32_t plen = static_cast<uint32_t>(payload.size());
  std::memcpy(&out[0], &magic, 4);
  std::memcpy(&out[4], &plen, 4);
  std::memcpy(&out[8], &base, 8);
  std::memcpy(&out[16], &length, 8);
  std::memcpy(&out[kHeaderBytes], payload.data(), payload.size());
  uint64_t sum = Fnv1a(payload.data(), payload.size(), Fnv1a(out.data(), 24));
  std::memcpy(&out[24], &sum, 8);
  return out;
}

struct Opened {
  uint64_t base = 0;
  uint64_t length = 0;
  std::vector<uint8_t> payload;
};

inline Opened Open(uint32_t magic, const uint8_t* p, size_t n) {
  const char* what = magic == kRkeyMagic ? "packed rkey" : "worker address";
  uint32_t m = 0, plen = 0;
  if (n < kHeaderBytes) Fail(Code::BadRequest, std::string(what) + " is truncated");
  std::memcpy(&m, p, 4);
  std::memcpy(&plen, p + 4, 4);
  if (m != magic) Fail(Code::BadRequest, std::string(what) + " has a bad magic (not from kvfabric?)");
  if (plen > kPayloadBytesMax || n != kHeaderBytes + plen) {
    Fail(Code::BadRequest, std::string(what) + " has a bad length");
  }
  Opened o;
  uint64_t sum = 0;
  std::memcpy(&o.base, p + 8, 8);
  std::memcpy(&o.length, p + 16, 8);
  std::memcpy(&sum, p + 24, 8);
  if (Fnv1a(p + kHeaderBytes, plen, Fnv1a(p, 24)) != sum) {
    Fail(Code::BadRequest, std::string(what) + " fails its checksum");
  }
  o.payload.assign(p + kHeaderBytes, p + kHeaderBytes + plen);
  return o;
}

}  // namespace kvf::ucx

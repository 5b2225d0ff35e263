// Memory arenas: one large region (host mmap or cudaMalloc) cut into fixed-size blocks.
//
// Lifetime: the Region is reference-counted. The Arena holds one reference until Close(); every
// host view handed to JS and every UCX registration may hold another, so memory is unmapped only
// when the last user is gone and JS can never touch unmapped memory through a stale view.
#pragma once

#include <napi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "allocator.h"

namespace kvf {

enum class ArenaKind { Host, Cuda };
const char* ArenaKindName(ArenaKind kind);

class Region {
 public:
  Region(ArenaKind kind, int device, void* base, size_t bytes)
      : kind_(kind), device_(device), base_(base), bytes_(bytes) {}
  virtual ~Region() = default;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  ArenaKind kind() const { return kind_; }
  int device() const { return device_; }  // -1 for host memory
  void* base() const { return base_; }
  size_t bytes() const { return bytes_; }

 private:
  ArenaKind kind_;
  int device_;
  void* base_;
  size_t bytes_;
};

// Memory the arena does not own the allocation of (UCX-allocated, ucp_mem_map ALLOCATE): the
// release function runs once, when the last holder (arena, host view, UCX registration) is gone.
class ExternalRegion : public Region {
 public:
  ExternalRegion(void* base, size_t bytes, std::function<void()> release)
      : Region(ArenaKind::Host, -1, base, bytes), release_(std::move(release)) {}
  ~ExternalRegion() override {
    if (release_) release_();
  }

 private:
  std::function<void()> release_;
};

struct ArenaConfig {
  ArenaKind kind = ArenaKind::Host;
  uint64_t block_bytes = 0;
  uint32_t block_count = 0;
  int device = 0;               // CUDA device ordinal (cuda arenas only)
  bool populate = false;        // prefault host pages at open (MAP_POPULATE)
  uint64_t arena_bytes_max = 0; // block_bytes * block_count must not exceed it
};

class Arena {
 public:
  // Throws BAD_REQUEST for invalid sizes, CUDA_UNAVAILABLE when device memory is unavailable.
  explicit Arena(const ArenaConfig& config);
  // A host arena over memory someone else allocated (at least config.bytes; kind must be Host).
  // The arena holds `region` like its own mapping: same allocator, bounds, close semantics.
  Arena(const ArenaConfig& config, std::shared_ptr<Region> region);
  // BAD_REQUEST for sizes the constructors would refuse; lets callers check before allocating.
  static void Validate(const ArenaConfig& config);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  const ArenaConfig& config() const { return config_; }
  uint64_t bytes() const { return config_.block_bytes * config_.block_count; }
  uint64_t base_address() const { return base_address_; }  // stays valid as a number after Close
  uint32_t capacity() const;
  uint32_t used() const;
  uint32_t free() const;

  uint32_t Alloc();
  std::vector<uint32_t> AllocMany(uint32_t n);
  void Release(uint32_t index);
  bool IsAllocated(uint32_t index) const;
  uint64_t AddressOf(uint32_t index) const;

  // Byte ranges inside one block; OUT_OF_RANGE when [offset, offset+length) leaves the block.
  void Write(uint32_t index, uint64_t offset, const void* src, size_t length);
  void Read(uint32_t index, uint64_t offset, void* dst, size_t length);
  uint32_t Checksum(uint32_t index, uint64_t offset, uint64_t length);
  // CRCs of the first `length` bytes of each listed block. Safe on any thread: host arenas are
  // checksummed outside the lock (the region is held for the duration), CUDA arenas block by
  // block under it. OUT_OF_RANGE/CLOSED as Checksum.
  std::vector<uint32_t> ChecksumMany(const std::vector<std::pair<uint32_t, uint64_t>>& blocks);
  // Fault every page of a host arena in now (MADV_POPULATE_WRITE), so the first transfer into a
  // block does not pay one page fault per 4 KiB (~20 us each on a loaded VM). Safe on any thread
  // and while blocks are being read and written: it never changes a byte. Returns how: "populate"
  // (done), "device" (CUDA memory: nothing to do) or "unsupported" (kernel before 5.14).
  std::string Prefault();

  // Host arenas: the region (to keep alive) and the block's address; nullptr region for CUDA.
  std::shared_ptr<Region> HostBlock(uint32_t index, void** ptr) const;
  // The whole region, for UCX registration; throws CLOSED after Close().
  std::shared_ptr<Region> region() const;

  // Idempotent. Later calls throw CLOSED.
  void Close();
  bool closed() const;

 private:
  void CheckOpenLocked() const;
  void CheckSpanLocked(uint32_t index, uint64_t offset, uint64_t length) const;
  char* BlockPtrLocked(uint32_t index) const;

  ArenaConfig config_;
  uint64_t base_address_ = 0;
  mutable std::mutex mu_;
  std::shared_ptr<Region> region_;
  BlockAllocator allocator_;
  void* bounce_ = nullptr;  // pinned staging buffer for CUDA checksums, allocated on first use
};

// --- JS binding ------------------------------------------------------------------------------
// Registers the NativeArena class on exports.
void InitArena(Napi::Env env, Napi::Object exports);
// For other native modules (UCX registration): the Arena behind a NativeArena JS object.
// Throws BAD_REQUEST if `value` is not a NativeArena, CLOSED if it was closed.
std::shared_ptr<Arena> ArenaFromJs(Napi::Value value);
// A NativeArena JS object around an Arena built natively (UCX-allocated arenas).
Napi::Object NewArenaJs(Napi::Env env, std::shared_ptr<Arena> arena);

}  // namespace kvf

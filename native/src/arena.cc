// Arena core: host and CUDA regions, block bookkeeping, bounds-checked copies and checksums.
// The JS binding (NativeArena) is in arena_js.cc.
#include "arena.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "checksum.h"
#include "cuda_mem.h"
#include "errors.h"

namespace kvf {
namespace {

// Transparent huge pages are 2 MiB on x86-64; aligning the region to that lets the kernel back
// it with huge pages (fewer TLB misses on multi-MiB blocks, cheaper UCX registration).
constexpr size_t kHugeAlign = size_t{2} << 20;
// Staging buffer for CUDA checksums: large enough to amortise each cudaMemcpy.
constexpr size_t kBounceBytes = size_t{4} << 20;
// Hard ceiling, whatever arena_bytes_max says: keeps every offset computation far from overflow.
constexpr uint64_t kArenaBytesCeiling = uint64_t{1} << 46;  // 64 TiB

class HostRegion : public Region {
 public:
  HostRegion(void* mapping, size_t mapping_bytes, void* base, size_t bytes)
      : Region(ArenaKind::Host, -1, base, bytes), mapping_(mapping), mapping_bytes_(mapping_bytes) {}
  ~HostRegion() override { munmap(mapping_, mapping_bytes_); }

 private:
  void* mapping_;
  size_t mapping_bytes_;
};

class CudaRegion : public Region {
 public:
  CudaRegion(int device, void* base, size_t bytes) : Region(ArenaKind::Cuda, device, base, bytes) {}
  ~CudaRegion() override { cuda::DeviceFree(device(), base()); }
};

std::shared_ptr<Region> MapHost(size_t bytes, bool populate) {
  // Over-map by one huge page so the region can start on a 2 MiB boundary; the slack stays
  // mapped but untouched (anonymous memory costs nothing until written).
  size_t slack = bytes >= kHugeAlign ? kHugeAlign : 0;
  size_t mapping_bytes = bytes + slack;
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0);
  void* mapping = mmap(nullptr, mapping_bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (mapping == MAP_FAILED) {
    Fail(Code::BadRequest, "cannot map a host arena of " + std::to_string(bytes) +
                               " bytes: " + std::strerror(errno));
  }
  uintptr_t start = reinterpret_cast<uintptr_t>(mapping);
  uintptr_t aligned = slack ? (start + kHugeAlign - 1) & ~(uintptr_t{kHugeAlign} - 1) : start;
  void* base = reinterpret_cast<void*>(aligned);
  if (slack) madvise(base, bytes, MADV_HUGEPAGE);  // advisory: ignored where THP is off
  // Forked children (child_process spawns fork first) must not share a multi-GiB arena
  // copy-on-write, and registered RDMA memory must not be COW-split under the NIC.
  madvise(mapping, mapping_bytes, MADV_DONTFORK);
  return std::make_shared<HostRegion>(mapping, mapping_bytes, base, bytes);
}

std::shared_ptr<Region> AllocCuda(int device, size_t bytes) {
  std::string why;
  int count = cuda::DeviceCount(&why);
  if (!cuda::Compiled() || count == 0) {
    Fail(Code::CudaUnavailable, "no usable CUDA device" + (why.empty() ? "" : ": " + why));
  }
  if (device < 0 || device >= count) {
    Fail(Code::CudaUnavailable, "CUDA device " + std::to_string(device) + " does not exist (" +
                                    std::to_string(count) + " present)");
  }
  void* base = cuda::DeviceAlloc(device, bytes);
  return std::make_shared<CudaRegion>(device, base, bytes);
}

}  // namespace

void Arena::Validate(const ArenaConfig& c) {
  if (c.block_bytes == 0 || c.block_count == 0) {
    Fail(Code::BadRequest, "blockBytes and blockCount must be positive");
  }
  if (c.block_count == UINT32_MAX) Fail(Code::BadRequest, "blockCount must be below 2^32-1");
  uint64_t limit = std::min(c.arena_bytes_max, kArenaBytesCeiling);
  if (c.block_bytes > limit || c.block_count > limit / c.block_bytes) {
    Fail(Code::BadRequest, "arena of " + std::to_string(c.block_count) + " x " +
                               std::to_string(c.block_bytes) + " bytes exceeds arenaBytesMax (" +
                               std::to_string(limit) + ")");
  }
}

const char* ArenaKindName(ArenaKind kind) { return kind == ArenaKind::Cuda ? "cuda" : "host"; }

// Validate runs before the allocator is built: an unchecked blockCount would size its free stack
// first.
Arena::Arena(const ArenaConfig& config)
    : config_(config), allocator_((Validate(config), config.block_count)) {
  size_t total = static_cast<size_t>(bytes());
  region_ = config.kind == ArenaKind::Cuda ? AllocCuda(config.device, total)
                                           : MapHost(total, config.populate);
  base_address_ = reinterpret_cast<uintptr_t>(region_->base());
}

Arena::Arena(const ArenaConfig& config, std::shared_ptr<Region> region)
    : config_(config), allocator_((Validate(config), config.block_count)) {
  if (config.kind != ArenaKind::Host || region == nullptr || region->kind() != ArenaKind::Host ||
      region->bytes() < bytes()) {
    Fail(Code::Internal, "external arena memory must be host memory of at least the arena's size");
  }
  region_ = std::move(region);
  base_address_ = reinterpret_cast<uintptr_t>(region_->base());
}

Arena::~Arena() { Close(); }

void Arena::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (bounce_ != nullptr) cuda::PinnedFree(bounce_);
  bounce_ = nullptr;
  region_.reset();
}

bool Arena::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return region_ == nullptr;
}

void Arena::CheckOpenLocked() const {
  if (region_ == nullptr) Fail(Code::Closed, "arena is closed");
}

void Arena::CheckSpanLocked(uint32_t index, uint64_t offset, uint64_t length) const {
  CheckOpenLocked();
  if (index >= config_.block_count) {
    Fail(Code::OutOfRange, "block index " + std::to_string(index) + " out of range [0, " +
                               std::to_string(config_.block_count) + ")");
  }
  if (offset > config_.block_bytes || length > config_.block_bytes - offset) {
    Fail(Code::OutOfRange, "range [" + std::to_string(offset) + ", +" + std::to_string(length) +
                               ") leaves the block of " + std::to_string(config_.block_bytes) + " bytes");
  }
}

char* Arena::BlockPtrLocked(uint32_t index) const {
  return static_cast<char*>(region_->base()) + uint64_t{index} * config_.block_bytes;
}

uint32_t Arena::capacity() const {
  std::lock_guard<std::mutex> lock(mu_);
  CheckOpenLocked();
  return allocator_.capacity();
}

uint32_t Arena::used() const {
  std::lock_guard<std::mutex> lock(mu_);
  CheckOpenLocked();
  return allocator_.used();
}

uint32_t Arena::free() const {
  std::lock_guard<std::mutex> lock(mu_);
  CheckOpenLocked();
  return allocator_.free();
}

uint32_t Arena::Alloc() {
  std::lock_guard<std::mutex> lock(mu_);
  CheckOpenLocked();
  return allocator_.Alloc();
}

std::vector<uint32_t> Arena::AllocMany(uint32_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  CheckOpenLocked();
  return allocator_.AllocMany(n);
}

void Arena::Release(uint32_t index) {
  std::lock_guard<std::mutex> lock(mu_);
  CheckOpenLocked();
  allocator_.Release(index);
}

bool Arena::IsAllocated(uint32_t index) const {
  std::lock_guard<std::mutex> lock(mu_);
  CheckOpenLocked();
  return allocator_.IsAllocated(index);
}

uint64_t Arena::AddressOf(uint32_t index) const {
  std::lock_guard<std::mutex> lock(mu_);
  CheckSpanLocked(index, 0, 0);
  return base_address_ + uint64_t{index} * config_.block_bytes;
}

void Arena::Write(uint32_t index, uint64_t offset, const void* src, size_t length) {
  std::lock_guard<std::mutex> lock(mu_);
  CheckSpanLocked(index, offset, length);
  char* dst = BlockPtrLocked(index) + offset;
  if (length == 0) return;
  if (config_.kind == ArenaKind::Cuda) {
    cuda::CopyToDevice(config_.device, dst, src, length);
  } else {
    std::memcpy(dst, src, length);
  }
}

void Arena::Read(uint32_t index, uint64_t offset, void* dst, size_t length) {
  std::lock_guard<std::mutex> lock(mu_);
  CheckSpanLocked(index, offset, length);
  const char* src = BlockPtrLocked(index) + offset;
  if (length == 0) return;
  if (config_.kind == ArenaKind::Cuda) {
    cuda::CopyToHost(config_.device, dst, src, length);
  } else {
    std::memcpy(dst, src, length);
  }
}

uint32_t Arena::Checksum(uint32_t index, uint64_t offset, uint64_t length) {
  std::lock_guard<std::mutex> lock(mu_);
  CheckSpanLocked(index, offset, length);
  const char* src = BlockPtrLocked(index) + offset;
  if (config_.kind == ArenaKind::Host) return Crc32c(src, length);
  // Device memory: stage through a pinned buffer chunk by chunk, chaining the CRC.
  if (bounce_ == nullptr) bounce_ = cuda::PinnedAlloc(kBounceBytes);
  uint32_t crc = 0;
  for (uint64_t done = 0; done < length;) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(kBounceBytes, length - done));
    cuda::CopyToHost(config_.device, bounce_, src + done, chunk);
    crc = Crc32c(bounce_, chunk, crc);
    done += chunk;
  }
  return crc;
}

std::vector<uint32_t> Arena::ChecksumMany(const std::vector<std::pair<uint32_t, uint64_t>>& blocks) {
  std::vector<uint32_t> out(blocks.size());
  std::vector<const char*> ptrs(blocks.size());
  std::shared_ptr<Region> hold;
  {
    std::lock_guard<std::mutex> lock(mu_);
    CheckOpenLocked();
    for (size_t k = 0; k < blocks.size(); ++k) {
      CheckSpanLocked(blocks[k].first, 0, blocks[k].second);
      ptrs[k] = BlockPtrLocked(blocks[k].first);
    }
    hold = region_;
  }
  if (config_.kind == ArenaKind::Cuda) {
    for (size_t k = 0; k < blocks.size(); ++k) out[k] = Checksum(blocks[k].first, 0, blocks[k].second);
    return out;
  }
  for (size_t k = 0; k < blocks.size(); ++k) out[k] = Crc32c(ptrs[k], blocks[k].second);
  return out;
}

std::string Arena::Prefault() {
  std::shared_ptr<Region> hold = region();
  if (config_.kind == ArenaKind::Cuda) return "device";
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  auto base = reinterpret_cast<uintptr_t>(hold->base());
  uintptr_t start = base / page * page;
  uintptr_t end = base + bytes();
  constexpr size_t kStep = 64ull << 20;  // madvise in steps: bounded time under mmap_lock
  for (uintptr_t at = start; at < end; at += kStep) {
    size_t len = static_cast<size_t>(std::min<uintptr_t>(kStep, end - at));
    if (madvise(reinterpret_cast<void*>(at), len, MADV_POPULATE_WRITE) != 0) {
      if (errno == EINVAL && at == start) return "unsupported";
      if (errno == EINTR || errno == EAGAIN) {
        at -= kStep;  // retry the step
        continue;
      }
      Fail(Code::Internal, std::string("madvise(MADV_POPULATE_WRITE) failed: ") + std::strerror(errno));
    }
  }
  return "populate";
}

std::shared_ptr<Region> Arena::HostBlock(uint32_t index, void** ptr) const {
  std::lock_guard<std::mutex> lock(mu_);
  CheckSpanLocked(index, 0, 0);
  if (config_.kind != ArenaKind::Host) return nullptr;
  *ptr = BlockPtrLocked(index);
  return region_;
}

std::shared_ptr<Region> Arena::region() const {
  std::lock_guard<std::mutex> lock(mu_);
  CheckOpenLocked();
  return region_;
}

}  // namespace kvf

#include "allocator.h"

#include <string>

#include "errors.h"

namespace kvf {

BlockAllocator::BlockAllocator(uint32_t block_count)
    : capacity_(block_count), bits_((static_cast<size_t>(block_count) + 63) / 64, 0) {
  free_.reserve(block_count);
  // Pushed in reverse so the first allocations come out as 0, 1, 2, ...
  for (uint32_t i = block_count; i > 0; --i) free_.push_back(i - 1);
}

uint32_t BlockAllocator::Alloc() {
  if (free_.empty()) {
    Fail(Code::ArenaFull, "arena has no free block (capacity " + std::to_string(capacity_) + ")");
  }
  uint32_t index = free_.back();
  free_.pop_back();
  SetBit(index);
  return index;
}

std::vector<uint32_t> BlockAllocator::AllocMany(uint32_t n) {
  if (n > free_.size()) {
    Fail(Code::ArenaFull, "arena has " + std::to_string(free_.size()) + " free blocks, " +
                              std::to_string(n) + " requested");
  }
  std::vector<uint32_t> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) out.push_back(Alloc());
  return out;
}

void BlockAllocator::CheckIndex(uint32_t index) const {
  if (index >= capacity_) {
    Fail(Code::OutOfRange,
         "block index " + std::to_string(index) + " out of range [0, " + std::to_string(capacity_) + ")");
  }
}

void BlockAllocator::Release(uint32_t index) {
  CheckIndex(index);
  if (!Bit(index)) Fail(Code::DoubleFree, "block " + std::to_string(index) + " is not allocated");
  ClearBit(index);
  free_.push_back(index);
}

bool BlockAllocator::IsAllocated(uint32_t index) const {
  CheckIndex(index);
  return Bit(index);
}

}  // namespace kvf

// Fixed-size block allocator: a LIFO free stack plus an allocation bitmap.
// alloc and release are O(1); the bitmap detects double frees; indexes are range-checked.
// LIFO reuse hands back the most recently freed (cache- and TLB-warm) block first.
#pragma once

#include <cstdint>
#include <vector>

namespace kvf {

class BlockAllocator {
 public:
  explicit BlockAllocator(uint32_t block_count);

  uint32_t capacity() const { return capacity_; }
  uint32_t used() const { return capacity_ - static_cast<uint32_t>(free_.size()); }
  uint32_t free() const { return static_cast<uint32_t>(free_.size()); }

  // Throws ARENA_FULL when no block is free.
  uint32_t Alloc();
  // All n blocks or none (ARENA_FULL, nothing allocated).
  std::vector<uint32_t> AllocMany(uint32_t n);
  // Throws OUT_OF_RANGE for an index past capacity, DOUBLE_FREE when not allocated.
  void Release(uint32_t index);
  // Throws OUT_OF_RANGE for an index past capacity.
  bool IsAllocated(uint32_t index) const;

 private:
  void CheckIndex(uint32_t index) const;
  bool Bit(uint32_t index) const { return (bits_[index >> 6] >> (index & 63)) & 1u; }
  void SetBit(uint32_t index) { bits_[index >> 6] |= uint64_t{1} << (index & 63); }
  void ClearBit(uint32_t index) { bits_[index >> 6] &= ~(uint64_t{1} << (index & 63)); }

  uint32_t capacity_;
  std::vector<uint32_t> free_;   // stack of free indexes
  std::vector<uint64_t> bits_;   // 1 = allocated
};

}  // namespace kvf

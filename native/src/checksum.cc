// CRC-32C. The hardware path follows Mark Adler's crc32c.c (zlib licence): three independent
// crc32 streams hide the instruction's 3-cycle latency (one result per cycle instead of one per
// three), and the three partial CRCs are combined with precomputed "shift by N zero bytes"
// operators in GF(2).
#include "checksum.h"

#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define KVF_X86 1
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "slicing-by-8 assumes little-endian");

namespace kvf {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;
// Interleave lengths: long for big buffers, short to finish the tail with some overlap.
constexpr size_t kLong = 8192;
constexpr size_t kShort = 256;

uint32_t Gf2MatrixTimes(const uint32_t* mat, uint32_t vec) {
  uint32_t sum = 0;
  while (vec) {
    if (vec & 1) sum ^= *mat;
    vec >>= 1;
    ++mat;
  }
  return sum;
}

void Gf2MatrixSquare(uint32_t* square, const uint32_t* mat) {
  for (int n = 0; n < 32; ++n) square[n] = Gf2MatrixTimes(mat, mat[n]);
}

// Operator that appends `len` zero bytes to a CRC; len must be a power of two.
void ZerosOp(uint32_t* even, size_t len) {
  uint32_t odd[32];
  odd[0] = kPoly;
  uint32_t row = 1;
  for (int n = 1; n < 32; ++n) {
    odd[n] = row;
    row <<= 1;
  }
  // odd is the operator for one zero bit; squaring doubles it: 2 bits, 4 bits, then in the
  // loop 8 bits (one zero byte), 2 bytes, 4 bytes... until len's bits are used up.
  Gf2MatrixSquare(even, odd);
  Gf2MatrixSquare(odd, even);
  do {
    Gf2MatrixSquare(even, odd);
    len >>= 1;
    if (len == 0) return;
    Gf2MatrixSquare(odd, even);
    len >>= 1;
  } while (len);
  std::memcpy(even, odd, sizeof(odd));
}

struct Tables {
  uint32_t slice[8][256];
  uint32_t long_shift[4][256];
  uint32_t short_shift[4][256];
  bool hardware = false;

  static void BuildShift(uint32_t zeros[4][256], size_t len) {
    uint32_t op[32];
    ZerosOp(op, len);
    for (uint32_t n = 0; n < 256; ++n) {
      zeros[0][n] = Gf2MatrixTimes(op, n);
      zeros[1][n] = Gf2MatrixTimes(op, n << 8);
      zeros[2][n] = Gf2MatrixTimes(op, n << 16);
      zeros[3][n] = Gf2MatrixTimes(op, n << 24);
    }
  }

  Tables() {
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t crc = n;
      for (int k = 0; k < 8; ++k) crc = crc & 1 ? (crc >> 1) ^ kPoly : crc >> 1;
      slice[0][n] = crc;
    }
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t crc = slice[0][n];
      for (int k = 1; k < 8; ++k) {
        crc = slice[0][crc & 0xff] ^ (crc >> 8);
        slice[k][n] = crc;
      }
    }
    BuildShift(long_shift, kLong);
    BuildShift(short_shift, kShort);
#if KVF_X86
    __builtin_cpu_init();
    hardware = __builtin_cpu_supports("sse4.2");
#endif
  }
};

const Tables& T() {
  static const Tables tables;
  return tables;
}

inline uint32_t Shift(const uint32_t zeros[4][256], uint32_t crc) {
  return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^ zeros[2][(crc >> 16) & 0xff] ^
         zeros[3][crc >> 24];
}

inline uint64_t Load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

#if KVF_X86
template <size_t kLen>
__attribute__((target("sse4.2"))) inline const unsigned char* Interleaved(
    const unsigned char* next, size_t& len, uint64_t& crc0, const uint32_t shift[4][256]) {
  while (len >= kLen * 3) {
    uint64_t crc1 = 0, crc2 = 0;
    const unsigned char* end = next + kLen;
    do {
      crc0 = _mm_crc32_u64(crc0, Load64(next));
      crc1 = _mm_crc32_u64(crc1, Load64(next + kLen));
      crc2 = _mm_crc32_u64(crc2, Load64(next + 2 * kLen));
      next += 8;
    } while (next < end);
    crc0 = Shift(shift, static_cast<uint32_t>(crc0)) ^ crc1;
    crc0 = Shift(shift, static_cast<uint32_t>(crc0)) ^ crc2;
    next += 2 * kLen;
    len -= 3 * kLen;
  }
  return next;
}

__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(const void* data, size_t len,
                                                          uint32_t seed) {
  const Tables& t = T();
  auto next = static_cast<const unsigned char*>(data);
  uint64_t crc0 = seed ^ 0xffffffffu;
  while (len && (reinterpret_cast<uintptr_t>(next) & 7) != 0) {
    crc0 = _mm_crc32_u8(static_cast<uint32_t>(crc0), *next++);
    --len;
  }
  next = Interleaved<kLong>(next, len, crc0, t.long_shift);
  next = Interleaved<kShort>(next, len, crc0, t.short_shift);
  while (len >= 8) {
    crc0 = _mm_crc32_u64(crc0, Load64(next));
    next += 8;
    len -= 8;
  }
  while (len) {
    crc0 = _mm_crc32_u8(static_cast<uint32_t>(crc0), *next++);
    --len;
  }
  return static_cast<uint32_t>(crc0) ^ 0xffffffffu;
}
#endif

}  // namespace

uint32_t Crc32cSoftware(const void* data, size_t len, uint32_t seed) {
  const Tables& t = T();
  auto next = static_cast<const unsigned char*>(data);
  uint32_t crc = seed ^ 0xffffffffu;
  while (len && (reinterpret_cast<uintptr_t>(next) & 7) != 0) {
    crc = t.slice[0][(crc ^ *next++) & 0xff] ^ (crc >> 8);
    --len;
  }
  while (len >= 8) {
    uint64_t word = Load64(next) ^ crc;  // little-endian: the low 4 bytes take the CRC
    crc = t.slice[7][word & 0xff] ^ t.slice[6][(word >> 8) & 0xff] ^
          t.slice[5][(word >> 16) & 0xff] ^ t.slice[4][(word >> 24) & 0xff] ^
          t.slice[3][(word >> 32) & 0xff] ^ t.slice[2][(word >> 40) & 0xff] ^
          t.slice[1][(word >> 48) & 0xff] ^ t.slice[0][word >> 56];
    next += 8;
    len -= 8;
  }
  while (len) {
    crc = t.slice[0][(crc ^ *next++) & 0xff] ^ (crc >> 8);
    --len;
  }
  return crc ^ 0xffffffffu;
}

uint32_t Crc32c(const void* data, size_t length, uint32_t seed) {
#if KVF_X86
  if (T().hardware) return Crc32cHardware(data, length, seed);
#endif
  return Crc32cSoftware(data, length, seed);
}

const char* Crc32cImplementation() { return T().hardware ? "sse4.2" : "software"; }

}  // namespace kvf

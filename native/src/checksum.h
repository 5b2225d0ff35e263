// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum every KV block carries.
// `seed` is a previous CRC, so Crc32c(b, Crc32c(a)) == Crc32c(a || b); 0 starts a new CRC.
// Crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvf {

// Hardware (SSE4.2 crc32 instruction, three interleaved streams) when the CPU has it.
uint32_t Crc32c(const void* data, size_t length, uint32_t seed = 0);
// Portable slicing-by-8; exported for tests and for CPUs without SSE4.2.
uint32_t Crc32cSoftware(const void* data, size_t length, uint32_t seed = 0);
// "sse4.2" or "software": what Crc32c uses on this CPU.
const char* Crc32cImplementation();

}  // namespace kvf

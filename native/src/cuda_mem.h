// CUDA runtime calls behind a plain C++ interface, so no other file needs CUDA headers.
// Real implementations live in cuda_mem.cu (compiled by nvcc when CMake finds it, with
// KVF_HAVE_CUDA defined); cuda_mem.cc provides the stubs for builds without CUDA.
// Failures throw KvfException(CUDA_UNAVAILABLE) with the CUDA error text.
#pragma once

#include <cstddef>
#include <string>

namespace kvf {
namespace cuda {

// True when the addon was built with nvcc.
bool Compiled();
// Number of usable devices (0 when the runtime, driver or device is missing); `error` gets the
// reason when the count could not be read. Cached after the first call: device enumeration
// initialises the driver, which is slow and does not change during a process's life.
int DeviceCount(std::string* error);

void* DeviceAlloc(int device, size_t bytes);
void DeviceFree(int device, void* ptr) noexcept;
void CopyToDevice(int device, void* dst, const void* src, size_t bytes);
void CopyToHost(int device, void* dst, const void* src, size_t bytes);
// Page-locked host memory: the staging buffer for device checksums and bounce copies.
void* PinnedAlloc(size_t bytes);
void PinnedFree(void* ptr) noexcept;

}  // namespace cuda
}  // namespace kvf

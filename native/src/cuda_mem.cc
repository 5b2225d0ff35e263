// Stubs used when the addon is built without nvcc (see cuda_mem.cu for the real code).
#include "cuda_mem.h"

#ifndef KVF_HAVE_CUDA

#include "errors.h"

namespace kvf {
namespace cuda {
namespace {
[[noreturn]] void NotCompiled() {
  Fail(Code::CudaUnavailable, "kvfabric was built without CUDA (nvcc was not found at build time)");
}
}  // namespace

bool Compiled() { return false; }
int DeviceCount(std::string* error) {
  if (error) *error = "built without CUDA";
  return 0;
}
void* DeviceAlloc(int, size_t) { NotCompiled(); }
void DeviceFree(int, void*) noexcept {}
void CopyToDevice(int, void*, const void*, size_t) { NotCompiled(); }
void CopyToHost(int, void*, const void*, size_t) { NotCompiled(); }
void* PinnedAlloc(size_t) { NotCompiled(); }
void PinnedFree(void*) noexcept {}

}  // namespace cuda
}  // namespace kvf

#endif  // KVF_HAVE_CUDA

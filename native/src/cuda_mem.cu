// CUDA runtime implementation of cuda_mem.h (compiled by nvcc; linked against cudart_static,
// which dlopens the driver on first use, so a machine without a driver just reports 0 devices).
#include <cuda_runtime_api.h>

#include <mutex>
#include <string>

#include "cuda_mem.h"
#include "errors.h"

namespace kvf {
namespace cuda {
namespace {

void Check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    Fail(Code::CudaUnavailable, std::string(what) + ": " + cudaGetErrorName(status) + " (" +
                                    cudaGetErrorString(status) + ")");
  }
}

void Use(int device) { Check(cudaSetDevice(device), "cudaSetDevice"); }

}  // namespace

bool Compiled() { return true; }

int DeviceCount(std::string* error) {
  static std::once_flag once;
  static int count = 0;
  static std::string reason;
  std::call_once(once, [] {
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      count = 0;
      reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorName(status) + " (" +
               cudaGetErrorString(status) + ")";
      cudaGetLastError();  // reset the runtime's last-error state so later calls start clean
    }
  });
  if (error) *error = reason;
  return count;
}

void* DeviceAlloc(int device, size_t bytes) {
  Use(device);
  void* ptr = nullptr;
  Check(cudaMalloc(&ptr, bytes), "cudaMalloc");
  return ptr;
}

void DeviceFree(int device, void* ptr) noexcept {
  if (ptr == nullptr) return;
  cudaSetDevice(device);
  cudaFree(ptr);
}

void CopyToDevice(int device, void* dst, const void* src, size_t bytes) {
  Use(device);
  Check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy(host->device)");
}

void CopyToHost(int device, void* dst, const void* src, size_t bytes) {
  Use(device);
  Check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy(device->host)");
}

void* PinnedAlloc(size_t bytes) {
  void* ptr = nullptr;
  Check(cudaMallocHost(&ptr, bytes), "cudaMallocHost");
  return ptr;
}

void PinnedFree(void* ptr) noexcept {
  if (ptr != nullptr) cudaFreeHost(ptr);
}

}  // namespace cuda
}  // namespace kvf

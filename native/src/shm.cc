// Shared memory for the local agent (services/agent): map a file (in /dev/shm) that an engine
// process maps too, so KV bytes move between the engine and the agent with no socket copy; UCX
// then registers the mapping (UcxWorker.registerBuffer) and gets land in it directly.
// And the CUDA IPC path: open an engine's cudaIpcMemHandle_t so transfers can target its device
// buffers. Compiled with CUDA when the addon is; without a device it fails with CUDA_UNAVAILABLE.
// Owned by the agent task; exported through InitShm (called from addon.cc).
#include <fcntl.h>
#include <napi.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "cuda_mem.h"
#include "errors.h"
#include "js_args.h"

#ifdef KVF_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvf {
namespace {

// Refuse absurd mappings (a typo in a size): 1 TiB.
constexpr double kSharedFileBytesMax = 1024.0 * 1024 * 1024 * 1024;
constexpr size_t kCudaIpcHandleBytes = 64;

std::string ErrnoText(const std::string& what, int err) { return what + ": " + std::strerror(err); }

// mapSharedFile(path, bytes) -> Buffer over a MAP_SHARED mapping of the file's first `bytes`
// bytes. The file must already be at least that long (the caller creates and sizes it). The
// mapping is unmapped when the Buffer (and every view of it) is garbage collected, so no view
// can dangle; the fd is closed at once (the mapping keeps the file alive).
Napi::Value MapSharedFileJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) Fail(Code::BadRequest, "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  uint64_t bytes = SizeArg(info, 1, "bytes", kSharedFileBytesMax);
  if (bytes == 0) Fail(Code::BadRequest, "bytes must be positive");
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) Fail(Code::BadRequest, ErrnoText("open " + path, errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    Fail(Code::Internal, ErrnoText("fstat " + path, err));
  }
  if (static_cast<uint64_t>(st.st_size) < bytes) {
    ::close(fd);
    Fail(Code::OutOfRange, path + " holds " + std::to_string(st.st_size) + " bytes, " +
                               std::to_string(bytes) + " requested");
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) Fail(Code::Internal, ErrnoText("mmap " + path, err));
  size_t length = static_cast<size_t>(bytes);
  return Napi::Buffer<uint8_t>::New(env, static_cast<uint8_t*>(p), length,
                                    [length](Napi::Env, uint8_t* data) { ::munmap(data, length); });
}

// openCudaIpcHandle(handle: 64 bytes, deviceId) -> device address (bigint) of the peer's buffer.
Napi::Value OpenCudaIpcHandleJs(const Napi::CallbackInfo& info) {
  Bytes handle = BytesArg(info, 0, "handle");
  uint64_t device = SizeArg(info, 1, "deviceId", 1024);
  if (handle.length != kCudaIpcHandleBytes) {
    Fail(Code::BadRequest, "a CUDA IPC handle is 64 bytes, got " + std::to_string(handle.length));
  }
#ifdef KVF_HAVE_CUDA
  std::string why;
  if (cuda::DeviceCount(&why) == 0) Fail(Code::CudaUnavailable, "no CUDA device: " + why);
  if (cudaSetDevice(static_cast<int>(device)) != cudaSuccess) {
    Fail(Code::CudaUnavailable, "cudaSetDevice(" + std::to_string(device) + ") failed");
  }
  cudaIpcMemHandle_t h;
  std::memcpy(&h, handle.data, kCudaIpcHandleBytes);
  void* ptr = nullptr;
  cudaError_t rc = cudaIpcOpenMemHandle(&ptr, h, cudaIpcMemLazyEnablePeerAccess);
  if (rc != cudaSuccess) {
    Fail(Code::CudaUnavailable, std::string("cudaIpcOpenMemHandle: ") + cudaGetErrorString(rc));
  }
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ptr)));
#else
  (void)device;
  Fail(Code::CudaUnavailable, "kvfabric was built without CUDA: CUDA IPC handles are unavailable");
#endif
}

// closeCudaIpcHandle(address): undo openCudaIpcHandle.
Napi::Value CloseCudaIpcHandleJs(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBigInt()) Fail(Code::BadRequest, "address must be a bigint");
  bool lossless = false;
  uint64_t address = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
#ifdef KVF_HAVE_CUDA
  cudaError_t rc = cudaIpcCloseMemHandle(reinterpret_cast<void*>(static_cast<uintptr_t>(address)));
  if (rc != cudaSuccess) {
    Fail(Code::CudaUnavailable, std::string("cudaIpcCloseMemHandle: ") + cudaGetErrorString(rc));
  }
#else
  (void)address;
  Fail(Code::CudaUnavailable, "kvfabric was built without CUDA: CUDA IPC handles are unavailable");
#endif
  return info.Env().Undefined();
}

}  // namespace

void InitShm(Napi::Env env, Napi::Object exports) {
  exports.Set("mapSharedFile", Napi::Function::New<MapSharedFileJs>(env, "mapSharedFile"));
  exports.Set("openCudaIpcHandle", Napi::Function::New<OpenCudaIpcHandleJs>(env, "openCudaIpcHandle"));
  exports.Set("closeCudaIpcHandle",
              Napi::Function::New<CloseCudaIpcHandleJs>(env, "closeCudaIpcHandle"));
}

}  // namespace kvf

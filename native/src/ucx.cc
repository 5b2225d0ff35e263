#include "ucx.h"

namespace kvf {
Napi::Object InitUcx(Napi::Env env, Napi::Object exports) { return exports; }
}  // namespace kvf

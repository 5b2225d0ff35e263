// UCX one-sided transfers (owned by H2b). See ucx.cc.
#pragma once
#include <napi.h>

namespace kvf {
Napi::Object InitUcx(Napi::Env env, Napi::Object exports);
}

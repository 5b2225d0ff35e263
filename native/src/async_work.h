// Work on libuv's thread pool that settles a JS promise: checksums and arena prefaulting, so a
// shard node's or a worker's event loop never stalls for the seconds a GiB of CRC or page faults
// takes on a small host. `work` runs off the JS thread and must not touch N-API; `done` runs on
// the JS thread and builds the resolved value. A KvfException from `work` rejects the promise with
// the same typed error a synchronous call would throw (message "KVF_<CODE>: ..." plus kvfCode).
#pragma once

#include <napi.h>

#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "errors.h"

namespace kvf {

class PromiseWork : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;

  // Queues the work and returns its promise. `keep` are JS values (buffers, arenas) held alive
  // until the promise settles, so their memory cannot be collected under the worker thread.
  static Napi::Promise Start(Napi::Env env, const char* name, Work work, Done done,
                             const std::vector<Napi::Value>& keep = {}) {
    auto* w = new PromiseWork(env, name, std::move(work), std::move(done));
    for (const Napi::Value& v : keep) {
      if (v.IsObject()) w->keep_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    }
    Napi::Promise p = w->deferred_.Promise();
    w->Queue();
    return p;
  }

 private:
  PromiseWork(Napi::Env env, const char* name, Work work, Done done)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        done_(std::move(done)) {}

  void Execute() override {
    try {
      work_();
    } catch (const KvfException& e) {
      code_ = e.code();
      message_ = e.what();
      SetError(message_);
    } catch (const std::exception& e) {
      code_ = Code::Internal;
      message_ = TaggedMessage(Code::Internal, e.what());
      SetError(message_);
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Value v;
    try {
      v = done_(env);
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
      return;
    } catch (const KvfException& e) {
      Napi::Error err = Napi::Error::New(env, e.what());
      err.Value().Set("kvfCode", Napi::String::New(env, CodeName(e.code())));
      deferred_.Reject(err.Value());
      return;
    }
    deferred_.Resolve(v);
  }

  void OnError(const Napi::Error&) override {
    Napi::Env env = Env();
    Napi::Error err = Napi::Error::New(env, message_);
    err.Value().Set("kvfCode", Napi::String::New(env, CodeName(code_)));
    deferred_.Reject(err.Value());
  }

  Napi::Promise::Deferred deferred_;
  Work work_;
  Done done_;
  std::vector<Napi::ObjectReference> keep_;
  Code code_ = Code::Internal;
  std::string message_;
};

}  // namespace kvf

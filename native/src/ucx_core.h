// UCX core: one ucp context + worker driven by one progress thread. No N-API in here.
//
// Threading: ONLY the progress thread touches the ucp worker, its endpoints, rkeys and requests.
// The JS thread enqueues closures (Post, or RunSync when it needs an answer) and wakes the
// progress thread through an eventfd; the progress thread sleeps in epoll on that eventfd and
// on the worker's own event fd (ucp_worker_get_efd + ucp_worker_arm). Finished batches are queued
// and the JS thread is notified once per drain (not once per op).
//
// Hybrid progress: after any activity (a command, a UCX event, progress made) the thread keeps
// polling for a bounded window (spin_us) before it arms the worker and sleeps. A wakeup from
// epoll costs 20-100 us on a loaded host; within a window the next op of a pipeline, or (over
// tcp, where UCX emulates one-sided ops with active messages that the PEER's worker must
// progress) the next fragment, is picked up at once. An idle worker still sleeps.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "errors.h"

namespace kvf::ucx {

// Per-op outcome. `code` is meaningful only when !ok.
struct OpStatus {
  bool ok = false;
  bool done = false;
  Code code = Code::Internal;
  std::string message;
};

enum class OpKind { Get, Put };

struct OpDesc {
  uint64_t remote = 0;
  ucp_rkey_h rkey = nullptr;
  uint8_t* local = nullptr;
  size_t length = 0;
  // The local buffer's memory type when the caller knows it (a CUDA arena block); UNKNOWN lets
  // UCX detect it (host memory).
  ucs_memory_type_t mem_type = UCS_MEMORY_TYPE_UNKNOWN;
};

struct EpCore;
struct Batch;

// The user_data of one UCX request: which batch and which op (-1: the trailing put flush).
struct ReqCtx {
  Batch* batch = nullptr;
  int index = 0;
};

// A submitted group of ops on one endpoint. Created on the JS thread; owned by the progress
// thread from Post until it is handed back through the completion queue.
struct Batch {
  OpKind kind = OpKind::Get;
  std::shared_ptr<EpCore> ep;
  std::vector<OpDesc> ops;
  std::vector<OpStatus> status;
  std::vector<ReqCtx> reqs;  // ops.size() + 1 (flush)
  int64_t deadline_ns = 0;
  int outstanding = 0;    // UCX requests not yet called back
  bool reported = false;  // statuses delivered to JS (promise settled)
  bool released = false;  // no UCX request references the buffers any more
  void* js = nullptr;     // JS-side baton (deferred + buffer references), opaque here
  // Staged transfers (device memory this UCX cannot reach, moved through host bounce buffers),
  // both on the progress thread: before_start before the first op is posted (a put copies the
  // device bytes into its bounce buffers); after_done once every op finished and only if the
  // batch was not reported yet (a get copies the ok ops' bytes to the device: a timed-out batch
  // never writes device memory the caller was told failed). A throw fails the ops it concerns.
  std::function<void()> before_start;
  std::function<void(std::vector<OpStatus>&)> after_done;
  // Whatever must outlive every UCX request of the batch (arena regions): freed with the batch.
  std::shared_ptr<void> hold;
};

class WorkerCore;

struct EpCore {
  uint64_t id = 0;
  WorkerCore* owner = nullptr;
  ucp_ep_h ep = nullptr;  // progress thread only
  std::unordered_map<uint32_t, ucp_rkey_h> rkeys;  // progress thread only
  std::vector<Batch*> pending;                     // progress thread only
  bool failed = false;                             // progress thread only
  Code fail_code = Code::PeerUnreachable;
  std::string fail_message;
  std::atomic<bool> dead{false};  // readable from JS: peer failed / timed out
  // Direct (rkey_ptr) copies running on thread-pool threads over this endpoint's mapped rkeys:
  // rkeys (and with them the peer's attached segments) are destroyed only once it is 0.
  std::atomic<int> direct_inflight{0};
  int64_t op_timeout_ns = 0;
  // Same-host peer: the progress thread also watches its process (faster than UCX keepalive).
  bool watch_pid = false;
  int32_t peer_pid = 0;
  uint64_t peer_start_ticks = 0;
};

// Who a worker address belongs to, carried in the address envelope.
struct PeerIdentity {
  uint32_t pid = 0;
  uint32_t boot_hash = 0;  // hash of /proc/sys/kernel/random/boot_id: same host when equal
  uint64_t start_ticks = 0;  // process start time (/proc/<pid>/stat field 22): pid reuse guard
};
PeerIdentity SelfIdentity();
bool ProcessAlive(int32_t pid, uint64_t start_ticks);

// A completion handed to the JS thread: settle the promise (report) and/or drop the buffer
// references (release). A batch that timed out is reported first and released later, when UCX
// has really let go of its buffers.
struct Completion {
  Batch* batch = nullptr;
  bool report = false;
  bool release = false;
};

struct WorkerOptions {
  std::string transports;  // empty: UCX_TLS from the environment / UCX default
  bool busy_poll = false;
  int64_t op_timeout_ms = 10000;
  // Poll this long after the last activity before sleeping; 0: sleep at once (pure event mode).
  int64_t spin_us = 100;
  // Same-host batches of at most sync_max_bytes: the submitting JS thread waits up to sync_wait_us
  // for the progress thread to finish them and settles the promise itself, skipping the event
  // loop wake-up (tens of us per op); 0 turns it off. Longer ops resolve through the loop.
  int64_t sync_wait_us = 0;
  int64_t sync_max_bytes = 0;
};

// Holds the ucp context; shared by the worker and by every ucp_mem_map allocation handed to JS
// (an external Buffer may outlive the worker, so the context lives until the last one is freed).
struct Context {
  ucp_context_h ctx = nullptr;
  uint64_t memory_types = 0;
  ~Context();
};

class WorkerCore {
 public:
  WorkerCore(const WorkerOptions& opts, std::function<void()> notify);
  ~WorkerCore();

  // JS thread API.
  void Post(std::function<void()> fn);
  void RunSync(const std::function<void()>& fn);  // runs fn on the progress thread, rethrows
  void Submit(Batch* batch);
  std::vector<Completion> TakeCompletions();
  bool HasCompletions();
  uint64_t completion_count() const { return completion_count_.load(std::memory_order_acquire); }
  // While set, finished batches are queued without waking the JS thread's loop (it is polling);
  // after clearing it the caller must drain what was queued meanwhile (HasCompletions).
  void SetJsPolling(bool on) { js_polling_.store(on); }
  void BeginClose(std::function<void()> on_closed);  // on_closed runs on the progress thread
  void Join();
  void Shutdown();  // after the close callback ran: join the thread, destroy the worker

  // Progress thread API (call only from closures posted above).
  std::shared_ptr<EpCore> CreateEp(const std::vector<uint8_t>& address, const PeerIdentity& peer,
                                   int64_t timeout_ms);
  bool shm_capable() const { return shm_capable_; }
  void CloseEp(const std::shared_ptr<EpCore>& ep, std::function<void()> done);
  void FailEp(EpCore* ep, Code code, const std::string& why);

  std::shared_ptr<Context> context() const { return context_; }
  ucp_worker_h worker() const { return worker_; }
  const std::vector<uint8_t>& address() const { return address_; }
  bool closing() const { return closing_.load(); }
  bool busy_poll() const { return opts_.busy_poll; }
  int64_t spin_us() const { return opts_.spin_us; }
  int64_t op_timeout_ns() const { return opts_.op_timeout_ms * 1000000; }

  static void OnSend(void* request, ucs_status_t status, void* user_data);
  static void OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status);

 private:
  void Loop();
  bool SpinForActivity();
  void NotifyCompletions();
  bool DrainCommands();
  void StartBatch(Batch* batch);
  void FinishReq(ReqCtx* rc, ucs_status_t status);
  void MaybeComplete(Batch* batch);
  void CheckDeadlines();
  int WaitTimeoutMs() const;
  void Push(Completion c);
  void CloseAll();
  void WatchPeers();

  WorkerOptions opts_;
  std::function<void()> notify_;
  std::shared_ptr<Context> context_;
  ucp_worker_h worker_ = nullptr;
  std::vector<uint8_t> address_;
  int ucp_efd_ = -1;
  int wake_fd_ = -1;
  int epoll_fd_ = -1;
  std::thread thread_;

  std::mutex mu_;  // guards commands_ and completions_
  std::deque<std::function<void()>> commands_;
  std::vector<Completion> completions_;
  std::atomic<bool> notify_pending_{false};
  std::atomic<bool> command_posted_{false};  // set by Post, read while spinning
  std::atomic<bool> may_sleep_{true};  // the thread is at or in epoll_wait: Post must write wake_fd_
  bool woken_ = true;                  // progress thread only: wake_fd_ may hold a count to reset
  std::atomic<bool> closing_{false};
  std::atomic<bool> js_polling_{false};
  std::atomic<uint64_t> completion_count_{0};  // bumped by every Push, read by HasCompletions
  bool stop_ = false;  // progress thread only
  std::function<void()> on_closed_;

  // Progress thread only.
  std::vector<Batch*> live_;
  std::vector<std::shared_ptr<EpCore>> eps_;
  uint64_t next_ep_id_ = 1;
  int64_t next_watch_ns_ = 0;
  bool shm_capable_ = false;
};

int64_t NowNs();
Code CodeForStatus(ucs_status_t status);
// What backs the mapping at addr, from /proc/self/maps: "sysv", "posix" (a /dev/shm file),
// "anonymous" or the mapped path; tells whether UCX allocated shared memory.
std::string MappingName(const void* addr);

}  // namespace kvf::ucx

// UCX core: context, worker, progress thread, one-sided ops with deadlines. See ucx_core.h.
#include "ucx_core.h"

#include <thread>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <future>
#include <signal.h>
#include <sstream>

namespace kvf::ucx {

namespace {

// How often the progress thread wakes while endpoints exist, so UCX's keepalive (which runs
// inside ucp_worker_progress) notices a dead peer even when no op is in flight.
constexpr int kIdleWakeMs = 200;
// Dead peers are found by UCX keepalive; its default (20 s) is longer than our default op
// timeout, so unless the user set UCX_KEEPALIVE_INTERVAL we use this.
constexpr const char* kKeepaliveDefault = "1s";
// How long worker close() keeps progressing for UCX to call back cancelled requests.
constexpr int64_t kCloseDrainNs = 2'000'000'000;

std::string StatusText(ucs_status_t st) { return ucs_status_string(st); }

void Check(ucs_status_t st, Code code, const std::string& what) {
  if (st != UCS_OK) Fail(code, what + ": " + StatusText(st));
}

void FreeOnDone(void* request, ucs_status_t, void*) { ucp_request_free(request); }

// An exception's message without the "KVF_<CODE>: " tag (the code travels separately).
std::string Untagged(const std::exception& e) {
  std::string m = e.what();
  const size_t at = m.rfind("KVF_", 0) == 0 ? m.find(": ") : std::string::npos;
  return at == std::string::npos ? m : m.substr(at + 2);
}

// Does the transport list (option or UCX_TLS) allow shared memory? Unset and "all" do.
bool TlsAllowsShm(const std::string& tls) {
  if (tls.empty() || tls == "all" || tls[0] == '^') return true;  // '^': an exclusion list
  const std::string list = "," + tls + ",";
  for (const char* t : {"sm", "shm", "posix", "sysv", "xpmem", "knem"}) {
    if (list.find(std::string(",") + t + ",") != std::string::npos) return true;
  }
  return false;
}

uint64_t StartTicks(int32_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return 0;
  size_t close = stat.rfind(')');  // comm may hold spaces; fields resume after the last ')'
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  }
  return 0;
}

}  // namespace

PeerIdentity SelfIdentity() {
  PeerIdentity id;
  id.pid = static_cast<uint32_t>(getpid());
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string boot;
  std::getline(f, boot);
  uint32_t h = 2166136261u;
  for (char c : boot) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  id.boot_hash = h;
  id.start_ticks = StartTicks(static_cast<int32_t>(id.pid));
  return id;
}

bool ProcessAlive(int32_t pid, uint64_t start_ticks) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  const uint64_t now = StartTicks(pid);
  return now != 0 && (start_ticks == 0 || now == start_ticks);  // 0: gone or a zombie reaped
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string MappingName(const void* addr) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2 || a < lo || a >= hi) continue;
    // Fields: range perms offset dev inode [path]; the path starts after the fifth field.
    std::istringstream fields(line);
    std::string skip, path;
    for (int i = 0; i < 5; ++i) fields >> skip;
    std::getline(fields >> std::ws, path);
    if (path.empty()) return "anonymous";
    if (path.rfind("/SYSV", 0) == 0) return "sysv";
    if (path.rfind("/dev/shm/", 0) == 0) return "posix";
    return path;
  }
  return "unknown";
}

Code CodeForStatus(ucs_status_t status) {
  switch (status) {
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
      return Code::PeerUnreachable;
    case UCS_ERR_TIMED_OUT:
      return Code::Timeout;
    case UCS_ERR_CANCELED:
      return Code::Closed;
    case UCS_ERR_INVALID_PARAM:
      return Code::BadRequest;
    default:
      return Code::Transport;
  }
}

Context::~Context() {
  if (ctx != nullptr) ucp_cleanup(ctx);
}

WorkerCore::WorkerCore(const WorkerOptions& opts, std::function<void()> notify)
    : opts_(opts), notify_(std::move(notify)), context_(std::make_shared<Context>()) {
  // UCX 1.13's shared-memory transports support peer error handling only when asked; without it
  // an endpoint in PEER mode cannot use them and falls back to tcp (or fails). These are
  // transport-level settings that ucp_config_modify cannot reach, so they go in the environment
  // (a user's own value wins: overwrite = 0).
  setenv("UCX_POSIX_ERROR_HANDLING", "y", 0);
  setenv("UCX_SYSV_ERROR_HANDLING", "y", 0);
  ucp_config_t* config = nullptr;
  Check(ucp_config_read(nullptr, nullptr, &config), Code::Transport, "ucp_config_read");
  const char* env_tls = std::getenv("UCX_TLS");
  shm_capable_ = TlsAllowsShm(!opts.transports.empty() ? opts.transports : (env_tls ? env_tls : ""));
  ucs_status_t st = UCS_OK;
  if (!opts.transports.empty()) st = ucp_config_modify(config, "TLS", opts.transports.c_str());
  if (st == UCS_OK && std::getenv("UCX_KEEPALIVE_INTERVAL") == nullptr) {
    st = ucp_config_modify(config, "KEEPALIVE_INTERVAL", kKeepaliveDefault);
  }

  if (st != UCS_OK) {
    ucp_config_release(config);
    Fail(Code::BadRequest, "invalid UCX configuration: " + StatusText(st));
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
  st = ucp_init(&params, config, &context_->ctx);
  ucp_config_release(config);
  Check(st, Code::Transport, "ucp_init");

  ucp_context_attr_t cattr{};
  cattr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  if (ucp_context_query(context_->ctx, &cattr) == UCS_OK) context_->memory_types = cattr.memory_types;

  ucp_worker_params_t wparams{};
  wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wparams.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  Check(ucp_worker_create(context_->ctx, &wparams, &worker_), Code::Transport, "ucp_worker_create");

  ucp_address_t* addr = nullptr;
  size_t addr_len = 0;
  Check(ucp_worker_get_address(worker_, &addr, &addr_len), Code::Transport, "worker address");
  address_.assign(reinterpret_cast<uint8_t*>(addr), reinterpret_cast<uint8_t*>(addr) + addr_len);
  ucp_worker_release_address(worker_, addr);

  Check(ucp_worker_get_efd(worker_, &ucp_efd_), Code::Transport, "ucp_worker_get_efd");
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (wake_fd_ < 0 || epoll_fd_ < 0) Fail(Code::Transport, "eventfd/epoll_create1 failed");
  for (int fd : {ucp_efd_, wake_fd_}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) Fail(Code::Transport, "epoll_ctl");
  }
  thread_ = std::thread([this] { Loop(); });
}

WorkerCore::~WorkerCore() { Shutdown(); }

void WorkerCore::Shutdown() {
  Join();
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  worker_ = nullptr;
  if (wake_fd_ >= 0) close(wake_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  wake_fd_ = epoll_fd_ = -1;
}

void WorkerCore::Join() {
  if (thread_.joinable()) thread_.join();
}

void WorkerCore::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands_.push_back(std::move(fn));
  }
  // The eventfd write (a syscall) is needed only when the thread may be asleep: while it polls it
  // sees command_posted_. Dekker-style with the thread's side in Loop (both seq_cst): it sets
  // may_sleep_ and then re-checks command_posted_ before epoll_wait, so one of the two always
  // sees the other's store and a command is never left unnoticed.
  command_posted_.store(true);
  if (may_sleep_.load()) {
    uint64_t one = 1;
    ssize_t n = write(wake_fd_, &one, sizeof(one));
    (void)n;  // a full eventfd counter still wakes the thread
  }
}

void WorkerCore::RunSync(const std::function<void()>& fn) {
  if (closing_.load()) Fail(Code::Closed, "UCX worker is closed");
  std::promise<void> done;
  std::future<void> fut = done.get_future();
  Post([&] {
    try {
      fn();
      done.set_value();
    } catch (...) {
      done.set_exception(std::current_exception());
    }
  });
  fut.get();
}

void WorkerCore::Submit(Batch* batch) {
  Post([this, batch] { StartBatch(batch); });
}

bool WorkerCore::HasCompletions() {
  std::lock_guard<std::mutex> lock(mu_);
  return !completions_.empty();
}

std::vector<Completion> WorkerCore::TakeCompletions() {
  std::vector<Completion> out;
  std::lock_guard<std::mutex> lock(mu_);
  notify_pending_.store(false);
  out.swap(completions_);
  return out;
}

void WorkerCore::BeginClose(std::function<void()> on_closed) {
  closing_.store(true);
  Post([this, cb = std::move(on_closed)]() mutable {
    on_closed_ = std::move(cb);
    CloseAll();
  });
}

void WorkerCore::Push(Completion c) {
  std::lock_guard<std::mutex> lock(mu_);
  completions_.push_back(c);
  completion_count_.fetch_add(1, std::memory_order_release);
}

bool WorkerCore::DrainCommands() {
  if (woken_) {
    uint64_t counter = 0;
    ssize_t n = read(wake_fd_, &counter, sizeof(counter));  // non-blocking: resets the counter
    (void)n;
    woken_ = false;
  }
  std::deque<std::function<void()>> cmds;
  {
    std::lock_guard<std::mutex> lock(mu_);
    command_posted_.store(false, std::memory_order_relaxed);
    cmds.swap(commands_);
  }
  for (auto& fn : cmds) fn();
  return !cmds.empty();
}

void WorkerCore::Loop() {
  epoll_event events[4];
  while (!stop_) {
    DrainCommands();
    if (stop_) break;
    while (ucp_worker_progress(worker_) != 0) {
    }
    CheckDeadlines();
    WatchPeers();
    NotifyCompletions();
    if (opts_.busy_poll && !live_.empty()) continue;  // spin only while ops are in flight
    if (SpinForActivity()) continue;
    if (ucp_worker_arm(worker_) == UCS_ERR_BUSY) continue;
    may_sleep_.store(true);
    if (command_posted_.load()) {
      may_sleep_.store(false);
      continue;
    }
    epoll_wait(epoll_fd_, events, 4, WaitTimeoutMs());
    may_sleep_.store(false);
    woken_ = true;  // drain the eventfd next time round (whether or not it fired)
  }
  if (on_closed_) on_closed_();
}

// Polls the worker and the command queue for up to spin_us; true as soon as either has work.
// Bounded, so an idle worker goes back to sleeping on its event fd.
bool WorkerCore::SpinForActivity() {
  if (opts_.spin_us <= 0) return false;
  const int64_t until = NowNs() + opts_.spin_us * 1000;
  do {
    if (command_posted_.load(std::memory_order_acquire)) return true;
    if (ucp_worker_progress(worker_) != 0) return true;
  } while (NowNs() < until);
  return false;
}

void WorkerCore::NotifyCompletions() {
  bool has_completions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    has_completions = !completions_.empty();
  }
  // A JS thread polling for its batch drains the queue itself (and after it stops polling it
  // checks the queue once more), so no loop wake-up is needed while it polls.
  if (has_completions && !js_polling_.load() && !notify_pending_.exchange(true)) notify_();
}

int WorkerCore::WaitTimeoutMs() const {
  int64_t wait_ns = eps_.empty() ? -1 : int64_t{kIdleWakeMs} * 1000000;
  const int64_t now = NowNs();
  for (const Batch* b : live_) {
    if (b->reported) continue;
    const int64_t left = std::max<int64_t>(0, b->deadline_ns - now);
    if (wait_ns < 0 || left < wait_ns) wait_ns = left;
  }
  if (wait_ns < 0) return -1;
  return static_cast<int>((wait_ns + 999999) / 1000000);
}

std::shared_ptr<EpCore> WorkerCore::CreateEp(const std::vector<uint8_t>& address,
                                             const PeerIdentity& peer, int64_t timeout_ms) {
  auto ep = std::make_shared<EpCore>();
  ep->id = next_ep_id_++;
  ep->op_timeout_ns = timeout_ms * 1000000;
  // UCX peer error handling everywhere. For a same-host peer the progress thread also watches
  // the peer process (WatchPeers), which notices a SIGKILL sooner than UCX keepalive.
  static const PeerIdentity self = SelfIdentity();
  ep->watch_pid = peer.boot_hash == self.boot_hash && peer.pid != 0;
  ep->peer_pid = static_cast<int32_t>(peer.pid);
  ep->peer_start_ticks = peer.start_ticks;
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.address = reinterpret_cast<const ucp_address_t*>(address.data());
  params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  params.err_handler.cb = &WorkerCore::OnEpError;
  ep->owner = this;
  params.err_handler.arg = ep.get();
  ucs_status_t st = ucp_ep_create(worker_, &params, &ep->ep);
  if (st != UCS_OK) {
    Fail(st == UCS_ERR_UNREACHABLE ? Code::PeerUnreachable : Code::Transport,
         "ucp_ep_create: " + StatusText(st));
  }
  eps_.push_back(ep);
  return ep;
}

void WorkerCore::OnEpError(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* ep = static_cast<EpCore*>(arg);
  ep->owner->FailEp(ep, Code::PeerUnreachable, "peer failed: " + StatusText(status));
}

void WorkerCore::FailEp(EpCore* ep, Code code, const std::string& why) {
  if (ep->failed) return;
  ep->failed = true;
  ep->fail_code = code;
  ep->fail_message = why;
  ep->dead.store(true);
  if (ep->ep == nullptr) return;
  // FORCE: release now, complete every outstanding request with UCS_ERR_CANCELED.
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  param.cb.send = &FreeOnDone;
  ucs_status_ptr_t req = ucp_ep_close_nbx(ep->ep, &param);
  (void)req;  // freed by FreeOnDone when it completes later; NULL/err needs nothing
  ep->ep = nullptr;
}

// Direct copies read or write the peer's segment through the rkey's mapping: wait for them
// (they are plain memcpys of at most a window, milliseconds) before the mapping goes.
static void WaitDirectCopies(EpCore* ep) {
  while (ep->direct_inflight.load() > 0) std::this_thread::yield();
}

void WorkerCore::CloseEp(const std::shared_ptr<EpCore>& ep, std::function<void()> done) {
  FailEp(ep.get(), Code::Closed, "endpoint closed");
  // rkeys may still be referenced by requests that UCX has not called back yet; keep them then.
  if (ep->pending.empty()) {
    WaitDirectCopies(ep.get());
    for (auto& [id, rkey] : ep->rkeys) ucp_rkey_destroy(rkey);
    ep->rkeys.clear();
  }
  eps_.erase(std::remove(eps_.begin(), eps_.end(), ep), eps_.end());
  done();
}

void WorkerCore::StartBatch(Batch* batch) {
  live_.push_back(batch);
  EpCore* ep = batch->ep.get();
  const size_t n = batch->ops.size();
  batch->status.assign(n, OpStatus{});
  batch->reqs.assign(n + 1, ReqCtx{});
  auto fail_all = [&](Code code, const std::string& msg) {
    for (auto& s : batch->status) s = OpStatus{false, true, code, msg};
  };
  bool post = true;
  if (closing_.load()) {
    fail_all(Code::Closed, "UCX worker is closing");
    post = false;
  } else if (ep->failed) {
    fail_all(ep->fail_code, ep->fail_message);
    post = false;
  } else if (batch->before_start) {
    try {
      batch->before_start();
    } catch (const KvfException& e) {
      fail_all(e.code(), Untagged(e));
      post = false;
    } catch (const std::exception& e) {
      fail_all(Code::Internal, e.what());
      post = false;
    }
  }
  // A guard count: a request completing while later ones are still being submitted must not
  // finish (and hand to JS, which frees it) the batch under this loop.
  batch->outstanding = 1;
  if (post) {
    ep->pending.push_back(batch);
    for (size_t i = 0; i < n; ++i) {
      const OpDesc& op = batch->ops[i];
      batch->reqs[i] = ReqCtx{batch, static_cast<int>(i)};
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.cb.send = &WorkerCore::OnSend;
      p.user_data = &batch->reqs[i];
      if (op.mem_type != UCS_MEMORY_TYPE_UNKNOWN) {
        p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMORY_TYPE;
        p.memory_type = op.mem_type;
      }
      ucs_status_ptr_t r = batch->kind == OpKind::Get
                               ? ucp_get_nbx(ep->ep, op.local, op.length, op.remote, op.rkey, &p)
                               : ucp_put_nbx(ep->ep, op.local, op.length, op.remote, op.rkey, &p);
      if (r == nullptr) {
        batch->status[i] = OpStatus{true, true, Code::Internal, ""};
      } else if (UCS_PTR_IS_ERR(r)) {
        ucs_status_t st = UCS_PTR_STATUS(r);
        batch->status[i] = OpStatus{false, true, CodeForStatus(st), StatusText(st)};
      } else {
        batch->outstanding++;
      }
      if (ep->failed) break;  // the error callback fired inside the call; the rest fail below
    }
    // Put completion is local; a flush makes it remote, so the peer can read once we resolve.
    if (batch->kind == OpKind::Put && !ep->failed) {
      batch->reqs[n] = ReqCtx{batch, -1};
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.cb.send = &WorkerCore::OnSend;
      p.user_data = &batch->reqs[n];
      ucs_status_ptr_t r = ucp_ep_flush_nbx(ep->ep, &p);
      if (UCS_PTR_IS_ERR(r)) {
        batch->outstanding++;  // FinishReq takes one back
        FinishReq(&batch->reqs[n], UCS_PTR_STATUS(r));
      } else if (r != nullptr) {
        batch->outstanding++;
      }
    }
    if (ep->failed) {
      for (auto& s : batch->status) {
        if (!s.done || batch->kind == OpKind::Put) s = OpStatus{false, true, ep->fail_code, ep->fail_message};
      }
    }
  }
  batch->outstanding--;  // the guard
  MaybeComplete(batch);
}

void WorkerCore::OnSend(void* request, ucs_status_t status, void* user_data) {
  auto* rc = static_cast<ReqCtx*>(user_data);
  ucp_request_free(request);
  rc->batch->ep->owner->FinishReq(rc, status);
}

void WorkerCore::FinishReq(ReqCtx* rc, ucs_status_t status) {
  Batch* batch = rc->batch;
  EpCore* ep = batch->ep.get();
  batch->outstanding--;
  const bool bad = status != UCS_OK;
  const Code code = ep->failed ? ep->fail_code : CodeForStatus(status);
  const std::string msg = ep->failed ? ep->fail_message : StatusText(status);
  if (rc->index >= 0) {
    OpStatus& s = batch->status[rc->index];
    if (!batch->reported) s = bad ? OpStatus{false, true, code, msg} : OpStatus{true, true, code, ""};
  } else if (bad && !batch->reported) {
    for (auto& s : batch->status) {
      if (s.ok || !s.done) s = OpStatus{false, true, code, "put not flushed: " + msg};
    }
  }
  MaybeComplete(batch);
}

void WorkerCore::MaybeComplete(Batch* batch) {
  if (batch->outstanding > 0) return;
  live_.erase(std::remove(live_.begin(), live_.end(), batch), live_.end());
  auto& pend = batch->ep->pending;
  pend.erase(std::remove(pend.begin(), pend.end(), batch), pend.end());
  const bool report = !batch->reported;
  if (report && batch->after_done) {
    try {
      batch->after_done(batch->status);
    } catch (const std::exception& e) {
      const KvfException* k = dynamic_cast<const KvfException*>(&e);
      for (auto& s : batch->status) {
        if (s.ok) s = OpStatus{false, true, k != nullptr ? k->code() : Code::Internal, Untagged(e)};
      }
    }
  }
  batch->reported = true;
  batch->released = true;
  Push(Completion{batch, report, true});  // last touch: the JS thread may free it right away
}

void WorkerCore::CheckDeadlines() {
  const int64_t now = NowNs();
  std::vector<Batch*> expired;
  for (Batch* b : live_) {
    if (!b->reported && now >= b->deadline_ns) expired.push_back(b);
  }
  for (Batch* b : expired) {
    // Force-closing an earlier batch's endpoint may already have completed (and freed) this one.
    if (std::find(live_.begin(), live_.end(), b) == live_.end() || b->reported) continue;
    for (auto& s : b->status) {
      if (!s.done || (b->kind == OpKind::Put && s.ok)) {
        s = OpStatus{false, true, Code::Timeout, "no completion within the op timeout"};
      }
    }
    b->reported = true;
    Push(Completion{b, true, false});
    // A stuck op means a stuck endpoint: force-close it so UCX cancels (and releases) the rest.
    FailEp(b->ep.get(), Code::Timeout, "endpoint timed out and was closed");
  }
}

void WorkerCore::WatchPeers() {
  const int64_t now = NowNs();
  if (now < next_watch_ns_) return;
  next_watch_ns_ = now + int64_t{kIdleWakeMs} * 1000000;
  for (auto& ep : eps_) {
    if (!ep->watch_pid || ep->failed || ep->peer_pid <= 0) continue;
    if (!ProcessAlive(ep->peer_pid, ep->peer_start_ticks)) {
      FailEp(ep.get(), Code::PeerUnreachable,
             "peer process " + std::to_string(ep->peer_pid) + " is gone");
    }
  }
}

void WorkerCore::CloseAll() {
  for (auto& ep : eps_) FailEp(ep.get(), Code::Closed, "UCX worker closed");
  const int64_t until = NowNs() + kCloseDrainNs;
  while (!live_.empty() && NowNs() < until) ucp_worker_progress(worker_);
  // Whatever UCX never called back: report CLOSED. Its buffers stay referenced (never released)
  // because UCX might still own them; the worker is destroyed right after, which ends that.
  for (Batch* b : live_) {
    if (!b->reported) {
      for (auto& s : b->status) {
        if (!s.done) s = OpStatus{false, true, Code::Closed, "UCX worker closed"};
      }
      b->reported = true;
      Push(Completion{b, true, false});
    }
  }
  live_.clear();
  for (auto& ep : eps_) {
    WaitDirectCopies(ep.get());
    for (auto& [id, rkey] : ep->rkeys) ucp_rkey_destroy(rkey);
    ep->rkeys.clear();
  }
  eps_.clear();
  stop_ = true;
}

}  // namespace kvf::ucx

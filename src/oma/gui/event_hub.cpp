#include "oma/gui/event_hub.h"

#include <fmt/format.h>

#include "common/log.h"

namespace mk::oma::gui {

using nlohmann::json;

namespace {

// Jobs updated this long before the previous scan are looked at again: a row written
// in the same millisecond as the scan (or by a slower transaction) is not missed.
constexpr int64_t kOverlapMs = 2000;
// Ended jobs are forgotten once they have been quiet this long.
constexpr int64_t kForgetMs = 60000;

json opt_json(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }
json opt_json(const std::optional<int64_t>& n) { return n ? json(*n) : json(nullptr); }

}  // namespace

std::string sse_frame(const std::string& event, const json& data) {
  // dump() escapes newlines, so the data is one line as SSE requires.
  return "event: " + event + "\ndata: " + data.dump() + "\n\n";
}

std::optional<std::vector<std::string>> EventHub::Subscription::next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return closed_ || overflowed_ || !frames_.empty(); });
  if (closed_) return std::nullopt;
  std::vector<std::string> out;
  if (overflowed_) {
    overflowed_ = false;
    frames_.clear();
    out.push_back(sse_frame("resync", {{"reason", "this client fell behind; fetch the current state again"}}));
    return out;
  }
  out.assign(frames_.begin(), frames_.end());
  frames_.clear();
  return out;
}

void EventHub::Subscription::push(const std::string& frame, size_t max_queue) {
  {
    std::lock_guard lock(mu_);
    if (closed_ || overflowed_) return;
    if (frames_.size() >= max_queue) overflowed_ = true;
    else frames_.push_back(frame);
  }
  cv_.notify_all();
}

EventHub::EventHub(JobRepository& jobs, JobView view, EventHubOptions options)
    : repo_(jobs), view_(std::move(view)), options_(options) {}

EventHub::~EventHub() { stop(); }

void EventHub::start() {
  std::lock_guard lock(mu_);
  stopping_ = false;
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
}

void EventHub::stop() {
  std::set<std::shared_ptr<Subscription>> subs;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    subs.swap(subs_);
  }
  cv_.notify_all();
  for (const auto& s : subs) {
    {
      std::lock_guard l(s->mu_);
      s->closed_ = true;
    }
    s->cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<EventHub::Subscription> EventHub::subscribe() {
  auto s = std::make_shared<Subscription>();
  bool first;
  {
    std::lock_guard lock(mu_);
    if (stopping_) throw Error("the OMA is stopping: reconnect to the event stream in a moment");
    if (subs_.size() >= options_.max_subscribers) {
      throw Error(fmt::format("{} event streams are open already (the limit): close another browser tab",
                              subs_.size()));
    }
    first = subs_.empty();
    if (first) primed_ = false;  // state learned while nobody listened is stale
    subs_.insert(s);
  }
  // Learn the current state before `hello`: the client fetches it over REST on `hello`,
  // so every change after this scan must be emitted. Priming on the thread's next tick
  // instead lost a change made between the client's fetch and that tick (a job failing
  // within the poll interval stayed "preparing" in the GUI).
  if (first) {
    try {
      scan();
    } catch (const std::exception& e) {
      log::warn("event stream: scanning the database failed (the next scan learns the state): {}", e.what());
    }
  }
  s->push(sse_frame("hello", {{"at", now_ms()}, {"heartbeat_seconds", options_.heartbeat.count() / 1000.0}}),
          options_.max_queue);
  cv_.notify_all();
  return s;
}

void EventHub::unsubscribe(const std::shared_ptr<Subscription>& s) {
  std::lock_guard lock(mu_);
  subs_.erase(s);
}

size_t EventHub::subscribers() {
  std::lock_guard lock(mu_);
  return subs_.size();
}

void EventHub::publish(const std::string& frame) {
  std::vector<std::shared_ptr<Subscription>> subs;
  {
    std::lock_guard lock(mu_);
    subs.assign(subs_.begin(), subs_.end());
  }
  for (const auto& s : subs) s->push(frame, options_.max_queue);
}

void EventHub::loop() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, options_.poll_interval, [&] { return stopping_; });
      if (stopping_) return;
      if (subs_.empty()) continue;  // nobody listens: do not load the database
    }
    try {
      scan();
    } catch (const std::exception& e) {
      log::warn("event stream: scanning the database failed (retrying): {}", e.what());
    }
  }
}

void EventHub::scan() {
  std::lock_guard serial(scan_mu_);
  bool emit;
  {
    std::lock_guard lock(mu_);
    emit = primed_;
    primed_ = true;
  }
  if (!emit) jobs_.clear();
  int64_t now = now_ms();
  std::map<std::string, JobRecord> todo;
  // Priming needs only what may still change; older jobs the client fetches itself.
  for (auto& j : repo_.jobs_updated_since((emit ? last_scan_ : now) - kOverlapMs)) todo[j.job_id] = j;
  for (auto& j : repo_.active_jobs()) todo[j.job_id] = j;
  // Jobs still being finished (steps ending after the last row update).
  for (const auto& [id, st] : jobs_) {
    if (!todo.count(id) && !st.terminal) {
      if (auto j = repo_.find_job(id)) todo[id] = *j;
    }
  }
  for (const auto& [id, j] : todo) scan_job(j, emit, now);
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    if (it->second.terminal && now - it->second.seen_at > kForgetMs) it = jobs_.erase(it);
    else ++it;
  }
  last_scan_ = now;
}

namespace {

// What a job's `job` frame shows, in one string: a new one means a new frame.
std::string job_signature(const JobRecord& j) {
  return fmt::format("{}|{}|{}|{}|{}|{}|{}", j.status, j.phase, j.bytes_done, j.bytes_total, j.updated_at,
                     j.cancel_requested, j.error.value_or(""));
}

}  // namespace

void EventHub::scan_job(const JobRecord& j, bool emit, int64_t now) {
  auto [it, fresh] = jobs_.try_emplace(j.job_id);
  JobState& st = it->second;
  std::string sig = job_signature(j);
  if (sig != st.signature || fresh) st.seen_at = now;
  // A followed copy's frames come from job_changed, newer than this row's bytes.
  emit_job(st, st.live ? st.signature : sig, j, nullptr, emit);
}

void EventHub::job_changed(const JobRecord& job, const std::vector<JobDiskRecord>& disks, bool live) {
  {
    std::lock_guard lock(mu_);
    if (subs_.empty() || !primed_ || stopping_) return;  // the first subscriber's scan learns the state
  }
  try {
    std::lock_guard serial(scan_mu_);
    JobState& st = jobs_[job.job_id];
    std::string sig = job_signature(job);
    for (const auto& d : disks) {  // a disk's phase or bytes may change while the totals do not
      sig += fmt::format("|{}:{}:{}:{}", d.disk_key, d.status, d.phase, d.bytes_done);
    }
    st.live = live && !is_terminal(job.status);
    st.seen_at = now_ms();
    emit_job(st, sig, job, &disks, true);
  } catch (const std::exception& e) {
    log::warn("event stream: job {}: {} (the next scan shows it)", job.job_id, e.what());
  }
}

bool EventHub::wants_changes() {
  std::lock_guard lock(mu_);
  return !subs_.empty() && primed_ && !stopping_;
}

void EventHub::emit_job(JobState& st, const std::string& sig, const JobRecord& j,
                        const std::vector<JobDiskRecord>* disks, bool emit) {
  if (sig != st.signature) {
    st.signature = sig;
    if (emit) publish(sse_frame("job", view_(j, disks ? *disks : repo_.job_disks(j.job_id))));
  }
  for (const auto& s : repo_.list_steps(j.job_id)) {
    std::string key = enum_name(s.status) + (s.finished_at ? "|done" : "");
    auto& known = st.steps[s.seq];
    if (known == key) continue;
    known = key;
    if (emit) {
      publish(sse_frame("step", {{"job_id", s.job_id}, {"seq", s.seq}, {"name", s.name}, {"status", s.status},
                                 {"message", opt_json(s.message)}, {"started_at", s.started_at},
                                 {"finished_at", opt_json(s.finished_at)}}));
    }
  }
  for (const auto& e : repo_.list_events(j.job_id)) {
    if (e.seq <= st.last_event) continue;
    st.last_event = e.seq;
    if (emit) {
      publish(sse_frame("log", {{"job_id", e.job_id}, {"seq", e.seq}, {"at", e.at}, {"level", e.level},
                                {"message", e.message}}));
    }
  }
  st.terminal = is_terminal(j.status);
}

}  // namespace mk::oma::gui

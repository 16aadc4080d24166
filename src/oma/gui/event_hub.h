// EventHub: the OMA's live event stream (GET /api/v1/events, server-sent events), the
// GUI's source of progress without page reloads.
//
// The JobManager tells the hub of every change of the jobs it runs as it happens (the hub
// is its JobObserver, oma/jobs/job_observer.h): those frames leave at once, with the
// copy's newest bytes (which the database records at most once a second). While anyone
// is subscribed, one thread also scans the database every poll_interval for jobs that
// are active or changed since the last scan — jobs that other OMA nodes run, steps and
// events that other components write (cutover) — and publishes what changed; a job
// whose copy this process follows (`live`) gets its `job` frames from the JobManager
// only, so the scan never shows older bytes after newer ones. To every subscriber, as
// SSE frames:
//   event: job   data: the job as GET /api/v1/jobs/{id}/progress shows it (totals and
//                      per disk: bytes done/total, throughput, ETA, phase, status)
//   event: step  data: {job_id, seq, name, status, message, started_at, finished_at}
//   event: log   data: {job_id, seq, at, level, message}
// A new subscriber first gets `hello` (then fetches the current state over REST; every
// change after the state the hub knew at `hello` is emitted);
// a subscriber that falls max_queue frames behind gets `resync` instead of the frames
// it missed (fetch again). The database is the source of truth for everything but a
// followed copy's bytes, so the stream shows jobs run by any thread (API, scheduler,
// recovery) or node. Heartbeats are the streaming handler's business (it waits with a timeout).
//
// Owns its scanning thread; subscriptions are shared with the HTTP handlers that read
// them. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "oma/db/job_repository.h"
#include "oma/jobs/job_observer.h"

namespace mk::oma::gui {

struct EventHubOptions {
  // The database scan's interval: changes the JobManager tells come at once.
  std::chrono::milliseconds poll_interval{1000};
  std::chrono::milliseconds heartbeat{15000};
  size_t max_queue = 4096;        // frames a subscriber may fall behind before `resync`
  // Each open stream holds one HTTP worker thread of its listener (16 by default):
  // stay well below, so streams never starve ordinary requests.
  size_t max_subscribers = 8;
};

// Renders a job with its disks (the API's own view, so the stream and REST agree).
using JobView = std::function<nlohmann::json(const JobRecord&, const std::vector<JobDiskRecord>&)>;

// One SSE frame: "event: NAME\ndata: JSON\n\n".
std::string sse_frame(const std::string& event, const nlohmann::json& data);

class EventHub : public JobObserver {
 public:
  class Subscription {
   public:
    // Waits up to `timeout` for frames. Empty: none arrived (send a heartbeat);
    // nullopt: the hub stopped (end the stream).
    std::optional<std::vector<std::string>> next(std::chrono::milliseconds timeout);

   private:
    friend class EventHub;
    void push(const std::string& frame, size_t max_queue);
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::string> frames_;
    bool closed_ = false, overflowed_ = false;
  };

  EventHub(JobRepository& jobs, JobView view, EventHubOptions options = {});
  ~EventHub();
  void start();
  void stop();  // ends every subscription
  const EventHubOptions& options() const { return options_; }

  // Throws mk::Error when max_subscribers are connected.
  std::shared_ptr<Subscription> subscribe();
  void unsubscribe(const std::shared_ptr<Subscription>& s);
  size_t subscribers();

  // One scan (the thread's work; public for tests). The first scan after the first
  // subscriber arrives only learns the current state: subscribe() makes it, before
  // that subscriber's `hello`.
  void scan();

  // JobObserver: publishes the job's frame (if it changed) and its new steps and events.
  void job_changed(const JobRecord& job, const std::vector<JobDiskRecord>& disks, bool live) override;
  bool wants_changes() override;

 private:
  struct JobState {
    std::string signature;
    std::map<int64_t, std::string> steps;  // seq -> status (+ finished)
    int64_t last_event = 0;
    bool terminal = false;
    bool live = false;  // its `job` frames come from job_changed only
    int64_t seen_at = 0;
  };
  void loop();
  void publish(const std::string& frame);
  void scan_job(const JobRecord& j, bool emit, int64_t now);
  // The job's frame when `signature` is new, then its steps and events not yet seen.
  // scan_mu_ held.
  void emit_job(JobState& st, const std::string& signature, const JobRecord& j,
                const std::vector<JobDiskRecord>* disks, bool emit);

  JobRepository& repo_;
  JobView view_;
  EventHubOptions options_;
  std::mutex mu_;  // guards subs_, stopping_, primed_
  std::condition_variable cv_;
  std::set<std::shared_ptr<Subscription>> subs_;
  bool stopping_ = false, primed_ = false;
  std::mutex scan_mu_;  // guards jobs_, last_scan_ (one scan at a time)
  std::map<std::string, JobState> jobs_;
  int64_t last_scan_ = 0;
  std::thread thread_;
};

}  // namespace mk::oma::gui

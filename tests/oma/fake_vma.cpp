#include "fake_vma.h"

#include <thread>

#include <fmt/format.h>

#include <libnbd.h>

#include <algorithm>
#include <ctime>
#include <fstream>

#include "common/error.h"
#include "engine/nbd_connection.h"
#include "support/migratekit_runner.h"
#include "support/net.h"

namespace mk::oma::test {

using nlohmann::json;
using protocol::DiskPhase;
using protocol::DiskStatus;

namespace {

// A request the protocol or the fake's rules refuse: answered, and recorded.
struct Violation {
  int status;
  std::string message;
  std::optional<std::string> field;
};

json error_body(const std::string& message, std::optional<std::string> field = std::nullopt) {
  return protocol::encode(protocol::ErrorReply{message, std::move(field)});
}

}  // namespace

protocol::DiskProgress disk_state(const std::string& key, DiskStatus status, int64_t done, int64_t total,
                                  const std::string& change_id) {
  protocol::DiskProgress p;
  p.disk_key = protocol::DiskKey::parse(key);
  p.status = status;
  p.phase = status == DiskStatus::Completed ? DiskPhase::Done
            : status == DiskStatus::Failed  ? DiskPhase::Failed
                                            : DiskPhase::Copying;
  p.bytes_done = done;
  p.bytes_total = total;
  p.throughput_bps = 4096.0;
  p.eta_seconds = 7.0;
  if (!change_id.empty()) p.change_id = change_id;
  return p;
}

FakeVma::FakeVma(std::string psk_file) : psk_(std::move(psk_file)), instance_(protocol::new_uuid()) {
  route(protocol::kReplicateRoute, &FakeVma::replicate);
  route(protocol::kProgressRoute, &FakeVma::progress);
  route(protocol::kStopRoute, &FakeVma::stop);
  route(protocol::kPowerRoute, &FakeVma::power);
  route(protocol::kCleanupRoute, &FakeVma::cleanup);
  route(protocol::kDiscoverRoute, &FakeVma::discover);
  route(protocol::kPreflightRoute, &FakeVma::preflight);
  route(protocol::kDescribeRoute, &FakeVma::describe);
  route(protocol::kHealthRoute, &FakeVma::health);
  // Every answer carries the fake's version, those of unknown routes included.
  server_.set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
    res.set_header(protocol::kVersionHeader, std::to_string(version_.load()));
  });
  port_ = server_.bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw mk::Error("fake VMA: cannot bind 127.0.0.1");
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

FakeVma::~FakeVma() {
  go_silent();
  std::lock_guard lock(mu_);
  jobs_.clear();  // stops copies by PID
}

// With a token: the request's signature, as the VMA checks it (401 otherwise).
std::optional<protocol::SignedRequest> FakeVma::check_signature(const httplib::Request& req) {
  std::string token;
  {
    std::lock_guard lock(mu_);
    token = token_;
  }
  if (token.empty()) return std::nullopt;
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  auto c = protocol::check_request(token, req.method, req.path, req.get_header_value("Authorization"), now);
  if (!c.request) throw Violation{401, c.refusal, std::nullopt};
  if (!nonces_.first_use(c.request->nonce, c.request->time, now)) throw Violation{401, "a replayed request", std::nullopt};
  if (!protocol::body_matches(*c.request, req.body)) throw Violation{401, "a body other than the signed one", std::nullopt};
  return c.request;
}

// Binds `h` to the route: the signature (with a token) and the version are checked
// first, as the VMA does; answers to signed requests are signed.
void FakeVma::route(const protocol::Route& r, Handler h) {
  auto handler = [this, h](const httplib::Request& req, httplib::Response& res) {
    Reply reply;
    if (is_silent()) {
      // Gone silent while the server stops: a request that got in meanwhile (the OMA's
      // follow-up to a dropped call) gets no answer either, as from a VMA that went away.
      res.status = 503;
      res.set_content_provider(1, "application/json", [](size_t, size_t, httplib::DataSink&) { return false; });
      return;
    }
    std::optional<protocol::SignedRequest> signature;
    try {
      signature = check_signature(req);
      std::optional<std::string> version;
      if (req.has_header(protocol::kVersionHeader)) version = req.get_header_value(protocol::kVersionHeader);
      try {
        protocol::check_peer_header(protocol::Side::Vma, version, version_);
      } catch (const protocol::VersionMismatch& e) {
        throw Violation{426, e.what(), protocol::kVersionHeader};
      }
      reply = (this->*h)(req);
    } catch (const schema::FieldError& e) {
      std::lock_guard lock(mu_);
      violations_.push_back(fmt::format("{} {}: {}", req.method, req.path, e.what()));
      reply = {400, error_body(e.what(), e.field())};
    } catch (const Violation& v) {
      std::lock_guard lock(mu_);
      violations_.push_back(fmt::format("{} {}: {}", req.method, req.path, v.message));
      reply = {v.status, error_body(v.message, v.field)};
    }
    res.status = reply.status;
    if (reply.abort) {
      res.set_content_provider(
          1, "application/json", [](size_t, size_t, httplib::DataSink&) { return false; });
      return;
    }
    std::string body = reply.body.dump();
    if (signature) {
      std::lock_guard lock(mu_);
      res.set_header(protocol::kAnswerMacHeader, protocol::sign_answer(token_, signature->nonce, reply.status, body));
    }
    res.set_content(body, "application/json");
  };
  std::string pattern(r.pattern);
  if (r.method == "GET") {
    server_.Get(pattern, handler);
  } else {
    server_.Post(pattern, handler);
  }
}

bool FakeVma::is_silent() {
  std::lock_guard lock(silent_mu_);
  return silent_;
}

void FakeVma::go_silent() {
  {
    std::lock_guard lock(silent_mu_);
    silent_ = true;
  }
  silent_cv_.notify_all();
  server_.stop();
  if (thread_.joinable()) thread_.join();
}

void FakeVma::set_source(const std::string& disk_key, const std::string& uri) {
  std::lock_guard lock(mu_);
  sources_[disk_key] = uri;
}

void FakeVma::set_disk(const std::string& job_id, const protocol::DiskProgress& progress) {
  protocol::encode(progress);  // a script the protocol refuses fails the test here, not the OMA's poll
  std::lock_guard lock(mu_);
  for (auto& d : jobs_.at(job_id).disks) {
    if (d->request.disk_key == progress.disk_key) d->scripted = progress;
  }
  changed_cv_.notify_all();
}

void FakeVma::restart() {
  std::lock_guard lock(mu_);
  jobs_.clear();
  instance_ = protocol::new_uuid();
  changed_cv_.notify_all();
}

void FakeVma::restart_resuming() {
  std::lock_guard lock(mu_);
  instance_ = protocol::new_uuid();
  for (auto& [id, job] : jobs_) {
    job.revision = 0;
    job.answered = nullptr;
  }
  changed_cv_.notify_all();
}

void FakeVma::forget(const std::string& job_id) {
  std::lock_guard lock(mu_);
  jobs_.erase(job_id);
  changed_cv_.notify_all();
}

std::vector<std::string> FakeVma::violations() {
  std::lock_guard lock(mu_);
  return violations_;
}
std::vector<protocol::ReplicateRequest> FakeVma::replicate_requests() {
  std::lock_guard lock(mu_);
  return requests_;
}
std::vector<std::string> FakeVma::stopped_jobs() {
  std::lock_guard lock(mu_);
  return stopped_;
}
int FakeVma::starts(const std::string& job_id) {
  std::lock_guard lock(mu_);
  auto it = started_.find(job_id);
  return it == started_.end() ? 0 : it->second;
}
bool FakeVma::knows(const std::string& job_id) {
  std::lock_guard lock(mu_);
  return jobs_.count(job_id) > 0;
}

FakeVma::Reply FakeVma::replicate(const httplib::Request& req) {
  auto r = protocol::decode_text<protocol::ReplicateRequest>(req.body);
  Reply accepted = start_job(r);
  if (!hang_replicate_) return accepted;
  std::unique_lock lock(silent_mu_);
  silent_cv_.wait(lock, [&] { return silent_; });
  return {accepted.status, accepted.body, true};
}

FakeVma::Reply FakeVma::start_job(const protocol::ReplicateRequest& r) {
  std::lock_guard lock(mu_);
  requests_.push_back(r);
  // A job id it knows: answered as the VMA answers it (vma/api/api_server.cpp,
  // replicate): accepted again with this instance and nothing started (an OMA resending
  // the call after a restart re-attaches to the running copy), refused for another VM.
  if (auto known = jobs_.find(r.job_id); known != jobs_.end()) {
    if (known->second.vm_id != r.vm_id) {
      return {409, error_body(fmt::format("job {} is already known for VM {}, not VM {}", r.job_id,
                                          known->second.vm_id, r.vm_id))};
    }
    return {202, protocol::encode(protocol::ReplicateAccepted{r.job_id, instance_})};
  }
  started_[r.job_id]++;
  if (power_on_at_pass_ == r.vm_id && source_vms_.count(r.vm_id)) {
    source_vms_[r.vm_id].on = true;
    power_on_at_pass_.clear();
  }
  Job& job = jobs_[r.job_id];
  job.vm_id = r.vm_id;
  job.nbd = r.nbd;
  for (const auto& d : r.disks) {
    auto disk = std::make_unique<Disk>();
    disk->request = d;
    auto src = sources_.find(r.vm_id + "/" + d.disk_key.str());
    if (src == sources_.end()) src = sources_.find(d.disk_key.str());
    if (src != sources_.end()) {
      disk->progress_file = dir_.file(fmt::format("{}-{}-{}.json", r.job_id, d.disk_key.str(), generation_++));
      std::string target = fmt::format("nbds://{}:{}/{}", r.nbd.host, r.nbd.port, d.export_name);
      disk->copy = std::make_unique<Subprocess>(mk::test::start_migratekit(
          {"copy", src->second, target, "--target-tls-psk", psk_, "--progress-json", disk->progress_file, "-q"}, "",
          disk->progress_file + ".err"));
    }
    job.disks.push_back(std::move(disk));
  }
  return {202, protocol::encode(protocol::ReplicateAccepted{r.job_id, instance_})};
}

// A disk's progress: scripted, automatic, or from its copy's own JSON progress file.
protocol::DiskProgress FakeVma::disk_progress(const std::string& job_id, Disk& d) {
  const Job& job = jobs_.at(job_id);
  if (d.scripted) return completion(job, d, *d.scripted);
  protocol::DiskProgress p;
  p.disk_key = d.request.disk_key;
  p.bytes_total = d.request.capacity_bytes;
  std::string change_id = "cbt-" + job_id + "-" + d.request.disk_key.str();
  if (!d.copy) {
    if (auto_complete_) {
      p.status = DiskStatus::Completed;
      p.phase = DiskPhase::Done;
      p.bytes_done = d.request.capacity_bytes;
      p.change_id = change_id;
    }
    return completion(job, d, p);
  }
  // The engine's last complete progress line.
  std::ifstream in(d.progress_file);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '}') last = line;
  }
  json e = json::parse(last, nullptr, false);
  if (e.is_object()) {
    p.phase = find_enum<DiskPhase>(e.value("phase", "copying")).value_or(DiskPhase::Copying);
    p.bytes_done = e.value("bytes_done", int64_t{0});
    p.bytes_total = e.value("bytes_total", int64_t{0});
    p.throughput_bps = e.value("throughput_bps", 0.0);
    p.eta_seconds = e.value("eta_seconds", 0.0);
  }
  if (d.copy->running() || hold_copies_) {
    p.status = DiskStatus::Copying;
    if (p.phase != DiskPhase::Copying) p.phase = DiskPhase::Copying;
  } else if (d.copy->exit_status() == 0) {
    p.status = DiskStatus::Completed;
    p.change_id = change_id;
  } else {
    p.status = DiskStatus::Failed;
    p.phase = DiskPhase::Failed;
    // What the copy said, as the VMA reports its engine's error.
    std::string said = mk::test::log_tail(d.progress_file + ".err", 300);
    while (!said.empty() && (said.back() == '\n' || said.back() == ' ')) said.pop_back();
    p.error = fmt::format("migratekit copy exited with status {}{}", d.copy->exit_status().value_or(-1),
                          said.empty() ? "" : ": " + said);
  }
  return p;
}

// A scripted or automatic completion: its bytes are written first (write-zeroes, then a
// flush), once, as an honest VMA's copy wrote them; or not, or half, when lying. A write
// that fails makes the disk fail with the reason, as on the VMA.
protocol::DiskProgress FakeVma::completion(const Job& job, Disk& d, protocol::DiskProgress p) {
  if (p.status != DiskStatus::Completed) return p;
  if (!d.written && !d.write_error) {
    Lie how = lie_.load();
    // This run's bytes: those of an earlier run of the pass (bytes_resumed) were written
    // then, by that run (a test writes them itself, as the interrupted VMA did).
    uint64_t left = how == Lie::Unwritten ? 0 : static_cast<uint64_t>(std::max<int64_t>(p.bytes_done - p.bytes_resumed, 0));
    if (how == Lie::Half) left /= 2;
    try {
      if (left > 0) {
        Endpoint target;
        std::unique_ptr<engine::NbdConnection> c;
        for (int attempt = 1;; ++attempt) {
          int port = exports_port_ ? exports_port_.load() : job.nbd.port;
          target = {fmt::format("nbds://{}:{}/{}", job.nbd.host, port, d.request.export_name), {psk_, ""}, "target"};
          try {
            c = engine::NbdConnection::open(target, {"base:allocation"});
            break;
          } catch (const std::exception&) {
            // Connecting again for a while, as the VMA's engine does: an OMA restarted a
            // moment ago polls before the test has told this fake its new export port.
            if (attempt == 60) throw;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
        }
        uint64_t size = c->size(), offset = 0;
        if (size == 0) throw Error(fmt::format("{} has size 0", target.describe()));
        // What is there is written back (holes and zeroes as write-zeroes): the count
        // grows, the content a test put on the volume stays.
        std::vector<char> buf(4 << 20);
        while (left > 0) {
          uint64_t n = std::min({left, size - offset, uint64_t{1} << 30});
          bool zero = false;
          if (c->can_meta_context("base:allocation")) {
            std::pair<uint64_t, uint32_t> first{n, 0};  // the extent at offset: length, flags
            nbd_extent_callback cb{[](void* user, const char*, uint64_t, uint32_t* e, size_t count, int*) {
                                     if (count >= 2) *static_cast<std::pair<uint64_t, uint32_t>*>(user) = {e[0], e[1]};
                                     return 0;
                                   },
                                   &first, nullptr};
            if (nbd_block_status(c->handle(), n, offset, cb, 0) == -1) c->fail("block status");
            zero = (first.second & LIBNBD_STATE_ZERO) != 0;
            n = std::min(n, std::max<uint64_t>(first.first, 1));
          }
          if (!zero) n = std::min<uint64_t>(n, buf.size());
          if (!zero) c->pread(buf.data(), n, offset);
          if (zero || std::all_of(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(n), [](char b) { return b == 0; })) {
            if (nbd_zero(c->handle(), n, offset, 0) == -1) c->fail("write-zeroes");
          } else {
            c->pwrite(buf.data(), n, offset);
          }
          left -= n;
          offset = offset + n == size ? 0 : offset + n;
        }
        c->flush();
      }
      d.written = true;
    } catch (const std::exception& e) {
      d.write_error = e.what();
    }
  }
  if (d.write_error) {
    p.status = DiskStatus::Failed;
    p.phase = DiskPhase::Failed;
    p.change_id = std::nullopt;
    p.error = "fake VMA: writing the disk failed: " + *d.write_error;
  }
  return p;
}

FakeVma::Reply FakeVma::progress(const httplib::Request& req) {
  polls_++;
  std::string job_id = req.matches[1];
  protocol::check_uuid(job_id, "job_id");
  std::optional<protocol::ProgressWait> wait;
  if (req.has_param("wait_ms")) {
    std::optional<std::string> after;
    if (req.has_param("after")) after = req.get_param_value("after");
    wait = protocol::parse_progress_wait(after, req.get_param_value("wait_ms"));  // FieldError: 400, a violation
  }
  std::unique_lock lock(mu_);
  if (!wait || !hold_progress_) {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return {404, error_body("no job " + job_id)};
    return {200, protocol::encode(job_progress(job_id, it->second))};
  }
  held_polls_++;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait->wait_ms);
  for (;;) {
    if (is_silent()) return {503, {}, true};
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return {404, error_body("no job " + job_id)};
    protocol::JobProgress p = job_progress(job_id, it->second);
    if (!wait->after || p.revision != wait->after || std::chrono::steady_clock::now() >= deadline) {
      return {200, protocol::encode(p)};
    }
    // Real copies write their progress to files, which signal nothing: look again soon.
    changed_cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(20)));
  }
}

protocol::JobProgress FakeVma::job_progress(const std::string& job_id, Job& job) {
  protocol::JobProgress p{job_id, instance_, protocol::VmaJobStatus::Running, std::nullopt, {}, {}};
  bool all_completed = true;
  for (auto& d : job.disks) {
    protocol::DiskProgress dp = disk_progress(job_id, *d);
    all_completed &= dp.status == DiskStatus::Completed;
    if (dp.status == DiskStatus::Failed) p.status = protocol::VmaJobStatus::Failed;
    p.total.bytes_done += dp.bytes_done;
    p.total.bytes_total += dp.bytes_total;
    p.disks.push_back(std::move(dp));
  }
  if (all_completed) p.status = protocol::VmaJobStatus::Completed;
  nlohmann::json body = protocol::encode(p);
  if (body != job.answered) {
    job.answered = body;
    ++job.revision;
  }
  if (hold_progress_) p.revision = job.revision;
  return p;
}

FakeVma::Reply FakeVma::stop(const httplib::Request& req) {
  std::string job_id = req.matches[1];
  protocol::check_uuid(job_id, "job_id");
  protocol::decode_text<protocol::EmptyRequest>(req.body);
  std::lock_guard lock(mu_);
  stopped_.push_back(job_id);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return {404, error_body("no job " + job_id)};
  for (auto& d : it->second.disks) {
    if (d->copy) d->copy->stop();
  }
  jobs_.erase(it);
  return {200, protocol::encode(protocol::StopReply{job_id, true})};
}

void FakeVma::add_source_vm(const std::string& vm_id, const std::string& name, bool on) {
  std::lock_guard lock(mu_);
  source_vms_[vm_id] = {name, on};
}

bool FakeVma::powered_on(const std::string& vm_id) {
  std::lock_guard lock(mu_);
  return source_vms_.at(vm_id).on;
}

std::vector<std::string> FakeVma::power_calls() {
  std::lock_guard lock(mu_);
  return power_calls_;
}

FakeVma::Reply FakeVma::power(const httplib::Request& req) {
  std::string vm_id = req.matches[1];
  protocol::check_uuid(vm_id, "vm_id");
  auto p = protocol::decode_text<protocol::PowerRequest>(req.body);
  std::lock_guard lock(mu_);
  auto it = source_vms_.find(vm_id);
  if (it == source_vms_.end()) return {404, error_body("no VM " + vm_id + " in vCenter")};
  power_calls_.push_back(fmt::format("{} {}", enum_name(p.action), vm_id));
  if ((p.action == protocol::PowerAction::On) == it->second.on) {
    throw Violation{409, fmt::format("power {} asked for VM {}, which is already {}", enum_name(p.action), vm_id,
                                     it->second.on ? "on" : "off")};
  }
  if (p.action == protocol::PowerAction::On && !power_on_fault_.empty()) {
    return {502, error_body(fmt::format("VM {}: power on failed: {}", vm_id, power_on_fault_))};
  }
  bool forced = p.action == protocol::PowerAction::Shutdown && ignore_shutdown_;
  it->second.on = p.action == protocol::PowerAction::On;
  auto state = it->second.on ? protocol::PowerState::PoweredOn : protocol::PowerState::PoweredOff;
  return {200, protocol::encode(protocol::PowerReply{vm_id, state, forced})};
}

FakeVma::Reply FakeVma::cleanup(const httplib::Request& req) {
  std::string vm_id = req.matches[1];
  protocol::check_uuid(vm_id, "vm_id");
  protocol::decode_text<protocol::EmptyRequest>(req.body);
  std::lock_guard lock(mu_);
  if (!source_vms_.count(vm_id)) return {404, error_body("no VM " + vm_id + " in vCenter")};
  for (const auto& [id, job] : jobs_) {
    if (job.vm_id != vm_id) continue;
    for (const auto& d : job.disks) {
      if (d->copy && d->copy->running()) {
        throw Violation{423, "cleanup of VM " + vm_id + " while its job " + id + " is copying"};
      }
    }
  }
  power_calls_.push_back("cleanup " + vm_id);
  return {200, protocol::encode(protocol::CleanupReply{vm_id, 0})};
}

protocol::DiscoveredVm FakeVma::discovered(const std::string& vm_id, const SourceVm& vm) const {
  auto state = vm.on ? protocol::PowerState::PoweredOn : protocol::PowerState::PoweredOff;
  return {vm_id, vm.name, "DC0", state, "otherGuest64", 2, 2048, vm.disks, {}, vm.findings, vm.firmware, vm.secure_boot};
}

FakeVma::Reply FakeVma::discover(const httplib::Request&) {
  discover_calls_++;
  std::lock_guard lock(mu_);
  protocol::Discovery d{"vcsim.test", {}};
  for (const auto& [id, vm] : source_vms_) d.vms.push_back(discovered(id, vm));
  return {200, protocol::encode(d)};
}

FakeVma::Reply FakeVma::describe(const httplib::Request& req) {
  std::string vm_id = req.matches[1];
  protocol::check_uuid(vm_id, "vm_id");
  std::lock_guard lock(mu_);
  auto it = source_vms_.find(vm_id);
  return {200, protocol::encode(discovered(vm_id, it != source_vms_.end() ? it->second : SourceVm{"unknown"}))};
}

// A healthy VMA: vCenter reachable, tunnel up.
FakeVma::Reply FakeVma::health(const httplib::Request&) {
  std::lock_guard lock(mu_);
  protocol::Health h;
  h.protocol_version = version_;
  h.status = protocol::HealthStatus::Ok;
  h.vma_instance = instance_;
  h.vcenter.reachable = true;
  h.tunnel.state = protocol::TunnelState::Up;
  return {200, protocol::encode(h)};
}

void FakeVma::set_findings(const std::string& vm_id, std::vector<protocol::PreflightFinding> findings) {
  std::lock_guard lock(mu_);
  source_vms_.at(vm_id).findings = std::move(findings);
}

void FakeVma::set_source_disks(const std::string& vm_id, std::vector<protocol::DiscoveredDisk> disks) {
  std::lock_guard lock(mu_);
  source_vms_.at(vm_id).disks = std::move(disks);
}

FakeVma::Reply FakeVma::preflight(const httplib::Request& req) {
  std::string vm_id = req.matches[1];
  protocol::check_uuid(vm_id, "vm_id");
  std::lock_guard lock(mu_);
  auto it = source_vms_.find(vm_id);
  protocol::PreflightReply reply{vm_id, {}};
  if (it != source_vms_.end()) reply.findings = it->second.findings;
  return {200, protocol::encode(reply)};
}

}  // namespace mk::oma::test

#include "oma/vma/vma_client.h"

#include <fmt/format.h>

#include <ctime>
#include <httplib.h>

#include "protocol/request_auth.h"
#include "protocol/routes.h"

namespace mk::oma {
namespace {

using nlohmann::json;

// The VMA's error message, or the start of whatever it answered.
std::string error_of(const std::string& body) {
  try {
    return protocol::decode_text<protocol::ErrorReply>(body).error;
  } catch (const std::exception&) {
    return body.substr(0, 200);
  }
}

template <typename T>
T decode_answer(const std::string& body, const std::string& where) {
  try {
    return protocol::decode_text<T>(body, "answer");
  } catch (const schema::FieldError& e) {
    throw Error(fmt::format("{}: the VMA's answer breaks the OMA<->VMA protocol ({})", where, e.what()));
  }
}

void expect_same(const std::string& got, const std::string& asked, const char* what, const std::string& where) {
  if (got != asked) throw Error(fmt::format("{}: the VMA's answer names another {} ({})", where, what, got));
}

}  // namespace

void CallAbort::abort() {
  std::lock_guard lock(mu_);
  aborted_ = true;
  if (stop_) stop_();
}

bool CallAbort::aborted() {
  std::lock_guard lock(mu_);
  return aborted_;
}

bool CallAbort::arm(std::function<void()> stop) {
  std::lock_guard lock(mu_);
  if (aborted_) return false;
  stop_ = std::move(stop);
  return true;
}

void CallAbort::disarm() {
  std::lock_guard lock(mu_);
  stop_ = nullptr;
}

HttpVmaClient::HttpVmaClient(std::string base_url, std::chrono::milliseconds timeout, std::string token,
                             int protocol_version)
    : base_url_(std::move(base_url)),
      timeout_(timeout),
      token_(std::move(token)),
      protocol_version_(protocol_version) {}

HttpVmaClient::Answer HttpVmaClient::call(const protocol::Route& route, const std::string& id, const std::string& body,
                                          const std::string& where, std::chrono::milliseconds timeout,
                                          const std::string& query, CallAbort* abort) const {
  httplib::Client c(base_url_);
  c.set_connection_timeout(timeout);
  c.set_read_timeout(timeout);
  c.set_write_timeout(timeout);
  httplib::Headers headers{{protocol::kVersionHeader, std::to_string(protocol_version_)}};
  std::string path = protocol::path_of(route, id);
  // Signed, never the token itself: the port may be held by another process (request_auth.h).
  const std::string nonce = protocol::new_nonce();
  if (!token_.empty()) {
    headers.emplace("Authorization", protocol::sign_request(token_, std::string(route.method), path, body,
                                                            static_cast<int64_t>(std::time(nullptr)), nonce));
  }
  std::string target = query.empty() ? path : path + "?" + query;
  // Client::stop() shuts the socket of a request in flight down (its one thread-safe use).
  if (abort && !abort->arm([&c] { c.stop(); })) throw VmaUnreachable(where + ": ended (the OMA is stopping or the job ends)");
  auto res = route.method == "GET" ? c.Get(target.c_str(), headers)
                                   : c.Post(target.c_str(), headers, body, "application/json");
  if (abort) {
    abort->disarm();
    if (abort->aborted()) throw VmaUnreachable(where + ": ended (the OMA is stopping or the job ends)");
  }
  if (!res) throw VmaUnreachable(fmt::format("{}: {} (is the tunnel up?)", where, httplib::to_string(res.error())));
  std::optional<std::string> version;
  if (res->has_header(protocol::kVersionHeader)) version = res->get_header_value(protocol::kVersionHeader);
  try {
    protocol::check_peer_header(protocol::Side::Oma, version, protocol_version_);
  } catch (const protocol::VersionMismatch& e) {
    throw protocol::VersionMismatch(fmt::format("{}: {}", where, e.what()), e.ours(), e.theirs());
  }
  if (!token_.empty() &&
      !protocol::answer_is_signed(token_, nonce, res->status, res->body,
                                  res->get_header_value(protocol::kAnswerMacHeader))) {
    throw VmaUnreachable(fmt::format(
        "{}: the answer (HTTP {}: {}) is not signed with the token this OMA holds for the VMA: another process may "
        "hold the VMA's tunnel port while its tunnel is down, or the VMA was paired again (no secret was sent)",
        where, res->status, error_of(res->body)));
  }
  return {res->status, res->body};
}

std::string HttpVmaClient::replicate(const protocol::ReplicateRequest& r) {
  std::string where = fmt::format("{}: replicate job {}", describe(), r.job_id);
  Answer a = call(protocol::kReplicateRoute, "", protocol::encode(r).dump(), where, timeout_);
  if (a.status != 202) throw Error(fmt::format("{}: HTTP {}: {}", where, a.status, error_of(a.body)));
  auto accepted = decode_answer<protocol::ReplicateAccepted>(a.body, where);
  expect_same(accepted.job_id, r.job_id, "job", where);
  return accepted.vma_instance;
}

protocol::JobProgress HttpVmaClient::progress(const std::string& job_id) {
  std::string where = fmt::format("{}: progress of job {}", describe(), job_id);
  return progress_answer(call(protocol::kProgressRoute, job_id, "", where, timeout_), job_id, where);
}

protocol::JobProgress HttpVmaClient::wait_progress(const std::string& job_id, const protocol::ProgressWait& wait,
                                                   CallAbort* abort) {
  std::string where = fmt::format("{}: progress of job {}", describe(), job_id);
  Answer a = call(protocol::kProgressRoute, job_id, "", where, timeout_ + std::chrono::milliseconds(wait.wait_ms),
                  protocol::progress_query(wait), abort);
  return progress_answer(a, job_id, where);
}

protocol::JobProgress HttpVmaClient::progress_answer(const Answer& a, const std::string& job_id,
                                                     const std::string& where) const {
  if (a.status == 404) {
    throw VmaJobUnknown(fmt::format("{}: the VMA does not know this job: {}", where, error_of(a.body)));
  }
  if (a.status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, a.status, error_of(a.body)));
  auto p = decode_answer<protocol::JobProgress>(a.body, where);
  expect_same(p.job_id, job_id, "job", where);
  return p;
}

void HttpVmaClient::stop(const std::string& job_id) {
  std::string where = fmt::format("{}: stop job {}", describe(), job_id);
  Answer a = call(protocol::kStopRoute, job_id, protocol::encode(protocol::EmptyRequest{}).dump(), where, timeout_);
  if (a.status == 404) return;  // nothing running there: stopped is what we wanted
  if (a.status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, a.status, error_of(a.body)));
  expect_same(decode_answer<protocol::StopReply>(a.body, where).job_id, job_id, "job", where);
}

int HttpVmaClient::cleanup(const std::string& vm_id) {
  std::string where = fmt::format("{}: clean up snapshots of VM {}", describe(), vm_id);
  Answer a = call(protocol::kCleanupRoute, vm_id, protocol::encode(protocol::EmptyRequest{}).dump(), where, timeout_);
  if (a.status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, a.status, error_of(a.body)));
  auto reply = decode_answer<protocol::CleanupReply>(a.body, where);
  expect_same(reply.vm_id, vm_id, "VM", where);
  return reply.snapshots_removed;
}

protocol::PowerReply HttpVmaClient::power(const std::string& vm_id, protocol::PowerAction action,
                                          int timeout_seconds) {
  std::string where = fmt::format("{}: power {} VM {}", describe(), enum_name(action), vm_id);
  std::string body = protocol::encode(protocol::PowerRequest{action, timeout_seconds}).dump();
  // A guest shutdown may take its whole timeout: wait for it on top of the usual one.
  Answer a = call(protocol::kPowerRoute, vm_id, body, where, timeout_ + std::chrono::seconds(timeout_seconds));
  if (a.status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, a.status, error_of(a.body)));
  auto reply = decode_answer<protocol::PowerReply>(a.body, where);
  expect_same(reply.vm_id, vm_id, "VM", where);
  return reply;
}

protocol::Discovery HttpVmaClient::discover() {
  std::string where = describe() + ": discover";
  Answer a = call(protocol::kDiscoverRoute, "", "", where, timeout_);
  if (a.status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, a.status, error_of(a.body)));
  return decode_answer<protocol::Discovery>(a.body, where);
}

std::vector<protocol::PreflightFinding> HttpVmaClient::preflight(const std::string& vm_id) {
  std::string where = fmt::format("{}: preflight of VM {}", describe(), vm_id);
  Answer a = call(protocol::kPreflightRoute, vm_id, "", where, timeout_);
  if (a.status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, a.status, error_of(a.body)));
  auto reply = decode_answer<protocol::PreflightReply>(a.body, where);
  expect_same(reply.vm_id, vm_id, "VM", where);
  return reply.findings;
}

protocol::DiscoveredVm HttpVmaClient::describe_vm(const std::string& vm_id) {
  std::string where = fmt::format("{}: reading VM {}", describe(), vm_id);
  Answer a = call(protocol::kDescribeRoute, vm_id, "", where, timeout_);
  if (a.status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, a.status, error_of(a.body)));
  auto reply = decode_answer<protocol::DiscoveredVm>(a.body, where);
  expect_same(reply.vm_id, vm_id, "VM", where);
  return reply;
}

protocol::Health HttpVmaClient::health() {
  std::string where = describe() + ": health";
  Answer a = call(protocol::kHealthRoute, "", "", where, timeout_);
  if (a.status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, a.status, error_of(a.body)));
  auto h = decode_answer<protocol::Health>(a.body, where);
  try {
    protocol::check_peer_version(protocol::Side::Oma, h.protocol_version, protocol_version_);
  } catch (const protocol::VersionMismatch& e) {
    throw protocol::VersionMismatch(fmt::format("{}: {}", where, e.what()), e.ours(), e.theirs());
  }
  return h;
}

protocol::ServiceNodesReply HttpVmaClient::set_service_nodes(const protocol::ServiceNodes& nodes) {
  std::string where = fmt::format("{}: tell it the service's {} OMA node(s)", describe(), nodes.nodes.size());
  Answer a = call(protocol::kServiceNodesRoute, "", protocol::encode(nodes).dump(), where, timeout_);
  if (a.status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, a.status, error_of(a.body)));
  return decode_answer<protocol::ServiceNodesReply>(a.body, where);
}

}  // namespace mk::oma

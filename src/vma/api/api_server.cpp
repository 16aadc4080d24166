#include "vma/api/api_server.h"

#include <fmt/format.h>

#include <ctime>

#include "common/log.h"
#include "protocol/routes.h"

namespace mk::vma::api {
namespace {

using nlohmann::json;
using protocol::encode;

// An answer with a status other than 200 and an error message.
struct Failure {
  int status;
  std::string message;
};

std::string error_body(const std::string& message, std::optional<std::string> field = std::nullopt) {
  return encode(protocol::ErrorReply{message, std::move(field)}).dump();
}

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

// The signed request's fields from its Authorization header, nullopt if it is not
// signed with `token` (admission refused such a request already).
std::optional<protocol::SignedRequest> signature_of(const std::string& token, const httplib::Request& req) {
  return protocol::check_request(token, req.method, req.path, req.get_header_value("Authorization"), unix_now())
      .request;
}

std::optional<std::string> version_header(const http::RequestHead& head) {
  if (!head.has_header(protocol::kVersionHeader)) return std::nullopt;
  return head.header(protocol::kVersionHeader);
}

}  // namespace

ApiServer::ApiServer(ApiOptions options, JobRunner& runner, VCenter& vcenter, Tunnels tunnels)
    : options_(std::move(options)), runner_(runner), vcenter_(vcenter), tunnels_(std::move(tunnels)),
      server_(options_.limits) {
  if (options_.token.empty()) throw UsageError("the VMA API needs a token (the one the OMA issued at pairing)");
  if (!tunnels_.state) {
    tunnels_.state = [] {
      return protocol::TunnelHealth{protocol::TunnelState::Down, 0, std::string("no tunnel configured")};
    };
  }
  if (!tunnels_.list) tunnels_.list = [] { return std::vector<protocol::NodeTunnel>{}; };
}

ApiServer::~ApiServer() { stop(); }

// The request, authenticated and of this VMA's protocol version, from its head alone; or
// the refusal (which closes the connection).
http::Verdict ApiServer::admit(const http::RequestHead& head) {
  auto refuse = [](int status, std::string body, std::vector<std::pair<std::string, std::string>> headers) {
    http::Verdict v = http::Verdict::refuse(status, std::move(body));
    v.headers = std::move(headers);
    v.headers.emplace_back(protocol::kVersionHeader, std::to_string(protocol::kVersion));
    return v;
  };
  const int64_t now = unix_now();
  auto check = protocol::check_request(options_.token, head.method, head.path, head.header("Authorization"), now);
  if (!check.request) {
    log::warn("{} {}: refused: {}", head.method, head.path, check.refusal);
    return refuse(401, error_body(check.refusal), {{"WWW-Authenticate", protocol::kAuthScheme}});
  }
  if (!nonces_.first_use(check.request->nonce, check.request->time, now)) {
    log::warn("{} {}: refused: a replayed request (its nonce was used already)", head.method, head.path);
    return refuse(401, error_body("a replayed request: its nonce was used already"),
                  {{"WWW-Authenticate", protocol::kAuthScheme}});
  }
  try {
    protocol::check_peer_header(protocol::Side::Vma, version_header(head));
  } catch (const protocol::VersionMismatch& e) {
    log::error("{} {}: {}", head.method, head.path, e.what());
    std::string body = error_body(e.what(), protocol::kVersionHeader);
    std::string mac = protocol::sign_answer(options_.token, check.request->nonce, 426, body);
    return refuse(426, std::move(body),
                  {{"Upgrade", fmt::format("{}/{}", protocol::kVersionHeader, protocol::kVersion)},
                   {protocol::kAnswerMacHeader, mac}});
  }
  return http::Verdict::admit(options_.limits.max_body);
}

ApiServer::Handler ApiServer::guarded(std::function<json(const httplib::Request&, httplib::Response&)> handler) {
  return [this, handler](const httplib::Request& req, httplib::Response& res) {
    std::string body;
    res.status = 200;
    auto signature = signature_of(options_.token, req);
    try {
      if (!signature || !protocol::body_matches(*signature, req.body)) {
        throw Failure{401, "the request's body is not the one it was signed with"};
      }
      body = handler(req, res).dump();
    } catch (const schema::FieldError& e) {
      res.status = 400;
      body = error_body(e.what(), e.field());
    } catch (const Failure& f) {
      res.status = f.status;
      body = error_body(f.message);
    } catch (const VmNotFound& e) {
      res.status = 404;
      body = error_body(e.what());
    } catch (const JobConflict& e) {
      res.status = 423;
      body = error_body(e.what());
    } catch (const ShuttingDown& e) {
      res.status = 503;
      body = error_body(e.what());
    } catch (const std::exception& e) {
      res.status = 500;
      body = error_body(e.what());
    }
    if (res.status >= 500) log::error("{} {}: {}", req.method, req.path, body);
    if (signature) {
      res.set_header(protocol::kAnswerMacHeader, protocol::sign_answer(options_.token, signature->nonce, res.status, body));
    }
    res.set_content(body, "application/json");
  };
}

void ApiServer::start() {
  server_.set_admission([this](const http::RequestHead& head) { return admit(head); });
  server_.set_refusal_body([](int, const std::string& message) { return error_body(message); });
  // Every answer says which protocol this VMA speaks, refusals included (admit()).
  server_.handlers().set_post_routing_handler([](const httplib::Request&, httplib::Response& res) {
    res.set_header(protocol::kVersionHeader, std::to_string(protocol::kVersion));
  });
  server_.handlers().set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message = res.status == 404   ? fmt::format("no route {} {}", req.method, req.path)
                          : res.status == 413 ? "request body too large"
                                              : fmt::format("HTTP {}", res.status);
    res.set_content(error_body(message), "application/json");
  });
  auto bind = [this](const protocol::Route& route, auto fn) {
    auto handler = guarded([this, fn](const auto& q, auto& r) { return (this->*fn)(q, r); });
    std::string pattern(route.pattern);
    if (route.method == "GET") server_.handlers().Get(pattern, handler);
    else server_.handlers().Post(pattern, handler);
  };
  bind(protocol::kReplicateRoute, &ApiServer::replicate);
  bind(protocol::kProgressRoute, &ApiServer::progress);
  bind(protocol::kStopRoute, &ApiServer::stop_job);
  bind(protocol::kCleanupRoute, &ApiServer::cleanup);
  bind(protocol::kPowerRoute, &ApiServer::power);
  bind(protocol::kDiscoverRoute, &ApiServer::discover);
  bind(protocol::kPreflightRoute, &ApiServer::preflight);
  bind(protocol::kDescribeRoute, &ApiServer::describe);
  bind(protocol::kHealthRoute, &ApiServer::health);
  bind(protocol::kServiceNodesRoute, &ApiServer::service_nodes);

  try {
    port_ = server_.bind(options_.listen_address, options_.port);
  } catch (const Error& e) {
    throw Error(fmt::format("the VMA API: {} (in use, or not an address of this machine)", e.what()));
  }
  server_.start();
  log::info("VMA API listening on {}:{} (instance {}, protocol version {})", options_.listen_address, port_,
            options_.instance, protocol::kVersion);
}

void ApiServer::stop() {
  runner_.release_waiters();  // held progress requests answer now, so the workers can end
  server_.stop();
}

json ApiServer::replicate(const httplib::Request& req, httplib::Response& res) {
  auto request = protocol::decode_text<protocol::ReplicateRequest>(req.body);
  std::string job_id = request.job_id;
  if (auto known = runner_.get(job_id)) {
    if (known->vm_id() != request.vm_id) {
      throw Failure{409, fmt::format("job {} is already known for VM {}, not VM {}", job_id, known->vm_id(),
                                     request.vm_id)};
    }
  } else {
    runner_.submit(JobState::from(std::move(request)));  // a second identical request meanwhile: same answer
  }
  res.status = 202;
  return encode(protocol::ReplicateAccepted{job_id, options_.instance});
}

json ApiServer::progress(const httplib::Request& req, httplib::Response&) {
  std::string job_id = req.matches[1];
  protocol::check_uuid(job_id, "job_id");
  auto unknown = [&] {
    return Failure{404, fmt::format("no job {} on this VMA (never started here, or its record expired)", job_id)};
  };
  if (req.has_param("wait_ms")) {
    std::optional<std::string> after;
    if (req.has_param("after")) after = req.get_param_value("after");
    protocol::ProgressWait wait = protocol::parse_progress_wait(after, req.get_param_value("wait_ms"));
    // Each held request holds a worker: leave the others to stop, health and the rest.
    // Over the limit the answer comes at once and without a revision, which tells the
    // OMA to poll this job at its own interval instead.
    if (waiting_.fetch_add(1) < max_waiting()) {
      struct Leave {
        std::atomic<int>& n;
        ~Leave() { n--; }
      } leave{waiting_};
      auto job = runner_.wait_for_change(job_id, wait.after, std::chrono::milliseconds(wait.wait_ms));
      if (!job) throw unknown();
      protocol::JobProgress p = job->state.progress(options_.instance);
      p.revision = job->revision;
      return encode(p);
    }
    waiting_--;
  }
  auto job = runner_.get(job_id);
  if (!job) throw unknown();
  return encode(job->progress(options_.instance));
}

json ApiServer::stop_job(const httplib::Request& req, httplib::Response&) {
  std::string job_id = req.matches[1];
  protocol::check_uuid(job_id, "job_id");
  protocol::decode_text<protocol::EmptyRequest>(req.body);
  if (!runner_.stop(job_id)) throw Failure{404, fmt::format("no job {} on this VMA", job_id)};
  return encode(protocol::StopReply{job_id, true});
}

json ApiServer::cleanup(const httplib::Request& req, httplib::Response&) {
  std::string vm_id = req.matches[1];
  protocol::check_uuid(vm_id, "vm_id");
  protocol::decode_text<protocol::EmptyRequest>(req.body);
  if (auto job = runner_.copying_job_of(vm_id)) {
    throw JobConflict(fmt::format("VM {} has job {} copying: its snapshot is in use; stop the job first", vm_id, *job));
  }
  auto lock = runner_.lock_vm(vm_id);  // waits for a pass that is still closing
  int n = 0;
  try {
    n = vcenter_.remove_our_snapshots(vm_id);
  } catch (const VmNotFound&) {
    throw;
  } catch (const std::exception& e) {
    throw Failure{502, fmt::format("VM {}: removing our snapshots failed: {}; try again", vm_id, e.what())};
  }
  return encode(protocol::CleanupReply{vm_id, n});
}

json ApiServer::power(const httplib::Request& req, httplib::Response&) {
  std::string vm_id = req.matches[1];
  protocol::check_uuid(vm_id, "vm_id");
  auto p = protocol::decode_text<protocol::PowerRequest>(req.body);
  try {
    return encode(vcenter_.power(vm_id, p.action, std::chrono::seconds(p.timeout_seconds)));
  } catch (const VmNotFound&) {
    throw;
  } catch (const std::exception& e) {
    throw Failure{502, fmt::format("VM {}: power {} failed: {}", vm_id, enum_name(p.action), e.what())};
  }
}

json ApiServer::preflight(const httplib::Request& req, httplib::Response&) {
  std::string vm_id = req.matches[1];
  protocol::check_uuid(vm_id, "vm_id");
  try {
    return encode(protocol::PreflightReply{vm_id, vcenter_.preflight(vm_id)});
  } catch (const VmNotFound&) {
    throw;
  } catch (const std::exception& e) {
    throw Failure{502, fmt::format("VM {}: preflight failed: {}", vm_id, e.what())};
  }
}

json ApiServer::describe(const httplib::Request& req, httplib::Response&) {
  std::string vm_id = req.matches[1];
  protocol::check_uuid(vm_id, "vm_id");
  try {
    return encode(vcenter_.describe(vm_id));
  } catch (const VmNotFound&) {
    throw;
  } catch (const std::exception& e) {
    throw Failure{502, fmt::format("VM {}: reading it from vCenter failed: {}", vm_id, e.what())};
  }
}

json ApiServer::discover(const httplib::Request&, httplib::Response&) {
  try {
    return encode(vcenter_.discover());
  } catch (const std::exception& e) {
    throw Failure{502, fmt::format("discovery failed: {}", e.what())};
  }
}

json ApiServer::health(const httplib::Request&, httplib::Response&) {
  std::string vc_error = vcenter_.check();
  protocol::Health h;
  h.vma_instance = options_.instance;
  h.vcenter = {vc_error.empty(), vc_error.empty() ? std::nullopt : std::optional<std::string>(vc_error)};
  h.tunnel = tunnels_.state();
  h.tunnels = tunnels_.list();
  h.status = h.vcenter.reachable && h.tunnel.state == protocol::TunnelState::Up ? protocol::HealthStatus::Ok
                                                                                 : protocol::HealthStatus::Degraded;
  return encode(h);
}

json ApiServer::service_nodes(const httplib::Request& req, httplib::Response&) {
  auto body = protocol::decode_text<protocol::ServiceNodes>(req.body);
  if (!tunnels_.set_nodes)
    throw Failure{409, "this VMA holds no SSH tunnel (not paired, or run with --no-tunnel): the node list is not used"};
  return encode(protocol::ServiceNodesReply{tunnels_.set_nodes(body.nodes)});
}

}  // namespace mk::vma::api

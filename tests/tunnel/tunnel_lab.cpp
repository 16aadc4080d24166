#include "tunnel_lab.h"

#include <ctime>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "protocol/routes.h"
#include "support/files.h"
#include "support/net.h"
#include "support/x509.h"
#include "vma/pairing/pair_command.h"

namespace mk::tunnel_test {

using nlohmann::json;

Reply http(const std::string& method, int port, const std::string& path, const std::string& authorization,
           const std::string& body) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(std::chrono::seconds(5));
  c.set_read_timeout(std::chrono::seconds(30));
  httplib::Headers h;
  if (!authorization.empty()) h.emplace("Authorization", authorization);
  auto r = method == "GET" ? c.Get(path.c_str(), h) : c.Post(path.c_str(), h, body, "application/json");
  if (!r) throw Error(fmt::format("{} 127.0.0.1:{}{}: {}", method, port, path, httplib::to_string(r.error())));
  Reply out{r->status, json::parse(r->body, nullptr, false), r->body};
  if (out.body.is_discarded()) out.body = nullptr;
  return out;
}

VmaApiStandIn::VmaApiStandIn(std::string token, std::string instance, mk::vma::TunnelStateProvider state) {
  server_.Get(std::string(mk::protocol::kHealthRoute.pattern), [=, this](const httplib::Request& req,
                                                                          httplib::Response& res) {
    requests_++;
    res.set_header(mk::protocol::kVersionHeader, std::to_string(mk::protocol::kVersion));
    // Signed requests only, as the VMA's API takes them (protocol/request_auth.h).
    auto check = mk::protocol::check_request(token, req.method, req.path, req.get_header_value("Authorization"),
                                             static_cast<int64_t>(std::time(nullptr)));
    if (!check.request || !nonces_.first_use(check.request->nonce, check.request->time, std::time(nullptr)) ||
        !mk::protocol::body_matches(*check.request, req.body)) {
      res.status = 401;
      res.set_content(mk::protocol::encode(mk::protocol::ErrorReply{check.refusal.empty() ? "replayed" : check.refusal,
                                                                    std::nullopt})
                          .dump(),
                      "application/json");
      return;
    }
    mk::protocol::Health h;
    h.status = mk::protocol::HealthStatus::Ok;
    h.vma_instance = instance;
    h.vcenter.reachable = true;
    h.tunnel = state();
    std::string body = mk::protocol::encode(h).dump();
    res.set_header(mk::protocol::kAnswerMacHeader, mk::protocol::sign_answer(token, check.request->nonce, 200, body));
    res.set_content(body, "application/json");
  });
  port_ = server_.bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw Error("the VMA API stand-in cannot listen on 127.0.0.1");
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

VmaApiStandIn::~VmaApiStandIn() {
  server_.stop();
  if (thread_.joinable()) thread_.join();
}

TunnelLab::TunnelLab(const TunnelLabOptions& options) {
  bool x509 = options.x509;
  // The OMA-managed file must exist before sshd reads it; the OMA rewrites it at start.
  std::ofstream(authorized_keys()).close();
  mk::test::SshdOptions so{.authorized_keys_file = authorized_keys()};
  if (options.ssh_user != "root") {
    // As the package's drop-in (packaging/sshd): the user cannot read the OMA's file.
    so.extra = {"Match User " + options.ssh_user, "    AuthorizedKeysFile none",
                "    AuthorizedKeysCommand /usr/bin/cat " + authorized_keys(), "    AuthorizedKeysCommandUser root",
                "Match all"};
  }
  sshd_ = std::make_unique<mk::test::SshdServer>(so);
  mk::oma::OmaConfig c;
  c.data_dir = dir_.file("oma");
  c.api_listen = "127.0.0.1";
  c.api_port = 0;
  c.nbd_listen = "127.0.0.1";
  c.nbd_port = 0;
  c.vma_url = "http://127.0.0.1:1";  // no default VMA in these tests
  c.ssh_host = "127.0.0.1";
  c.ssh_port = sshd_->port();
  c.ssh_user = options.ssh_user;
  c.tunnel_session_helper = options.tunnel_session_helper;
  c.ssh_host_key_file = sshd_->host_public_key_file();
  c.authorized_keys_file = authorized_keys();
  c.tunnel_port_base = tunnel_ports_.first();
  if (x509) {
    std::filesystem::create_directories(dir_.file("pki"));
    c.tls_certificates_dir = mk::test::make_x509_pki(dir_.file("pki")).server;
  }
  base_str_ = std::to_string(c.tunnel_port_base);
  oma_ = std::make_unique<mk::oma::Oma>(c);
  oma_->start();
  std::string token = mk::test::read_file(c.data_dir + "/admin.token");
  while (!token.empty() && token.back() == '\n') token.pop_back();
  admin_ = "Bearer " + token;
}

TunnelLab::~TunnelLab() {
  if (oma_) oma_->stop();
}

json TunnelLab::issue_bundle(int expires_in_seconds) {
  Reply r = http("POST", api_port(), "/api/v1/vmas/pairing-bundles", admin_,
                 json{{"expires_in_seconds", expires_in_seconds}}.dump());
  if (r.status != 201) throw Error("pairing bundle refused: " + r.raw);
  return r.body;
}

int TunnelLab::run_pair(const json& bundle, const std::string& state_dir, const std::string& name,
                        const std::string& vcenter, std::string* out, std::string* err) {
  mk::test::TempDir tmp("mk-bundle");
  std::string path = tmp.file("bundle.json");
  {
    std::ofstream f(path);
    f << bundle.dump(2);
  }
  std::vector<std::string> args = {"vma",  "pair",    "--bundle", path, "--state-dir", state_dir,
                                   "--name", name, "--vcenter", vcenter};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  // run_pair sees "pair" as its program name, as the vma dispatcher passes it.
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  int rc = mk::vma::run_pair(static_cast<int>(argv.size()) - 1, argv.data() + 1);
  std::string o = testing::internal::GetCapturedStdout(), e = testing::internal::GetCapturedStderr();
  if (out) *out = o;
  if (err) *err = e;
  return rc;
}

int TunnelLab::add_vm(const std::string& vm_id, const std::optional<std::string>& vma_id, uint64_t capacity) {
  nlohmann::json body = {{"vm_id", vm_id}, {"name", "vm"}, {"vcenter", "vc"}, {"datacenter", "dc"}, {"cpus", 1},
                         {"memory_mb", 512},
                         {"disks", nlohmann::json::array({{{"key", "2000"}, {"unit", 0}, {"capacity_bytes", capacity}}})}};
  if (vma_id) body["vma_id"] = *vma_id;
  return http("POST", api_port(), "/api/v1/vms", admin_, body.dump()).status;
}

void TunnelLab::approve(const std::string& vma_id) {
  Reply r = http("POST", api_port(), "/api/v1/vmas/" + vma_id + "/approve", admin_);
  if (r.status != 200) throw Error("approve refused: " + r.raw);
}

std::unique_ptr<Vma> TunnelLab::make_vma(const std::string& name, bool approve_it, bool nbd_forward, bool start_tunnel) {
  auto v = std::make_unique<Vma>();
  std::string err;
  int rc = run_pair(issue_bundle(), v->state_dir, name, "vc-" + name, nullptr, &err);
  if (rc != 0) throw Error(fmt::format("vma pair failed ({}): {}", rc, err));
  v->paired = mk::vma::load_paired_state(v->state_dir);
  if (approve_it) approve(v->paired.vma_id);
  Vma* raw = v.get();
  v->api = std::make_unique<VmaApiStandIn>(mk::vma::read_api_token(v->state_dir), v->instance, [raw] {
    return raw->tunnel ? raw->tunnel->state() : mk::protocol::TunnelHealth{};
  });
  std::optional<int> nbd_local;
  if (nbd_forward) nbd_local = mk::test::free_tcp_port();
  auto tc = mk::vma::tunnel_config(v->paired, v->api->port(), nbd_local);
  fast_backoff(tc);
  v->tunnel = std::make_unique<mk::vma::TunnelSupervisor>(tc);
  if (start_tunnel) v->tunnel->start();
  return v;
}

bool eventually(const std::function<bool()>& cond, std::chrono::seconds deadline) {
  auto end = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

mk::protocol::TunnelHealth wait_state(mk::vma::TunnelSupervisor& t, mk::protocol::TunnelState state,
                                      std::chrono::seconds deadline) {
  eventually([&] { return t.state().state == state; }, deadline);
  return t.state();
}

void fast_backoff(mk::vma::TunnelConfig& c) {
  c.backoff_initial = std::chrono::milliseconds(100);
  c.backoff_max = std::chrono::milliseconds(800);
  c.keepalive_interval_s = 2;
  c.keepalive_count = 2;
}

}  // namespace mk::tunnel_test

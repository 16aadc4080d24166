#include "vma/status_command.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <httplib.h>

#include <cstdio>
#include <ctime>
#include <fstream>

#include "common/error.h"
#include "protocol/messages.h"
#include "protocol/request_auth.h"
#include "protocol/routes.h"
#include "vma/files.h"

namespace mk::vma {
namespace {

std::string when(int64_t unix_seconds) {
  if (unix_seconds <= 0) return "";
  std::time_t t = unix_seconds;
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

protocol::Health fetch_health(const std::string& state_dir) {
  int port = 0;
  std::ifstream in(state_dir + "/api.port");
  if (!(in >> port) || port <= 0)
    throw Error(fmt::format("cannot read {}/api.port: is `vma run --state-dir {}` running?", state_dir, state_dir));
  std::string token = read_secret_file(state_dir + "/api.token", "the VMA API token (written by `vma pair`)");
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(std::chrono::seconds(5));
  c.set_read_timeout(std::chrono::seconds(30));
  std::string path(protocol::kHealthRoute.path), nonce = protocol::new_nonce();
  httplib::Headers h{{protocol::kVersionHeader, std::to_string(protocol::kVersion)},
                     {"Authorization", protocol::sign_request(token, "GET", path, "",
                                                              static_cast<int64_t>(std::time(nullptr)), nonce)}};
  auto res = c.Get(path.c_str(), h);
  if (!res)
    throw Error(fmt::format("the VMA's API on 127.0.0.1:{} does not answer ({}): is `vma run` running?", port,
                            httplib::to_string(res.error())));
  if (!protocol::answer_is_signed(token, nonce, res->status, res->body, res->get_header_value(protocol::kAnswerMacHeader)))
    throw Error(fmt::format("the answer on 127.0.0.1:{} (HTTP {}) is not this VMA's (not signed with its token)", port,
                            res->status));
  if (res->status != 200) throw Error(fmt::format("the VMA's health: HTTP {}: {}", res->status, res->body.substr(0, 300)));
  return protocol::decode_text<protocol::Health>(res->body, "answer");
}

}  // namespace

int run_status(int argc, char** argv) {
  std::string state_dir;
  CLI::App app{"vma status: the running VMA's health and each SSH tunnel to the OMA (one per OMA node)"};
  app.add_option("--state-dir", state_dir, "The VMA's state directory (as given to vma run)")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  try {
    protocol::Health h = fetch_health(state_dir);
    std::printf("VMA instance %s: %s\n", h.vma_instance.c_str(), enum_name(h.status).c_str());
    std::printf("vCenter: %s%s\n", h.vcenter.reachable ? "reachable" : "unreachable",
                h.vcenter.error ? (" (" + *h.vcenter.error + ")").c_str() : "");
    std::printf("SSH tunnels: %zu\n", h.tunnels.size());
    for (const auto& t : h.tunnels) {
      std::string since = when(t.tunnel.since);
      std::printf("  %-20s %s:%d  %-10s%s%s\n", t.node_id.empty() ? "(the OMA)" : t.node_id.c_str(),
                  t.ssh_host.c_str(), t.ssh_port, enum_name(t.tunnel.state).c_str(),
                  since.empty() ? "" : (" since " + since).c_str(),
                  t.tunnel.error ? ("\n      " + *t.tunnel.error).c_str() : "");
    }
    return h.status == protocol::HealthStatus::Ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vma status: %s\n", e.what());
    return 1;
  }
}

}  // namespace mk::vma

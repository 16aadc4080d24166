#include "oma/pairing/tunnel_session_helper.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/log.h"

namespace mk::oma {
namespace {

using O = TunnelSessionEnd::Outcome;
constexpr size_t kMaxLine = 4096;  // a request or an answer is far smaller

// One line from `fd` (without its '\n'; EOF ends it too), waiting at most `timeout` in
// all. nullopt: nothing complete arrived in time, or more than kMaxLine bytes.
std::optional<std::string> read_line(int fd, std::chrono::milliseconds timeout, std::string* why) {
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      *why = "no complete line in time";
      return std::nullopt;
    }
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      *why = r == 0 ? "no complete line in time" : std::strerror(errno);
      return std::nullopt;
    }
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *why = std::strerror(errno);
      return std::nullopt;
    }
    if (n == 0) {
      if (line.empty()) *why = "the connection closed without a line";
      return line.empty() ? std::nullopt : std::optional(line);
    }
    line.append(buf, static_cast<size_t>(n));
    if (auto nl = line.find('\n'); nl != std::string::npos) return line.substr(0, nl);
    if (line.size() > kMaxLine) {
      *why = "the line is too long";
      return std::nullopt;
    }
  }
}

bool write_all(int fd, const std::string& s) {
  for (size_t off = 0; off < s.size();) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

nlohmann::json to_json(int port, const TunnelSessionEnd& e) {
  return {{"port", port},
          {"outcome", outcome_name(e.outcome)},
          {"pid", e.pid ? nlohmann::json(*e.pid) : nlohmann::json(nullptr)},
          {"message", e.message}};
}

TunnelSessionEnd ask_helper(int port, const std::string& path, std::chrono::milliseconds timeout) {
  auto failed = [&](const std::string& what) {
    return TunnelSessionEnd{O::Failed, std::nullopt,
                            fmt::format("the tunnel-session helper at {} {}: the session on 127.0.0.1:{} may still "
                                        "be up (is migratekit-oma-end-tunnel.socket running? `systemctl status "
                                        "migratekit-oma-end-tunnel.socket`)",
                                        path, what, port)};
  };
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return failed("has a path too long for a Unix socket");
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return failed(fmt::format("cannot be reached (socket: {})", std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return failed(fmt::format("cannot be reached ({})", std::strerror(errno)));
  if (!write_all(fd, nlohmann::json{{"port", port}}.dump() + "\n"))
    return failed(fmt::format("did not take the request ({})", std::strerror(errno)));
  std::string why;
  auto line = read_line(fd, timeout, &why);
  if (!line) return failed(fmt::format("gave no answer ({})", why));
  try {
    auto j = nlohmann::json::parse(*line);
    TunnelSessionEnd e;
    e.outcome = parse_outcome(j.at("outcome").get<std::string>());
    if (j.contains("pid") && j["pid"].is_number_integer()) e.pid = j["pid"].get<pid_t>();
    e.message = "the tunnel-session helper: " + j.at("message").get<std::string>();
    if (j.at("port").get<int>() != port) return failed(fmt::format("answered for another port ({})", *line));
    return e;
  } catch (const std::exception& ex) {
    return failed(fmt::format("gave an answer this OMA cannot read ({}: {})", ex.what(), line->substr(0, 200)));
  }
}

}  // namespace

TunnelSessionEnd end_vma_tunnel_session(int port, const std::string& helper_socket,
                                        std::chrono::milliseconds timeout, const std::string& address) {
  if (!helper_socket.empty() && address != kTunnelAddress)
    return {O::Failed, std::nullopt,
            fmt::format("the tunnel-session helper ends sessions on {}:PORT only, and this node's tunnel address is {}: "
                        "run the OMA as root, or keep --tunnel-address {}",
                        kTunnelAddress, address, kTunnelAddress)};
  if (!helper_socket.empty()) return ask_helper(port, helper_socket, timeout);
  // An OMA that may see and signal sshd itself (root): as before the helper existed.
  auto pid = end_tunnel_session(port, std::chrono::seconds(5), address);
  if (pid) return {O::Ended, pid, fmt::format("its SSH session (pid {}) was ended", *pid)};
  return {O::NoSession, std::nullopt, "it had no live SSH session this OMA could see"};
}

TunnelSessionEnd serve_end_tunnel_request(int in_fd, int out_fd, const HelperOptions& options) {
  int port = 0;
  auto answer = [&](TunnelSessionEnd e) {
    if (!write_all(out_fd, to_json(port, e).dump() + "\n"))
      log::warn("end-tunnel-session: the answer could not be sent: {}", std::strerror(errno));
    if (e.outcome == O::Ended) log::info("end-tunnel-session: {}", e.message);
    else log::warn("end-tunnel-session: port {}: {}: {}", port, outcome_name(e.outcome), e.message);
    return e;
  };
  ucred peer{};
  socklen_t len = sizeof peer;
  if (::getsockopt(in_fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0)
    return answer({O::Refused, std::nullopt,
                   fmt::format("the request did not come over a Unix socket ({}): run this from "
                               "migratekit-oma-end-tunnel.socket",
                               std::strerror(errno))});
  if (peer.uid != 0 && (!options.client_uid || peer.uid != *options.client_uid))
    return answer({O::Refused, std::nullopt,
                   fmt::format("uid {} (pid {}) may not ask: only root and the OMA's user may", peer.uid, peer.pid)});
  std::string why;
  auto line = read_line(in_fd, std::chrono::seconds(10), &why);
  if (!line) return answer({O::Refused, std::nullopt, "no request: " + why});
  try {
    auto j = nlohmann::json::parse(*line);
    if (!j.is_object() || !j.contains("port") || !j["port"].is_number_integer() || j.size() != 1)
      throw std::runtime_error("expected {\"port\": N}");
    int64_t p = j["port"].get<int64_t>();
    if (p < 1 || p > 65535) throw std::runtime_error(fmt::format("port {} is not a TCP port", p));
    port = static_cast<int>(p);
  } catch (const std::exception& e) {
    return answer({O::Refused, std::nullopt, fmt::format("malformed request: {}", e.what())});
  }
  log::info("end-tunnel-session: uid {} (pid {}) asks to end the tunnel session on 127.0.0.1:{}", peer.uid, peer.pid,
            port);
  return answer(end_user_tunnel_session(port, options.tunnel_uid, options.grace));
}

}  // namespace mk::oma

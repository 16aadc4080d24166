#include "vma/tunnel/tunnel_set.h"

#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "common/error.h"
#include "common/log.h"

namespace mk::vma {
namespace {

// A loopback port free now, for a tunnel's NBD local forward (ssh binds it).
int free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw Error("no free loopback port for the NBD-over-SSH forward");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

}  // namespace

std::string node_host_key_alias(const std::string& node_id) {
  return node_id.empty() ? TunnelConfig{}.host_key_alias : "migratekit-oma-" + node_id;
}

TunnelSet::TunnelSet(TunnelConfig base, bool nbd_over_ssh, Persist persist)
    : base_(std::move(base)), nbd_over_ssh_(nbd_over_ssh), persist_(std::move(persist)) {}

TunnelSet::~TunnelSet() { stop(); }

TunnelConfig TunnelSet::config_for(const protocol::ServiceNode& node) const {
  TunnelConfig c = base_;
  if (!node.node_id.empty()) {
    c.ssh_host = node.ssh_host;
    c.ssh_port = node.ssh_port;
    c.host_key_alias = node_host_key_alias(node.node_id);
    c.remote_address = node.tunnel_address;
    c.nbd_remote_port = node.nbd_port;
    std::filesystem::path log(base_.log_path);
    c.log_path = (log.parent_path() / fmt::format("ssh-tunnel-{}.log", node.node_id)).string();
  }
  c.nbd_local_port = nbd_over_ssh_ ? std::optional<int>(free_loopback_port()) : std::nullopt;
  return c;
}

void TunnelSet::start(int local_api_port, const std::vector<protocol::ServiceNode>& nodes) {
  {
    std::lock_guard lk(mu_);
    base_.local_api_port = local_api_port;
    started_ = true;
  }
  if (nodes.empty()) {
    std::lock_guard lk(mu_);
    protocol::ServiceNode single;
    single.node_id = "";
    single.ssh_host = base_.ssh_host;
    single.ssh_port = base_.ssh_port;
    single.nbd_port = base_.nbd_remote_port;
    Entry e{single, std::make_unique<TunnelSupervisor>(config_for(single))};
    e.supervisor->start();
    entries_.emplace("", std::move(e));
    return;
  }
  apply(nodes);
}

std::vector<protocol::NodeTunnel> TunnelSet::apply(const std::vector<protocol::ServiceNode>& nodes) {
  if (nodes.empty()) throw UsageError("an empty node list would leave this VMA without a tunnel: refused");
  // Two nodes may tell the list at once: one at a time, so that the list stored and the
  // tunnels held are the same one.
  std::lock_guard serial(apply_mu_);
  if (persist_) persist_(nodes);
  std::vector<std::unique_ptr<TunnelSupervisor>> stopping;
  {
    std::lock_guard lk(mu_);
    if (!started_) return {};  // start() applies the stored list
    std::map<std::string, const protocol::ServiceNode*> wanted;
    for (const auto& n : nodes) wanted[n.node_id] = &n;
    for (auto it = entries_.begin(); it != entries_.end();) {
      auto w = wanted.find(it->first);
      if (w == wanted.end() || !(*w->second == it->second.node)) {
        log::info("tunnel to {} ({}:{}): {}", it->first.empty() ? "the OMA" : "node " + it->first,
                  it->second.node.ssh_host, it->second.node.ssh_port,
                  w == wanted.end() ? "no longer one of the service's live nodes: stopped"
                                    : "its endpoint or host key changed: restarted");
        stopping.push_back(std::move(it->second.supervisor));
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& n : nodes) {
      if (entries_.count(n.node_id)) continue;
      Entry e{n, std::make_unique<TunnelSupervisor>(config_for(n))};
      e.supervisor->start();
      log::info("tunnel to node {} ({}:{}): started", n.node_id, n.ssh_host, n.ssh_port);
      entries_.emplace(n.node_id, std::move(e));
    }
  }
  // Outside the lock: stopping waits for ssh to exit; health answers meanwhile.
  for (auto& s : stopping) s->stop();
  return tunnels();
}

void TunnelSet::stop() {
  std::map<std::string, Entry> entries;
  {
    std::lock_guard lk(mu_);
    entries.swap(entries_);
    started_ = false;
  }
  for (auto& [id, e] : entries) e.supervisor->stop();
}

std::vector<protocol::NodeTunnel> TunnelSet::tunnels() const {
  std::lock_guard lk(mu_);
  std::vector<protocol::NodeTunnel> out;
  for (const auto& [id, e] : entries_)
    out.push_back({id, e.node.ssh_host, e.node.ssh_port, e.supervisor->state()});
  return out;
}

protocol::TunnelHealth TunnelSet::combined() const {
  auto ts = tunnels();
  if (ts.empty()) return {protocol::TunnelState::Connecting, unix_now(), std::string("the VMA is starting")};
  int64_t since = 0;
  for (const auto& t : ts) {
    if (t.tunnel.state != protocol::TunnelState::Up) {
      protocol::TunnelHealth h = t.tunnel;
      if (!t.node_id.empty())
        h.error = fmt::format("tunnel to OMA node {} ({}:{}): {}", t.node_id, t.ssh_host, t.ssh_port,
                              h.error.value_or(std::string(enum_name(h.state))));
      return h;
    }
    since = std::max(since, t.tunnel.since);
  }
  return {protocol::TunnelState::Up, since, std::nullopt};
}

int TunnelSet::nbd_local_port(const protocol::NbdTarget& target) const {
  std::lock_guard lk(mu_);
  if (!nbd_over_ssh_) throw Error("NBD does not travel inside SSH on this VMA");
  // A single OMA: its one forward, whatever address the OMA names for itself.
  if (auto it = entries_.find(""); it != entries_.end() && entries_.size() == 1)
    return *it->second.supervisor->config().nbd_local_port;
  for (const auto& [id, e] : entries_)
    if (e.node.nbd_host == target.host && e.node.nbd_port == target.port)
      return *e.supervisor->config().nbd_local_port;
  std::string known;
  for (const auto& [id, e] : entries_) known += fmt::format(" {} ({}:{})", id, e.node.nbd_host, e.node.nbd_port);
  throw Error(fmt::format("NBD inside SSH: no tunnel of this VMA reaches the OMA node whose NBD server is {}:{} (its "
                          "tunnels go to:{}); the node list is sent by the OMA nodes every few seconds: if the node "
                          "is new, start the pass again shortly",
                          target.host, target.port, known.empty() ? " none" : known));
}

std::vector<TunnelConfig> TunnelSet::configs() const {
  std::lock_guard lk(mu_);
  std::vector<TunnelConfig> out;
  for (const auto& [id, e] : entries_) out.push_back(e.supervisor->config());
  return out;
}

}  // namespace mk::vma

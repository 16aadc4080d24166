#include "vma/pairing/paired_state.h"

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/files.h"
#include "vma/tunnel/tunnel_set.h"

namespace mk::vma {

PairedState load_paired_state(const std::string& state_dir) {
  std::string path = state_dir + "/pairing.json";
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("this VMA is not paired ({} is missing): run `vma pair --bundle FILE --state-dir {} "
                                   "--name NAME --vcenter VCENTER`", path, state_dir));
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    PairedState s;
    s.state_dir = state_dir;
    s.vma_id = j.at("vma_id");
    s.name = j.at("name");
    s.vcenter = j.at("vcenter");
    s.oma_api_url = j.at("oma_api_url");
    s.oma_api_fingerprint = j.value("oma_api_fingerprint", "");
    s.ssh_host = j.at("ssh_host");
    s.ssh_port = j.at("ssh_port");
    s.ssh_user = j.at("ssh_user");
    s.nbd_host = j.at("nbd_host");
    s.nbd_port = j.at("nbd_port");
    s.nbd_tls = protocol::parse_field<protocol::NbdTls>(j.value("nbd_tls", "psk"), "nbd_tls");
    s.nbd_psk_identity = j.value("nbd_psk_identity", "");
    s.tunnel_port = j.at("tunnel_port");
    if (j.contains("nodes")) s.nodes = protocol::decode<protocol::ServiceNodes>(nlohmann::json{{"nodes", j["nodes"]}}).nodes;
    return s;
  } catch (const std::exception& e) {  // JSON errors, an unknown nbd_tls
    throw Error(fmt::format("{} is damaged ({}): pair this VMA again with a new bundle", path, e.what()));
  }
}

std::string known_hosts_line(const std::string& alias, const std::string& host_key) {
  std::istringstream in(host_key);
  std::string type, blob;
  in >> type >> blob;
  return fmt::format("{} {} {}\n", alias, type, blob);
}

void store_service_nodes(const std::string& state_dir, const std::vector<protocol::ServiceNode>& nodes) {
  std::string path = state_dir + "/pairing.json";
  nlohmann::json j;
  {
    std::ifstream in(path);
    if (!in) throw Error(fmt::format("cannot read {} to store the OMA nodes: pair this VMA again", path));
    j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_object()) throw Error(fmt::format("{} is damaged: pair this VMA again with a new bundle", path));
  }
  nlohmann::json list = protocol::encode(protocol::ServiceNodes{nodes})["nodes"];
  // known_hosts first: a tunnel to a new node checks its key against it.
  std::string kh, single = TunnelConfig{}.host_key_alias;
  {
    std::ifstream in(state_dir + "/known_hosts");
    for (std::string line; std::getline(in, line);)
      if (line.rfind(single + " ", 0) == 0) kh += line + "\n";
  }
  for (const auto& n : nodes) kh += known_hosts_line(node_host_key_alias(n.node_id), n.ssh_host_key);
  write_private_file(state_dir + "/known_hosts", kh);
  j["nodes"] = list;
  write_private_file(path, j.dump(2) + "\n");
}

TunnelConfig tunnel_config(const PairedState& s, int api_port, std::optional<int> nbd_local_port) {
  TunnelConfig c;
  c.ssh_host = s.ssh_host;
  c.ssh_port = s.ssh_port;
  c.ssh_user = s.ssh_user;
  c.identity_file = s.identity();
  c.known_hosts_file = s.known_hosts();
  c.remote_port = s.tunnel_port;
  c.local_api_port = api_port;
  c.nbd_local_port = nbd_local_port;
  c.nbd_remote_port = s.nbd_port;
  c.log_path = s.state_dir + "/ssh-tunnel.log";
  return c;
}

NbdTarget nbd_target(const PairedState& s, std::optional<int> nbd_local_port) {
  if (nbd_local_port) return {"127.0.0.1", *nbd_local_port};
  return {s.nbd_host, s.nbd_port};
}

std::string read_api_token(const std::string& state_dir) {
  std::ifstream in(state_dir + "/api.token");
  std::string token;
  if (!in || !std::getline(in, token) || token.empty())
    throw Error(fmt::format("cannot read the API token {}/api.token: pair this VMA again", state_dir));
  return token;
}

}  // namespace mk::vma

#include "vma/pairing/pair_command.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <httplib.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/files.h"
#include "common/json_schema.h"
#include "common/subprocess.h"
#include "common/tls.h"
#include "protocol/enrolment.h"
#include "protocol/names.h"
#include "protocol/routes.h"
#include "vma/pairing/paired_state.h"
#include "vma/tunnel/tunnel_set.h"

namespace mk::vma {
namespace {

using nlohmann::json;

struct PairArgs {
  std::string bundle, state_dir, name, vcenter;
};

// The bundle, checked: its protocol version first (a bundle of another version may
// differ in any field), then every field.
protocol::PairingBundle read_bundle(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError(fmt::format("cannot read the pairing bundle {}", path));
  std::stringstream text;
  text << in.rdbuf();
  try {
    json j = schema::parse_object(text.str(), "bundle");
    const json* v = j.contains("protocol_version") ? &j["protocol_version"] : nullptr;
    protocol::check_peer_version(protocol::Side::Vma,
                                 v && v->is_number_integer() ? std::optional<int64_t>(v->get<int64_t>()) : std::nullopt);
    return protocol::decode<protocol::PairingBundle>(j);
  } catch (const schema::FieldError& e) {
    throw UsageError(fmt::format("{} is not a valid pairing bundle ({}): ask the OMA's admin for a new one", path,
                                 e.what()));
  }
}


// The VMA's key pair: kept if it exists (pairing again), made by ssh-keygen otherwise.
std::string ensure_key_pair(const std::string& dir, const std::string& name) {
  std::string key = dir + "/id_ed25519";
  if (!std::filesystem::exists(key)) {
    std::string out;
    if (run_capture({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vma-" + name, "-f", key}, out) != 0)
      throw Error(fmt::format("ssh-keygen could not make the VMA's key {} (is openssh-client installed?)", key));
  }
  ::chmod(key.c_str(), 0600);
  ::chmod((key + ".pub").c_str(), 0600);
  std::ifstream in(key + ".pub");
  std::string pub;
  if (!std::getline(in, pub) || pub.empty()) throw Error(fmt::format("cannot read {}.pub", key));
  return pub;
}

protocol::EnrolReply enroll(const std::string& api_url, const std::optional<std::string>& fingerprint,
                            const std::string& code, const protocol::EnrolRequest& body) {
  httplib::Client cli(api_url);
  if (fingerprint) tls::apply_client_trust(cli, {*fingerprint, ""});
  cli.set_connection_timeout(std::chrono::seconds(15));
  cli.set_read_timeout(std::chrono::seconds(30));
  std::string path(protocol::kEnrolRoute.path);
  auto res = cli.Post(path.c_str(), {{"Authorization", "Pairing " + code}}, protocol::encode(body).dump(),
                      "application/json");
  if (!res && fingerprint && res.error() == httplib::Error::SSLConnection)
    throw Error(fmt::format("the OMA at {} did not present the certificate the bundle pins (SHA-256 {}), or does not "
                            "speak HTTPS: nothing was sent to it. Check that the bundle comes from this OMA (its log "
                            "names its certificate's fingerprint) and ask its admin for a new one",
                            api_url, *fingerprint));
  if (!res)
    throw Error(fmt::format("cannot reach the OMA's API at {} ({}): check the address and that this VMA may reach "
                            "it, then run `vma pair` again (the pairing code was not used)",
                            api_url, httplib::to_string(res.error())));
  json reply = json::parse(res->body, nullptr, false);
  if (res->status != 202) {
    std::string why = reply.is_object() && reply.contains("error") && reply["error"].is_string()
                          ? reply["error"].get<std::string>()
                          : res->body.substr(0, 300);
    throw Error(fmt::format("the OMA at {} refused the enrolment (HTTP {}): {}", api_url, res->status, why));
  }
  if (!reply.is_object()) throw Error(fmt::format("the OMA at {} answered the enrolment with no JSON object", api_url));
  const json* v = reply.contains("protocol_version") ? &reply["protocol_version"] : nullptr;
  protocol::check_peer_version(protocol::Side::Vma,
                               v && v->is_number_integer() ? std::optional<int64_t>(v->get<int64_t>()) : std::nullopt);
  try {
    return protocol::decode<protocol::EnrolReply>(reply);
  } catch (const schema::FieldError& e) {
    throw Error(fmt::format("the OMA at {} answered the enrolment with a broken reply ({})", api_url, e.what()));
  }
}

int pair(const PairArgs& a) {
  protocol::check_display_name(a.name, "--name");  // checked by the OMA too: refuse before writing anything
  protocol::check_display_name(a.vcenter, "--vcenter");
  protocol::PairingBundle b = read_bundle(a.bundle);
  // The issuing OMA's key under the single OMA's alias; with several nodes each node's
  // under its own (the bundle's keys were checked to be such lines).
  std::string kh = known_hosts_line(TunnelConfig{}.host_key_alias, b.ssh_host_key);
  for (const auto& n : b.nodes) kh += known_hosts_line(node_host_key_alias(n.node_id), n.ssh_host_key);
  bool psk = b.nbd_tls == protocol::NbdTls::Psk;

  std::error_code ec;
  std::filesystem::create_directories(a.state_dir, ec);
  if (ec) throw Error(fmt::format("cannot create the state directory {}: {}", a.state_dir, ec.message()));
  ::chmod(a.state_dir.c_str(), 0700);
  write_private_file(a.state_dir + "/known_hosts", kh);
  std::string pki = a.state_dir + "/nbd-pki";
  std::optional<std::string> csr;
  if (psk) {
    write_private_file(a.state_dir + "/nbd-psk.keys", *b.nbd_psk_identity + ":" + *b.nbd_psk_key + "\n");
  } else {
    std::filesystem::create_directories(pki, ec);
    if (ec) throw Error(fmt::format("cannot create {}: {}", pki, ec.message()));
    ::chmod(pki.c_str(), 0700);
    write_private_file(pki + "/ca-cert.pem", *b.nbd_ca_cert);
    // A new key for every pairing (the certificate names the new id); it never leaves
    // this machine: the OMA signs the request. A certificate of an earlier pairing
    // must not sit beside it.
    csr = tls::make_key_and_csr(pki + "/client-key.pem", "vma-" + a.name);
    std::filesystem::remove(pki + "/client-cert.pem", ec);
  }
  write_private_file(a.state_dir + "/api.token", b.vma_api_token + "\n");
  std::string pub = ensure_key_pair(a.state_dir, a.name);

  protocol::EnrolReply reply = enroll(b.oma_api_url, b.oma_api_fingerprint, b.pairing_code,
                                      {protocol::kVersion, a.name, a.vcenter, pub, csr});
  if (!psk) {
    if (!reply.nbd_client_cert)
      throw Error(fmt::format("the OMA at {} enrolled this VMA as {} but sent no NBD client certificate, which its "
                              "X.509 NBD server needs: ask its admin to revoke {} and issue a new bundle",
                              b.oma_api_url, reply.vma_id, reply.vma_id));
    write_private_file(pki + "/client-cert.pem", *reply.nbd_client_cert);
  }
  json state = {{"vma_id", reply.vma_id},       {"name", a.name},
                {"vcenter", a.vcenter},         {"oma_api_url", b.oma_api_url},
                {"oma_api_fingerprint", b.oma_api_fingerprint.value_or("")},
                {"ssh_host", b.ssh_host},       {"ssh_port", b.ssh_port},
                {"ssh_user", b.ssh_user},       {"nbd_host", b.nbd_host},
                {"nbd_port", b.nbd_port},       {"nbd_tls", enum_name(b.nbd_tls)},
                {"nbd_psk_identity", b.nbd_psk_identity.value_or("")},
                {"tunnel_port", reply.tunnel_port}};
  if (!b.nodes.empty()) state["nodes"] = protocol::encode(protocol::ServiceNodes{b.nodes})["nodes"];
  write_private_file(a.state_dir + "/pairing.json", state.dump(2) + "\n");
  std::printf("VMA \"%s\" (vCenter %s) enrolled with the OMA at %s as %s, tunnel port %d on the OMA.\n"
              "Waiting for approval: an OMA admin runs POST /api/v1/vmas/%s/approve (check the key's fingerprint:\n"
              "  ssh-keygen -lf %s/id_ed25519.pub).\n"
              "%s"
              "The tunnel starts with the VMA service and comes up once approved. The bundle file %s may be deleted.\n",
              a.name.c_str(), a.vcenter.c_str(), b.oma_api_url.c_str(), reply.vma_id.c_str(), reply.tunnel_port,
              reply.vma_id.c_str(), a.state_dir.c_str(),
              b.nodes.empty() ? ""
                              : fmt::format("The OMA is a service of {} node(s); this VMA holds a tunnel to each.\n",
                                            b.nodes.size())
                                    .c_str(),
              a.bundle.c_str());
  return 0;
}

}  // namespace

int run_pair(int argc, char** argv) {
  PairArgs a;
  CLI::App app{"vma pair: import an OMA pairing bundle and enrol this VMA with the OMA"};
  app.add_option("--bundle", a.bundle, "Pairing bundle file (JSON, from POST /api/v1/vmas/pairing-bundles)")->required();
  app.add_option("--state-dir", a.state_dir, "The VMA's state directory (keys and pairing; mode 0700)")->required();
  app.add_option("--name", a.name, "This VMA's name (its site)")->required();
  app.add_option("--vcenter", a.vcenter, "The vCenter this VMA serves")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  try {
    return pair(a);
  } catch (const protocol::VersionMismatch& e) {  // nothing was enrolled: an input problem
    std::fprintf(stderr, "vma pair: %s\n", e.what());
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "vma pair: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vma pair: %s\n", e.what());
    return 1;
  }
}

}  // namespace mk::vma

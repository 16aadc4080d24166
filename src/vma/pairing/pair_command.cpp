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
#include "common/host_name.h"
#include "common/subprocess.h"
#include "vma/pairing/paired_state.h"

namespace mk::vma {
namespace {

using nlohmann::json;

struct PairArgs {
  std::string bundle, state_dir, name, vcenter;
};

std::string field(const json& b, const char* name) {
  if (!b.contains(name) || !b[name].is_string() || b[name].get<std::string>().empty())
    throw UsageError(fmt::format("the bundle has no \"{}\": ask the OMA's admin for a new pairing bundle", name));
  std::string v = b[name];
  if (v.find_first_of("\r\n") != std::string::npos)
    throw UsageError(fmt::format("the bundle's \"{}\" spans several lines: the bundle is damaged", name));
  return v;
}

// A host ssh or the NBD client is given: never anything they could read as an option or
// a URI part (a forged bundle with ssh_host "-oProxyCommand=..." is refused here).
std::string host_field(const json& b, const char* name) {
  std::string v = field(b, name);
  if (!is_host_name_or_ip(v))
    throw UsageError(fmt::format("the bundle's \"{}\" '{}' is not a host name or an IP address: the bundle is damaged "
                                 "or forged; ask the OMA's admin for a new one", name, v.substr(0, 64)));
  return v;
}

int port_field(const json& b, const char* name) {
  if (!b.contains(name) || !b[name].is_number_integer() || b[name] < 1 || b[name] > 65535)
    throw UsageError(fmt::format("the bundle's \"{}\" is not a port number", name));
  return b[name];
}

json read_bundle(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError(fmt::format("cannot read the pairing bundle {}", path));
  try {
    return json::parse(in);
  } catch (const json::exception&) {
    throw UsageError(fmt::format("{} is not a pairing bundle (not JSON)", path));
  }
}

// The host key line as known_hosts wants it: "<alias> <type> <base64>".
std::string known_hosts_line(const std::string& host_key) {
  std::istringstream in(host_key);
  std::string type, blob;
  in >> type >> blob;
  if (type.rfind("ssh-", 0) != 0 && type.rfind("ecdsa-", 0) != 0)
    throw UsageError("the bundle's ssh_host_key is not an SSH public key line");
  if (blob.empty() || blob.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") !=
                          std::string::npos)
    throw UsageError("the bundle's ssh_host_key is not an SSH public key line");
  return fmt::format("{} {} {}\n", TunnelConfig{}.host_key_alias, type, blob);
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

json enroll(const std::string& api_url, const std::string& code, const json& body) {
  httplib::Client cli(api_url);
  cli.set_connection_timeout(std::chrono::seconds(15));
  cli.set_read_timeout(std::chrono::seconds(30));
  auto res = cli.Post("/api/v1/vmas/enroll", {{"Authorization", "Pairing " + code}}, body.dump(), "application/json");
  if (!res)
    throw Error(fmt::format("cannot reach the OMA's API at {} ({}): check the address and that this VMA may reach "
                            "it, then run `vma pair` again (the pairing code was not used)",
                            api_url, httplib::to_string(res.error())));
  json reply = json::parse(res->body, nullptr, false);
  if (res->status != 202) {
    std::string why = reply.is_object() && reply.contains("error") ? reply["error"].dump() : res->body;
    throw Error(fmt::format("the OMA at {} refused the enrolment (HTTP {}): {}", api_url, res->status, why));
  }
  if (!reply.is_object() || !reply.contains("vma_id") || !reply.contains("tunnel_port"))
    throw Error(fmt::format("the OMA at {} answered the enrolment without vma_id and tunnel_port: {}", api_url, res->body));
  return reply;
}

int pair(const PairArgs& a) {
  json b = read_bundle(a.bundle);
  std::string api_url = field(b, "oma_api_url"), ssh_host = host_field(b, "ssh_host"), ssh_user = field(b, "ssh_user"),
              host_key = field(b, "ssh_host_key"), nbd_host = host_field(b, "nbd_host"),
              token = field(b, "vma_api_token"), code = field(b, "pairing_code");
  int ssh_port = port_field(b, "ssh_port"), nbd_port = port_field(b, "nbd_port");
  std::string nbd_tls = b.value("nbd_tls", "psk"), psk_identity, psk_key, ca_cert;
  if (nbd_tls == "psk") {
    psk_identity = field(b, "nbd_psk_identity");
    psk_key = field(b, "nbd_psk_key");
    if (psk_key.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos ||
        psk_identity.find(':') != std::string::npos)
      throw UsageError("the bundle's NBD PSK is not identity + hex key");
  } else if (nbd_tls == "x509") {
    if (!b.contains("nbd_ca_cert") || !b["nbd_ca_cert"].is_string() ||
        b["nbd_ca_cert"].get<std::string>().find("BEGIN CERTIFICATE") == std::string::npos)
      throw UsageError("the bundle's nbd_ca_cert is not a PEM certificate");
    ca_cert = b["nbd_ca_cert"];
  } else {
    throw UsageError("the bundle's nbd_tls must be \"psk\" or \"x509\"");
  }
  std::string kh = known_hosts_line(host_key);

  std::error_code ec;
  std::filesystem::create_directories(a.state_dir, ec);
  if (ec) throw Error(fmt::format("cannot create the state directory {}: {}", a.state_dir, ec.message()));
  ::chmod(a.state_dir.c_str(), 0700);
  write_private_file(a.state_dir + "/known_hosts", kh);
  if (nbd_tls == "psk") {
    write_private_file(a.state_dir + "/nbd-psk.keys", psk_identity + ":" + psk_key + "\n");
  } else {
    std::string pki = a.state_dir + "/nbd-pki";
    std::filesystem::create_directories(pki, ec);
    if (ec) throw Error(fmt::format("cannot create {}: {}", pki, ec.message()));
    ::chmod(pki.c_str(), 0700);
    write_private_file(pki + "/ca-cert.pem", ca_cert);
  }
  write_private_file(a.state_dir + "/api.token", token + "\n");
  std::string pub = ensure_key_pair(a.state_dir, a.name);

  json reply = enroll(api_url, code, {{"name", a.name}, {"vcenter", a.vcenter}, {"ssh_public_key", pub}});
  json state = {{"vma_id", reply["vma_id"]}, {"name", a.name},          {"vcenter", a.vcenter},
                {"oma_api_url", api_url},    {"ssh_host", ssh_host},     {"ssh_port", ssh_port},
                {"ssh_user", ssh_user},      {"nbd_host", nbd_host},     {"nbd_port", nbd_port},
                {"nbd_tls", nbd_tls},        {"nbd_psk_identity", psk_identity},
                {"tunnel_port", reply["tunnel_port"]}};
  write_private_file(a.state_dir + "/pairing.json", state.dump(2) + "\n");
  std::string id = reply["vma_id"];
  std::printf("VMA \"%s\" (vCenter %s) enrolled with the OMA at %s as %s, tunnel port %d on the OMA.\n"
              "Waiting for approval: an OMA admin runs POST /api/v1/vmas/%s/approve (check the key's fingerprint:\n"
              "  ssh-keygen -lf %s/id_ed25519.pub).\n"
              "The tunnel starts with the VMA service and comes up once approved. The bundle file %s may be deleted.\n",
              a.name.c_str(), a.vcenter.c_str(), api_url.c_str(), id.c_str(), reply["tunnel_port"].get<int>(), id.c_str(),
              a.state_dir.c_str(), a.bundle.c_str());
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
  } catch (const UsageError& e) {
    std::fprintf(stderr, "vma pair: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vma pair: %s\n", e.what());
    return 1;
  }
}

}  // namespace mk::vma

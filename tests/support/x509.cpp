#include "support/x509.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>

#include <filesystem>
#include <vector>

#include "common/error.h"
#include "common/subprocess.h"
#include "support/files.h"

namespace mk::test {
namespace {

void certtool(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> argv{"certtool"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  if (mk::run_capture(argv, out, log) != 0) {
    throw Error(fmt::format("{} failed (is gnutls-bin installed?): {}", fmt::join(argv, " "), read_file(log)));
  }
}

void make_key(const std::string& path, const std::string& log) {
  certtool({"--generate-privkey", "--key-type=ecdsa", "--outfile", path}, log);
  ::chmod(path.c_str(), 0600);
}

}  // namespace

X509Dirs make_x509_pki(const std::string& dir, const std::string& client_cn) {
  namespace fs = std::filesystem;
  const std::string ca = dir + "/ca", server = dir + "/server", client = dir + "/client";
  for (const auto& d : {ca, server, client}) fs::create_directories(d);
  const std::string log = ca + "/certtool.log";

  make_key(ca + "/ca-key.pem", log);
  write_at(ca + "/ca.info", 0, "cn = MigrateKit test CA\nca\ncert_signing_key\nexpiration_days = 2\n");
  certtool({"--generate-self-signed", "--load-privkey", ca + "/ca-key.pem", "--template", ca + "/ca.info",
            "--outfile", ca + "/ca-cert.pem"}, log);

  auto issue = [&](const std::string& out_dir, const std::string& role, const std::string& info) {
    make_key(out_dir + "/" + role + "-key.pem", log);
    write_at(ca + "/" + role + ".info", 0, info);
    certtool({"--generate-certificate", "--load-ca-certificate", ca + "/ca-cert.pem", "--load-ca-privkey",
              ca + "/ca-key.pem", "--load-privkey", out_dir + "/" + role + "-key.pem", "--template",
              ca + "/" + role + ".info", "--outfile", out_dir + "/" + role + "-cert.pem"}, log);
    fs::copy_file(ca + "/ca-cert.pem", out_dir + "/ca-cert.pem", fs::copy_options::overwrite_existing);
  };
  issue(server, "server",
        "organization = MigrateKit\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n"
        "tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n");
  issue(client, "client",
        fmt::format("organization = MigrateKit\ncn = {}\ntls_www_client\nencryption_key\nsigning_key\n"
                    "expiration_days = 2\n", client_cn));
  return {server, client};
}

std::string issue_x509_client(const std::string& dir, const std::string& out_dir, const std::string& client_cn) {
  namespace fs = std::filesystem;
  const std::string ca = dir + "/ca", log = ca + "/certtool.log";
  fs::create_directories(out_dir);
  make_key(out_dir + "/client-key.pem", log);
  write_at(out_dir + "/client.info", 0,
           fmt::format("organization = MigrateKit\ncn = {}\ntls_www_client\nencryption_key\nsigning_key\n"
                       "expiration_days = 2\n", client_cn));
  certtool({"--generate-certificate", "--load-ca-certificate", ca + "/ca-cert.pem", "--load-ca-privkey",
            ca + "/ca-key.pem", "--load-privkey", out_dir + "/client-key.pem", "--template", out_dir + "/client.info",
            "--outfile", out_dir + "/client-cert.pem"}, log);
  fs::copy_file(ca + "/ca-cert.pem", out_dir + "/ca-cert.pem", fs::copy_options::overwrite_existing);
  return out_dir;
}

void make_x509_crl(const std::string& dir, const std::string& out_file) {
  const std::string ca = dir + "/ca", log = ca + "/certtool.log";
  write_at(ca + "/crl.info", 0, "expiration_days = 2\n");
  certtool({"--generate-crl", "--load-ca-certificate", ca + "/ca-cert.pem", "--load-ca-privkey", ca + "/ca-key.pem",
            "--template", ca + "/crl.info", "--outfile", out_file}, log);
}

}  // namespace mk::test

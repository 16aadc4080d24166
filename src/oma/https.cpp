#include "oma/https.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/error.h"
#include "common/log.h"

namespace mk::oma {
namespace {

// Whether a listener on `listen` speaks TLS; throws UsageError when plain HTTP is refused.
bool wants_tls(const HttpsOptions& o, const std::string& listen, const char* which) {
  bool loopback = tls::is_loopback_host(listen);
  if (o.mode == "on") return true;
  if (o.mode == "auto") return !loopback;
  if (o.mode != "off") throw UsageError(fmt::format("--https {}: expected auto, on or off", o.mode));
  if (!loopback && !o.insecure_http) {
    throw UsageError(fmt::format(
        "plain HTTP for the {} on {} would carry API tokens, pairing bundles and the GUI's traffic in clear: drop "
        "--https off (HTTPS with the OMA's own certificate), listen on 127.0.0.1, or add --insecure-http if a "
        "TLS proxy in front of it does the encryption",
        which, listen));
  }
  return false;
}

std::shared_ptr<const tls::TlsServerContext> own_certificate(const std::string& data_dir,
                                                             std::vector<std::string> names) {
  std::string dir = data_dir + "/https";
  std::string cert = dir + "/cert.pem", key = dir + "/key.pem";
  if (!std::filesystem::exists(cert) || !std::filesystem::exists(key)) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw Error(fmt::format("cannot create {} for the OMA's HTTPS certificate: {}", dir, ec.message()));
    ::chmod(dir.c_str(), 0700);
    char host[256] = "";
    if (::gethostname(host, sizeof host - 1) == 0 && host[0]) names.emplace_back(host);
    for (const char* n : {"localhost", "127.0.0.1", "::1"}) names.emplace_back(n);
    tls::make_self_signed_certificate(cert, key, names);
    log::info("made the OMA's HTTPS certificate {} (names: {})", cert, fmt::join(names, ", "));
  }
  return tls::TlsServerContext::load(cert, key);
}

}  // namespace

HttpsSetup prepare_https(const HttpsOptions& options, const std::string& data_dir, const std::string& api_listen,
                         const std::string& gui_listen, std::vector<std::string> names) {
  if (options.cert_file.empty() != options.key_file.empty())
    throw UsageError("--https-cert and --https-key go together: give the certificate and its private key");
  bool api = wants_tls(options, api_listen, "API");
  bool gui = !gui_listen.empty() && wants_tls(options, gui_listen, "GUI");
  HttpsSetup s;
  if (!api && !gui) return s;
  std::shared_ptr<const tls::TlsServerContext> ctx;
  if (!options.cert_file.empty()) {
    ctx = tls::TlsServerContext::load(options.cert_file, options.key_file);
  } else {
    for (const std::string& l : {api_listen, gui_listen})
      if (!l.empty() && l != "0.0.0.0" && l != "::") names.push_back(l);
    ctx = own_certificate(data_dir, std::move(names));
  }
  s.fingerprint = ctx->fingerprint();
  if (api) s.api = ctx;
  if (gui) s.gui = ctx;
  log::info("HTTPS certificate SHA-256 fingerprint {} (pairing bundles carry it; `migratekit --fingerprint` takes it)",
            s.fingerprint);
  return s;
}

}  // namespace mk::oma

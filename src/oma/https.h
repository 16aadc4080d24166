// HTTPS for the OMA's listeners (the API and the GUI): which of them speak TLS, and the
// certificate they present.
//
// A listener speaks HTTPS unless it listens on loopback only (127.0.0.0/8, ::1,
// localhost), where plain HTTP stays the default for local scripts and tests; mode "on"
// forces HTTPS everywhere, mode "off" plain HTTP, which is refused on any other address
// unless `insecure_http` says the operator wants tokens, pairing bundles and the GUI in
// clear (behind a TLS proxy, say).
//
// The certificate is the operator's (cert_file + key_file, PEM), or the OMA's own: made
// on first start in DATA/https/ (ECDSA P-256 key of mode 0600, self-signed certificate
// whose subjectAltName lists the OMA's configured host names and addresses, this
// machine's name, localhost and the loopback addresses) and kept across restarts.
// Either way its SHA-256 fingerprint is logged and goes into pairing bundles, where VMAs
// pin it; the CLI takes it as --fingerprint.
//
// Free function; called once at start.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/tls.h"

namespace mk::oma {

struct HttpsOptions {
  std::string mode = "auto";   // auto | on | off
  bool insecure_http = false;  // allow "off" on an address other than loopback
  std::string cert_file, key_file;  // the operator's certificate; "" = the OMA's own
};

struct HttpsSetup {
  std::shared_ptr<const tls::TlsServerContext> api, gui;  // null: plain HTTP
  std::string fingerprint;  // of the certificate, when a listener speaks HTTPS
};

// Decides for the API listener (`api_listen`) and the GUI listener (`gui_listen`; "" =
// none) and loads or makes the certificate in `data_dir`/https. `names` are the host
// names and addresses the OMA is known by (for a certificate it makes). Throws
// mk::UsageError for a refused or inconsistent configuration (with what to change),
// mk::Error when the certificate cannot be made or read.
HttpsSetup prepare_https(const HttpsOptions& options, const std::string& data_dir, const std::string& api_listen,
                         const std::string& gui_listen, std::vector<std::string> names);

}  // namespace mk::oma

// Where an NBD client connects and how it authenticates: the URI, the TLS credentials
// and a role for messages.
//
// Plain values, no I/O except validate_endpoint() and first_psk_identity(), which read
// the PSK file. The copy engine opens connections from an Endpoint; the OMA's export
// backends describe their exports with one. Thread-compatible.
#pragma once

#include <string>

namespace mk {

struct TlsOptions {
  std::string psk_file;          // PSK keys file ("identity:hexkey" lines), or empty
  std::string certificates_dir;  // X.509 directory (ca-cert.pem, client-cert.pem, ...) or empty
};

struct Endpoint {
  std::string uri;  // nbd://, nbds://, nbd+unix://, nbds+unix://
  TlsOptions tls;
  std::string role;  // "source" or "target": used in messages

  bool uses_tls() const;
  // "source nbd://host:10809/export" for messages (the URI holds no secret).
  std::string describe() const;
};

// Checks the scheme and that TLS options come with a TLS scheme; throws UsageError.
void validate_endpoint(const Endpoint& endpoint);

// The first identity in a PSK keys file ("identity:hexkey" per line). Throws UsageError
// if the file cannot be read or holds no identity. The key itself is never returned.
std::string first_psk_identity(const std::string& psk_file);

}  // namespace mk

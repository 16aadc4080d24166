// A throwaway X.509 PKI for TLS tests, made with GnuTLS's certtool: one CA, a server
// certificate (CN and SAN "localhost", IP 127.0.0.1) and a client certificate, laid out
// as nbdkit --tls-certificates and libnbd's certificates directory expect:
//
//   DIR/server/{ca-cert.pem, server-cert.pem, server-key.pem}
//   DIR/client/{ca-cert.pem, client-cert.pem, client-key.pem}
//
// Keys are ECDSA (fast to generate), files mode 0600, valid for two days. The CA key
// stays in DIR/ca/. Free function; throws mk::Error with certtool's output on failure.
#pragma once

#include <string>

namespace mk::test {

struct X509Dirs {
  std::string server;  // for nbdkit --tls-certificates
  std::string client;  // for migratekit --source/--target-tls-certificates
};

// Creates the PKI under `dir` (which must exist); `client_cn` names the client.
X509Dirs make_x509_pki(const std::string& dir, const std::string& client_cn = "vma");

// Another client certificate from the CA of the PKI make_x509_pki made in `dir`, with
// subject CN `client_cn`, as `out_dir`/{ca-cert.pem, client-cert.pem, client-key.pem}
// (`out_dir` is created). Returns `out_dir`.
std::string issue_x509_client(const std::string& dir, const std::string& out_dir, const std::string& client_cn);

// An empty revocation list of that CA, written to `out_file` (PEM).
void make_x509_crl(const std::string& dir, const std::string& out_file);

}  // namespace mk::test

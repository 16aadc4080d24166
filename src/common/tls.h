// TLS for the HTTP listeners (server side) and for the clients that talk to them
// (pinning), on OpenSSL.
//
// Server: TlsServerContext is one SSL_CTX with a certificate and its key, TLS 1.2 or
// newer, AES-GCM preferred (the server's order: on these CPUs AES-GCM is about three
// times faster than ChaCha20, see DESIGN.md), forward-secret key exchanges only, no
// renegotiation, no compression. BoundedHttpServer (bounded_http.h) takes one.
//
// Certificate: make_self_signed_certificate() writes an ECDSA P-256 key (mode 0600) and a
// self-signed certificate whose subjectAltName lists the given host names and IP
// addresses; an appliance makes one on first start and keeps it. Clients that cannot ask
// a CA about it pin its SHA-256 fingerprint ("AB:CD:...", 32 bytes), which pairing
// bundles carry.
//
// Client certificates for NBD (X.509 mode): the OMA keeps a small CA
// (make_ca_certificate), each VMA makes its key and a request (make_key_and_csr), the
// OMA signs it (sign_client_certificate) and lists the certificates of VMAs that may not
// connect in a revocation list (make_crl) that nbdkit reads.
//
// Client: pin_server_certificate() makes an httplib client's SSL_CTX accept exactly the
// certificate with a given fingerprint (and nothing else, CA-signed or not); the host
// name is then irrelevant, as with ssh's known_hosts.
//
// TlsServerContext is immutable once made and thread-safe (SSL_CTX is shared by the
// connections; each connection has its own SSL). Free functions are thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct x509_st X509;

namespace mk::tls {

class TlsServerContext {
 public:
  // Loads a PEM certificate (chain) and its PEM private key; throws mk::Error naming the
  // file and what to do when either cannot be read or they do not match.
  static std::shared_ptr<TlsServerContext> load(const std::string& cert_file, const std::string& key_file);
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  SSL_CTX* ctx() const { return ctx_; }
  // The SHA-256 fingerprint of the (leaf) certificate, "AB:CD:...".
  const std::string& fingerprint() const { return fingerprint_; }

 private:
  TlsServerContext() = default;
  SSL_CTX* ctx_ = nullptr;
  std::string fingerprint_;
};

// "AB:CD:..." (32 bytes, uppercase, colon-separated) of a certificate's DER encoding.
std::string sha256_fingerprint(X509* cert);
// The fingerprint of the first certificate in a PEM file; throws mk::Error.
std::string certificate_file_fingerprint(const std::string& pem_file);
// A fingerprint as an operator may type it (colons or not, any case, an optional
// "sha256:" prefix) in the canonical form; throws mk::UsageError naming `what` for
// anything that is not 32 bytes of hex.
std::string normalize_fingerprint(const std::string& text, const std::string& what = "fingerprint");

// Writes a new ECDSA P-256 key to `key_file` (mode 0600, replaced) and a self-signed
// certificate for it to `cert_file` (valid 10 years, CN = the first name, every name in
// subjectAltName: IP addresses as iPAddress, the rest as dNSName). Throws mk::Error.
void make_self_signed_certificate(const std::string& cert_file, const std::string& key_file,
                                  const std::vector<std::string>& names);

// A small private CA (for the NBD client certificates an OMA issues to its VMAs): writes
// a new ECDSA P-256 key to `key_file` (0600) and a self-signed CA certificate
// (CA:TRUE, pathlen 0, keyCertSign and cRLSign; CN = common_name; valid 20 years).
// Throws mk::Error.
void make_ca_certificate(const std::string& cert_file, const std::string& key_file, const std::string& common_name);

// Writes a new ECDSA P-256 key to `key_file` (0600) and returns a PEM certificate
// request for it (CN = common_name): the key never leaves this machine. Throws mk::Error.
std::string make_key_and_csr(const std::string& key_file, const std::string& common_name);

// A client certificate (TLS clientAuth, valid 10 years) for the key of the PEM request
// `csr_pem`, signed by the CA in ca_cert_file/ca_key_file: subject CN = common_name and,
// when uri_san is not empty, subjectAltName URI:uri_san. The request's own subject and
// extensions are ignored. Throws mk::UsageError for a request that is not one, whose
// signature does not verify or whose key is weak (ECDSA < 256 or RSA < 2048 bits), and
// mk::Error for an unusable CA.
std::string sign_client_certificate(const std::string& ca_cert_file, const std::string& ca_key_file,
                                    const std::string& csr_pem, const std::string& common_name,
                                    const std::string& uri_san);

// The serial number of a PEM certificate in uppercase hex. Throws mk::Error.
std::string certificate_serial(const std::string& cert_pem);

// A PEM certificate revocation list (v2) signed by the CA, listing the given PEM
// certificates (which the CA issued). nextUpdate lies 20 years ahead: the list is
// replaced when access changes, not on a schedule. Throws mk::Error.
std::string make_crl(const std::string& ca_cert_file, const std::string& ca_key_file,
                     const std::vector<std::string>& revoked_cert_pems);

// Makes `ctx` (a client's) accept only a server certificate with this fingerprint
// (canonical form): the chain is not checked against any CA, the pin replaces it. The
// context keeps a copy of the fingerprint. Throws mk::Error when ctx is null.
void pin_server_certificate(SSL_CTX* ctx, const std::string& fingerprint);

// How an httplib client checks an https:// server: a pinned certificate fingerprint
// (canonical form), or a CA file (the host name is then checked too), or neither (the
// system's CAs and the host name).
struct ClientTrust {
  std::string fingerprint;
  std::string ca_file;
};
// Applies `trust` to `client` (an httplib::Client or SSLClient made for an https:// URL;
// a template so that this header need not include httplib). Throws mk::Error when the
// client has no TLS context.
template <typename HttplibClient>
void apply_client_trust(HttplibClient& client, const ClientTrust& trust) {
  if (!trust.fingerprint.empty()) {
    client.enable_server_certificate_verification(false);  // the pin replaces the CA and the name
    pin_server_certificate(client.ssl_context(), trust.fingerprint);
  } else if (!trust.ca_file.empty()) {
    client.set_ca_cert_path(trust.ca_file);
  }
}

// True for "localhost", 127.0.0.0/8 and ::1: an address only this machine can reach.
bool is_loopback_host(const std::string& host);

}  // namespace mk::tls

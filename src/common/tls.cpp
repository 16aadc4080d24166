#include "common/tls.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <memory>

#include "common/error.h"
#include "common/files.h"

namespace mk::tls {
namespace {

// TLS 1.2: forward-secret AEAD suites, AES-GCM first; TLS 1.3: AES-GCM first.
constexpr const char* kCiphers12 =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kCiphers13 = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

// OpenSSL's queued errors as one line (and the queue emptied).
std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no detail from OpenSSL" : out;
}

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

bool is_ip(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool is_dns_name(const std::string& s) {
  return !s.empty() && s.size() <= 253 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.';
  });
}

std::string pem_of(const std::function<int(BIO*)>& write) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || write(bio.get()) != 1) throw Error(fmt::format("cannot encode PEM: {}", openssl_errors()));
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

int pin_index() {
  static int index = CRYPTO_get_ex_new_index(
      CRYPTO_EX_INDEX_SSL_CTX, 0, nullptr, nullptr, nullptr,
      [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<std::string*>(ptr); });
  return index;
}

// Accepts the chain exactly when its leaf has the pinned fingerprint.
int verify_pin(X509_STORE_CTX* store, void* arg) {
  const auto* pin = static_cast<const std::string*>(arg);
  X509* leaf = X509_STORE_CTX_get0_cert(store);
  if (leaf && sha256_fingerprint(leaf) == *pin) {
    X509_STORE_CTX_set_error(store, X509_V_OK);
    return 1;
  }
  X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
  return 0;
}

}  // namespace

std::shared_ptr<TlsServerContext> TlsServerContext::load(const std::string& cert_file, const std::string& key_file) {
  std::shared_ptr<TlsServerContext> t(new TlsServerContext());
  ERR_clear_error();
  t->ctx_ = SSL_CTX_new(TLS_server_method());
  if (!t->ctx_) throw Error(fmt::format("cannot make a TLS context: {}", openssl_errors()));
  SSL_CTX* ctx = t->ctx_;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  static const unsigned char kSessionContext[] = "migratekit-https";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  if (SSL_CTX_set_cipher_list(ctx, kCiphers12) != 1 || SSL_CTX_set_ciphersuites(ctx, kCiphers13) != 1)
    throw Error(fmt::format("cannot set the TLS cipher suites: {}", openssl_errors()));
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1)
    throw Error(fmt::format("cannot use the HTTPS certificate {} ({}): give a PEM certificate (chain)", cert_file,
                            openssl_errors()));
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    throw Error(fmt::format("cannot use the HTTPS key {} ({}): give the certificate's PEM private key, unencrypted",
                            key_file, openssl_errors()));
  if (SSL_CTX_check_private_key(ctx) != 1)
    throw Error(fmt::format("the HTTPS key {} does not belong to the certificate {}", key_file, cert_file));
  t->fingerprint_ = sha256_fingerprint(SSL_CTX_get0_certificate(ctx));
  return t;
}

TlsServerContext::~TlsServerContext() { SSL_CTX_free(ctx_); }

std::string sha256_fingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!cert || X509_digest(cert, EVP_sha256(), md, &n) != 1) throw Error("cannot compute a certificate's fingerprint");
  std::string out;
  for (unsigned int i = 0; i < n; ++i) out += fmt::format("{}{:02X}", i ? ":" : "", md[i]);
  return out;
}

std::string certificate_file_fingerprint(const std::string& pem_file) {
  BioPtr bio(BIO_new_file(pem_file.c_str(), "r"));
  if (!bio) throw Error(fmt::format("cannot read the certificate {}", pem_file));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) throw Error(fmt::format("{} holds no PEM certificate", pem_file));
  return sha256_fingerprint(cert.get());
}

std::string normalize_fingerprint(const std::string& text, const std::string& what) {
  std::string hex;
  std::string_view s = text;
  if (s.size() > 7 && (s.substr(0, 7) == "sha256:" || s.substr(0, 7) == "SHA256:")) s.remove_prefix(7);
  bool ok = true;
  for (char c : s) {
    if (c == ':') continue;
    ok = ok && std::isxdigit(static_cast<unsigned char>(c));
    hex += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  if (!ok || hex.size() != 64)
    throw UsageError(fmt::format("{}: expected a SHA-256 certificate fingerprint (64 hexadecimal digits, colons "
                                 "allowed, as `openssl x509 -noout -fingerprint -sha256` prints it)",
                                 what));
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) out += (i ? ":" : "") + hex.substr(i, 2);
  return out;
}

namespace {

using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using CrlPtr = std::unique_ptr<X509_CRL, Deleter<X509_CRL, X509_CRL_free>>;

PkeyPtr new_ec_key() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) throw Error(fmt::format("cannot make an ECDSA P-256 key: {}", openssl_errors()));
  return key;
}

// A v3 certificate for `pubkey` with a random 127-bit serial, valid from an hour ago
// (clocks a little behind) for `days`, subject O=MigrateKit OSSEA, CN=cn; unsigned.
X509Ptr new_certificate(EVP_PKEY* pubkey, const std::string& cn, long days) {
  X509Ptr cert(X509_new());
  X509* x = cert.get();
  X509_set_version(x, 2);
  BIGNUM* bn = BN_new();
  BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), days * 24 * 3600);
  X509_set_pubkey(x, pubkey);
  X509_NAME* subject = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("MigrateKit OSSEA"), -1,
                             -1, 0);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return cert;
}

// Extensions whose value names the issuer (authorityKeyIdentifier) need it: `issuer`
// is the CA's certificate, or the certificate itself when self-signed.
void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value.c_str());
  if (!ext) throw Error(fmt::format("cannot make the certificate extension {}: {}", value, openssl_errors()));
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

void sign(X509* cert, EVP_PKEY* key) {
  if (X509_sign(cert, key, EVP_sha256()) == 0)
    throw Error(fmt::format("cannot sign the certificate: {}", openssl_errors()));
}

void write_key_and_certificate(const std::string& cert_file, const std::string& key_file, EVP_PKEY* key, X509* cert) {
  std::string key_pem = pem_of([&](BIO* b) {
    return PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
  });
  std::string cert_pem = pem_of([&](BIO* b) { return PEM_write_bio_X509(b, cert); });
  write_private_file(key_file, key_pem);
  write_private_file(cert_file, cert_pem);  // not secret, but nobody else needs to write it
}

X509Ptr read_certificate_file(const std::string& file, const std::string& what) {
  BioPtr bio(BIO_new_file(file.c_str(), "r"));
  if (!bio) throw Error(fmt::format("cannot read the {} {}", what, file));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) throw Error(fmt::format("the {} {} holds no PEM certificate", what, file));
  return cert;
}

X509Ptr parse_certificate(const std::string& pem, const std::string& what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert) throw Error(fmt::format("{} is not a PEM certificate", what));
  return cert;
}

// The CA's certificate and key, checked to belong together.
std::pair<X509Ptr, PkeyPtr> load_ca(const std::string& ca_cert_file, const std::string& ca_key_file) {
  X509Ptr ca = read_certificate_file(ca_cert_file, "CA certificate");
  BioPtr bio(BIO_new_file(ca_key_file.c_str(), "r"));
  PkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) throw Error(fmt::format("cannot read the CA key {} ({})", ca_key_file, openssl_errors()));
  if (X509_check_private_key(ca.get(), key.get()) != 1)
    throw Error(fmt::format("the CA key {} does not belong to the CA certificate {}", ca_key_file, ca_cert_file));
  return {std::move(ca), std::move(key)};
}

}  // namespace

void make_self_signed_certificate(const std::string& cert_file, const std::string& key_file,
                                  const std::vector<std::string>& names) {
  ERR_clear_error();
  std::string san, cn;
  std::vector<std::string> seen;
  for (const auto& n : names) {
    std::string entry;
    if (is_ip(n)) entry = "IP:" + n;
    else if (is_dns_name(n)) entry = "DNS:" + n;
    else continue;  // not a name a client can ask for (a URL, a wildcard address)
    if (std::find(seen.begin(), seen.end(), entry) != seen.end()) continue;
    seen.push_back(entry);
    if (cn.empty()) cn = n;
    san += (san.empty() ? "" : ",") + entry;
  }
  if (cn.empty()) throw UsageError("a certificate needs at least one host name or IP address");
  PkeyPtr key = new_ec_key();
  X509Ptr cert = new_certificate(key.get(), cn, 10L * 365);  // pinned, not renewed by a CA
  X509* x = cert.get();
  X509_set_issuer_name(x, X509_get_subject_name(x));
  add_ext(x, x, NID_basic_constraints, "critical,CA:FALSE");
  add_ext(x, x, NID_key_usage, "critical,digitalSignature");
  add_ext(x, x, NID_ext_key_usage, "serverAuth");
  add_ext(x, x, NID_subject_key_identifier, "hash");
  add_ext(x, x, NID_subject_alt_name, san);
  sign(x, key.get());
  write_key_and_certificate(cert_file, key_file, key.get(), x);
}

void make_ca_certificate(const std::string& cert_file, const std::string& key_file, const std::string& common_name) {
  ERR_clear_error();
  PkeyPtr key = new_ec_key();
  X509Ptr cert = new_certificate(key.get(), common_name, 20L * 365);
  X509* x = cert.get();
  X509_set_issuer_name(x, X509_get_subject_name(x));
  add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(x, x, NID_subject_key_identifier, "hash");
  sign(x, key.get());
  write_key_and_certificate(cert_file, key_file, key.get(), x);
}

std::string make_key_and_csr(const std::string& key_file, const std::string& common_name) {
  ERR_clear_error();
  PkeyPtr key = new_ec_key();
  ReqPtr req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  X509_NAME* subject = X509_REQ_get_subject_name(req.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                             -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key.get());
  if (X509_REQ_sign(req.get(), key.get(), EVP_sha256()) == 0)
    throw Error(fmt::format("cannot sign the certificate request: {}", openssl_errors()));
  std::string csr = pem_of([&](BIO* b) { return PEM_write_bio_X509_REQ(b, req.get()); });
  write_private_file(key_file, pem_of([&](BIO* b) {
                       return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
                     }));
  return csr;
}

std::string sign_client_certificate(const std::string& ca_cert_file, const std::string& ca_key_file,
                                    const std::string& csr_pem, const std::string& common_name,
                                    const std::string& uri_san) {
  ERR_clear_error();
  BioPtr bio(BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size())));
  ReqPtr req(bio ? PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!req) throw UsageError("the certificate request is not a PEM CERTIFICATE REQUEST");
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (!pub || X509_REQ_verify(req.get(), pub) != 1)
    throw UsageError("the certificate request's signature does not verify: it was not made with its key");
  int id = EVP_PKEY_get_base_id(pub), bits = EVP_PKEY_get_bits(pub);
  if (!((id == EVP_PKEY_EC && bits >= 256) || (id == EVP_PKEY_RSA && bits >= 2048)))
    throw UsageError(fmt::format("the certificate request's key ({} bits) is not ECDSA of 256 bits or more nor RSA "
                                 "of 2048 bits or more",
                                 bits));
  auto [ca, ca_key] = load_ca(ca_cert_file, ca_key_file);
  // What the request asks for (its subject, its extensions) is ignored: the name is ours.
  X509Ptr cert = new_certificate(pub, common_name, 10L * 365);
  X509* x = cert.get();
  X509_set_issuer_name(x, X509_get_subject_name(ca.get()));
  add_ext(x, ca.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_ext(x, ca.get(), NID_key_usage, "critical,digitalSignature");
  add_ext(x, ca.get(), NID_ext_key_usage, "clientAuth");
  add_ext(x, ca.get(), NID_subject_key_identifier, "hash");
  add_ext(x, ca.get(), NID_authority_key_identifier, "keyid:always");
  if (!uri_san.empty()) add_ext(x, ca.get(), NID_subject_alt_name, "URI:" + uri_san);
  sign(x, ca_key.get());
  return pem_of([&](BIO* b) { return PEM_write_bio_X509(b, x); });
}

std::string certificate_serial(const std::string& cert_pem) {
  X509Ptr cert = parse_certificate(cert_pem, "the certificate");
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr);
  char* hex = bn ? BN_bn2hex(bn) : nullptr;
  BN_free(bn);
  if (!hex) throw Error("cannot read a certificate's serial number");
  std::string out(hex);
  OPENSSL_free(hex);
  return out;
}

std::string make_crl(const std::string& ca_cert_file, const std::string& ca_key_file,
                     const std::vector<std::string>& revoked_cert_pems) {
  ERR_clear_error();
  auto [ca, ca_key] = load_ca(ca_cert_file, ca_key_file);
  CrlPtr crl(X509_CRL_new());
  X509_CRL_set_version(crl.get(), 1);  // v2
  X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca.get()));
  using TimePtr = std::unique_ptr<ASN1_TIME, Deleter<ASN1_TIME, ASN1_TIME_free>>;
  TimePtr last(X509_gmtime_adj(nullptr, -3600)), next(X509_gmtime_adj(nullptr, 20L * 365 * 24 * 3600));
  // nextUpdate far away: GnuTLS refuses every certificate of a CA whose CRL is past its
  // nextUpdate, and this CRL is replaced whenever a VMA's access changes, not on a clock.
  X509_CRL_set1_lastUpdate(crl.get(), last.get());
  X509_CRL_set1_nextUpdate(crl.get(), next.get());
  for (const auto& pem : revoked_cert_pems) {
    X509Ptr cert = parse_certificate(pem, "a revoked certificate");
    X509_REVOKED* r = X509_REVOKED_new();
    X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(cert.get()));
    X509_REVOKED_set_revocationDate(r, last.get());
    X509_CRL_add0_revoked(crl.get(), r);
  }
  X509_CRL_sort(crl.get());
  if (X509_CRL_sign(crl.get(), ca_key.get(), EVP_sha256()) == 0)
    throw Error(fmt::format("cannot sign the certificate revocation list: {}", openssl_errors()));
  return pem_of([&](BIO* b) { return PEM_write_bio_X509_CRL(b, crl.get()); });
}

void pin_server_certificate(SSL_CTX* ctx, const std::string& fingerprint) {
  if (!ctx) throw Error("pin_server_certificate: no TLS context (is the URL https://?)");
  auto* pin = new std::string(fingerprint);
  SSL_CTX_set_ex_data(ctx, pin_index(), pin);  // freed with the context
  SSL_CTX_set_cert_verify_callback(ctx, verify_pin, pin);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}

bool is_loopback_host(const std::string& host) {
  std::string h = host;
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

}  // namespace mk::tls

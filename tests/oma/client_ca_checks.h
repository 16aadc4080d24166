// Test support for the OMA's NBD client CA (NbdClientCa, issue 18): a data directory as
// an OMA from before the shared CA left it, and whether a certificate was signed by a
// given CA. Used by the single-database tests (nbd_client_ca_test.cpp) and the Galera
// race (galera_nbd_ca_test.cpp).
//
// Header-only test support. Thread-safe (each call works on its own files and objects).
#pragma once

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <filesystem>
#include <string>

#include "common/error.h"
#include "common/files.h"
#include "common/tls.h"

namespace mk::oma::test {

inline X509* read_certificate(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (!cert) throw Error("cannot read a certificate");
  return cert;
}

// Whether the PEM certificate's signature verifies with the PEM CA certificate's key.
inline bool signed_by(const std::string& cert_pem, const std::string& ca_pem) {
  X509 *cert = read_certificate(cert_pem), *ca = read_certificate(ca_pem);
  bool ok = X509_verify(cert, X509_get0_pubkey(ca)) == 1;
  X509_free(cert);
  X509_free(ca);
  return ok;
}

// A data directory as an OMA from before the shared CA left it: its own CA and one
// certificate it issued to `vma_id` (STATE/issued/<id>.pem). Returns that certificate.
// The VMA's key is written beside STATE (STATE/../<vma_id>-key.pem).
inline std::string make_own_ca_state(const std::string& state, const std::string& vma_id) {
  std::filesystem::create_directories(state + "/client-ca");
  std::filesystem::create_directories(state + "/issued");
  tls::make_ca_certificate(state + "/client-ca/ca-cert.pem", state + "/client-ca/ca-key.pem",
                           "MigrateKit OMA NBD client CA");
  std::string csr = tls::make_key_and_csr(state + "/../" + vma_id + "-key.pem", vma_id);
  std::string cert = tls::sign_client_certificate(state + "/client-ca/ca-cert.pem", state + "/client-ca/ca-key.pem",
                                                  csr, vma_id, "urn:uuid:" + vma_id);
  write_private_file(state + "/issued/" + vma_id + ".pem", cert);
  return cert;
}

}  // namespace mk::oma::test

// The serial numbers a PEM certificate revocation list names (uppercase hex, as
// tls::certificate_serial writes them), for the tests of the OMA's NBD client CA.
//
// Header-only test support. Thread-safe.
#pragma once

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <set>
#include <string>

#include "common/error.h"
#include "support/files.h"

namespace mk::oma::test {

inline std::set<std::string> revoked_serials(const std::string& crl_file) {
  std::string pem = mk::test::read_file(crl_file);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509_CRL* crl = PEM_read_bio_X509_CRL(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (!crl) throw Error("cannot read the revocation list " + crl_file);
  std::set<std::string> out;
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl);
  for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
    BIGNUM* bn = ASN1_INTEGER_to_BN(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i)), nullptr);
    char* hex = BN_bn2hex(bn);
    out.insert(hex);
    OPENSSL_free(hex);
    BN_free(bn);
  }
  X509_CRL_free(crl);
  return out;
}

}  // namespace mk::oma::test

// The NBD client certificates of common/tls: a private CA, a key with its request, the
// certificate signed from the request, and a revocation list, each checked with the
// openssl command (an independent verifier), and the requests the signer refuses.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "common/error.h"
#include "common/subprocess.h"
#include "common/tls.h"
#include "unit_temp_dir.h"

namespace mk::tls {
namespace {

// `openssl verify` of `cert` against `ca` (and, if given, the CRL with -crl_check).
bool openssl_verifies(const std::string& ca, const std::string& cert, const std::string& crl = "") {
  std::vector<std::string> argv = {"openssl", "verify", "-purpose", "sslclient", "-CAfile", ca};
  if (!crl.empty()) argv.insert(argv.end(), {"-crl_check", "-CRLfile", crl});
  argv.push_back(cert);
  std::string out;
  return run_capture(argv, out) == 0;
}

void write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

TEST(ClientCertificates, ASignedRequestVerifiesUntilItsCertificateIsListed) {
  unit::TempDir dir;
  std::string ca = dir.file("ca-cert.pem"), ca_key = dir.file("ca-key.pem");
  make_ca_certificate(ca, ca_key, "test client CA");
  struct stat st {};
  ASSERT_EQ(::stat(ca_key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  std::string csr = make_key_and_csr(dir.file("client-key.pem"), "vma-site-a");
  ASSERT_EQ(::stat(dir.file("client-key.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string id = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d";
  std::string cert = sign_client_certificate(ca, ca_key, csr, id, "urn:uuid:" + id);
  write(dir.file("client-cert.pem"), cert);
  EXPECT_TRUE(openssl_verifies(ca, dir.file("client-cert.pem")));
  // The name is the signer's, not the request's.
  std::string out;
  ASSERT_EQ(run_capture({"openssl", "x509", "-in", dir.file("client-cert.pem"), "-noout", "-subject", "-ext",
                         "subjectAltName"},
                        out),
            0);
  EXPECT_NE(out.find("CN = " + id), std::string::npos) << out;
  EXPECT_EQ(out.find("vma-site-a"), std::string::npos) << out;
  EXPECT_NE(out.find("URI:urn:uuid:" + id), std::string::npos) << out;

  // An empty list leaves it valid; a list naming it revokes it, and only it.
  write(dir.file("empty.crl"), make_crl(ca, ca_key, {}));
  EXPECT_TRUE(openssl_verifies(ca, dir.file("client-cert.pem"), dir.file("empty.crl")));
  std::string other = sign_client_certificate(ca, ca_key, make_key_and_csr(dir.file("other-key.pem"), "b"), "b", "");
  write(dir.file("other-cert.pem"), other);
  write(dir.file("revoked.crl"), make_crl(ca, ca_key, {cert}));
  EXPECT_FALSE(openssl_verifies(ca, dir.file("client-cert.pem"), dir.file("revoked.crl")));
  EXPECT_TRUE(openssl_verifies(ca, dir.file("other-cert.pem"), dir.file("revoked.crl")));
  EXPECT_NE(certificate_serial(cert), certificate_serial(other));
}

TEST(ClientCertificates, RequestsThatAreNotOnesOrWeakAreRefused) {
  unit::TempDir dir;
  std::string ca = dir.file("ca-cert.pem"), ca_key = dir.file("ca-key.pem");
  make_ca_certificate(ca, ca_key, "test client CA");
  EXPECT_THROW(sign_client_certificate(ca, ca_key, "not a request", "x", ""), UsageError);
  // A request changed in transit (a byte of its subject): it no longer verifies, or no
  // longer parses; refused either way.
  std::string csr = make_key_and_csr(dir.file("k.pem"), "vma-aaaa");
  std::string out;
  std::string der_tampered = csr;
  size_t body = der_tampered.find('\n') + 40;  // inside the base64 of the subject
  der_tampered[body] = der_tampered[body] == 'A' ? 'B' : 'A';
  EXPECT_THROW(sign_client_certificate(ca, ca_key, der_tampered, "x", ""), UsageError);
  // RSA 1024 is refused.
  ASSERT_EQ(run_capture({"openssl", "req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout", dir.file("weak.key"),
                         "-subj", "/CN=weak", "-out", dir.file("weak.csr")},
                        out),
            0);
  std::string weak = unit::read_all(dir.file("weak.csr"));
  EXPECT_THROW(sign_client_certificate(ca, ca_key, weak, "x", ""), UsageError);
  // A CA key that is not the CA certificate's is an error naming the file.
  make_ca_certificate(dir.file("ca2.pem"), dir.file("ca2-key.pem"), "another CA");
  try {
    sign_client_certificate(ca, dir.file("ca2-key.pem"), csr, "x", "");
    ADD_FAILURE() << "signed with a key that is not the CA's";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ca2-key.pem"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mk::tls

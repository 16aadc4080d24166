// Pairing bundle and enrolment messages: round trips, every field checked, the TLS
// fields agreeing with nbd_tls, and the ed25519 key rule.
#include "protocol/enrolment.h"

#include <gtest/gtest.h>

#include "message_checks.h"

namespace mk::protocol {
namespace {

using nlohmann::json;
using test::expect_every_field_checked;
using test::refused_field;

const std::string kKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv3i1Xg0cO2zV9yv6mJ0d8m1Q3m6p5K1n2Y3r4s5t6u";

const std::string kFingerprint =
    "3A:5F:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD";

PairingBundle bundle(NbdTls tls) {
  PairingBundle b;
  b.oma_api_url = "https://oma.example:8082";
  b.oma_api_fingerprint = kFingerprint;
  b.ssh_host = "oma.example";
  b.ssh_port = 443;
  b.ssh_user = "migratekit";
  b.ssh_host_key = kKey + " root@oma";
  b.nbd_host = "10.0.0.5";
  b.nbd_port = 10809;
  b.nbd_tls = tls;
  if (tls == NbdTls::Psk) {
    b.nbd_psk_identity = "vma-0123456789abcdef";
    b.nbd_psk_key = std::string(64, 'a');
  } else {
    b.nbd_ca_cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  }
  b.vma_api_token = "mko_" + std::string(64, 'b');
  b.pairing_code = "mkp_" + std::string(64, 'c');
  b.expires_at = 1700000000000;
  return b;
}

template <typename T>
test::Decoder enrolment_decoder() {
  return [](const json& j) { decode<T>(j); };
}

TEST(Enrolment, BundlesRoundTripWithEitherTlsMode) {
  for (NbdTls tls : {NbdTls::Psk, NbdTls::X509}) {
    json j = encode(bundle(tls));
    EXPECT_EQ(j["protocol_version"], kVersion);
    PairingBundle b = decode<PairingBundle>(j);
    EXPECT_EQ(encode(b), j);
    EXPECT_EQ(b.nbd_tls, tls);
    expect_every_field_checked(enrolment_decoder<PairingBundle>(), j);
  }
}

TEST(Enrolment, TheTlsFieldsMustAgreeWithTheMode) {
  json psk = encode(bundle(NbdTls::Psk));
  json j = psk;
  j["nbd_psk_key"] = nullptr;
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "nbd_psk_key");
  j = psk;
  j["nbd_ca_cert"] = "-----BEGIN CERTIFICATE-----\nx\n";
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "nbd_ca_cert");
  j = encode(bundle(NbdTls::X509));
  j["nbd_ca_cert"] = nullptr;
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "nbd_ca_cert");
  j = encode(bundle(NbdTls::X509));
  j["nbd_psk_identity"] = "vma-x";
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "nbd_psk_identity");
  j = psk;
  j["nbd_psk_identity"] = "vma:x";
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "nbd_psk_identity");
  j = psk;
  j["ssh_host_key"] = "not a key";
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "ssh_host_key");
  j = psk;
  j["oma_api_url"] = "ftp://oma";
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "oma_api_url");
  j = psk;
  j["ssh_user"] = "root;reboot";
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "ssh_user");
  // The OMA's HTTPS certificate pin: a SHA-256 fingerprint, and only for an https:// URL.
  j = psk;
  j["oma_api_fingerprint"] = "3a5f0011";
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "oma_api_fingerprint");
  j = psk;
  j["oma_api_url"] = "http://oma.example:8082";
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "oma_api_fingerprint");
  j["oma_api_fingerprint"] = nullptr;  // plain HTTP: nothing to pin
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "");
  // Only the CA certificate may span lines.
  j = psk;
  j["vma_api_token"] = "mko_abc\nrestrict";
  EXPECT_EQ(refused_field(enrolment_decoder<PairingBundle>(), j), "vma_api_token");
}

TEST(Enrolment, EnrolRequestAndReplyRoundTripAndCheckEveryField) {
  EnrolRequest r{kVersion, "site-a", "vc-a.example", kKey + " vma-site-a"};
  json j = encode(r);
  EXPECT_EQ(decode<EnrolRequest>(j).ssh_public_key, r.ssh_public_key);
  expect_every_field_checked(enrolment_decoder<EnrolRequest>(), j, {"protocol_version", "nbd_client_csr"});
  // A VMA older than versioned protocols sends none: decoded, then refused by the version check.
  j.erase("protocol_version");
  EXPECT_FALSE(decode<EnrolRequest>(j).protocol_version);
  EXPECT_EQ(refused_field(enrolment_decoder<EnrolRequest>(),
                          json{{"protocol_version", 1}, {"name", "a/b"}, {"vcenter", "v"}, {"ssh_public_key", kKey}}),
            "name");
  EnrolReply reply{kVersion,
                   "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d",
                   "site-a",
                   "vc-a.example",
                   "pending",
                   9081,
                   "an operator approves it"};
  EXPECT_EQ(encode(decode<EnrolReply>(encode(reply))), encode(reply));
  expect_every_field_checked(enrolment_decoder<EnrolReply>(), encode(reply));
}

// X.509 OMAs: the VMA sends a certificate request for its NBD key, the OMA answers with
// the certificate; both are PEM text of the right kind, null with PSK.
TEST(Enrolment, X509EnrolmentCarriesTheVmasCertificateRequestAndItsCertificate) {
  const std::string csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
  const std::string cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  EnrolRequest r{kVersion, "site-a", "vc-a.example", kKey, csr};
  json j = encode(r);
  EXPECT_EQ(decode<EnrolRequest>(j).nbd_client_csr, csr);
  expect_every_field_checked(enrolment_decoder<EnrolRequest>(), j, {"protocol_version", "nbd_client_csr"});
  j.erase("nbd_client_csr");  // absent (a PSK VMA may leave it out): none
  EXPECT_FALSE(decode<EnrolRequest>(j).nbd_client_csr);
  j["nbd_client_csr"] = cert;  // a certificate is not a request
  EXPECT_EQ(refused_field(enrolment_decoder<EnrolRequest>(), j), "nbd_client_csr");

  EnrolReply reply{kVersion, "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d", "site-a", "vc-a.example", "pending", 9081,
                   "an operator approves it", cert};
  json rj = encode(reply);
  EXPECT_EQ(decode<EnrolReply>(rj).nbd_client_cert, cert);
  expect_every_field_checked(enrolment_decoder<EnrolReply>(), rj);
  rj["nbd_client_cert"] = csr;
  EXPECT_EQ(refused_field(enrolment_decoder<EnrolReply>(), rj), "nbd_client_cert");
}

TEST(Enrolment, OnlyEd25519KeysWithoutOptionsAreTaken) {
  EXPECT_EQ(normalize_ed25519_public_key(kKey + " vma-a"), kKey);
  for (std::string bad :
       {std::string("ssh-rsa AAAAB3NzaC1yc2E= evil"), kKey + "\nrestrict", "command=\"/bin/sh\" " + kKey,
        kKey.substr(0, 50), std::string("ssh-ed25519 ") + std::string(68, '!')}) {
    try {
      normalize_ed25519_public_key(bad, "ssh_public_key");
      ADD_FAILURE() << bad;
    } catch (const schema::FieldError& e) {
      EXPECT_EQ(e.field(), "ssh_public_key");
    }
  }
}

}  // namespace
}  // namespace mk::protocol

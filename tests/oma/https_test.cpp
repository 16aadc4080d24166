// HTTPS for the OMA's API and GUI (issue 13, finding 4), against the real `oma`, `vma`
// and `migratekit` binaries: HTTPS by default on a listener that is not loopback-only,
// the OMA's own certificate (made once, kept), its fingerprint in pairing bundles,
// `vma pair` pinning it (a wrong pin enrols nothing), the CLI with --fingerprint or
// --ca-file, the GUI over HTTPS, plain HTTP refused off loopback without
// --insecure-http, a silent TLS client closed after the handshake timeout.
//
// Every connection goes to 127.0.0.1; listeners on 0.0.0.0 are reached there.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/error.h"
#include "common/subprocess.h"
#include "common/tls.h"
#include "oma/https.h"
#include "support/files.h"
#include "support/migratekit_runner.h"
#include "support/temp_dir.h"
#include "support/net.h"

namespace mk::oma {
namespace {

using nlohmann::json;

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The real oma in `data`, with `args` after the data directory; waits for api.port.
struct OmaBin {
  OmaBin(const std::string& data, const std::string& log, std::vector<std::string> args) {
    std::filesystem::remove(data + "/api.port");
    std::filesystem::remove(data + "/gui.port");
    std::vector<std::string> argv{OMA_BIN, "--data-dir", data, "--api-port", "0", "--nbd-listen", "127.0.0.1",
                                  "--nbd-port", "0", "--vma-url", "http://127.0.0.1:9"};
    argv.insert(argv.end(), args.begin(), args.end());
    SpawnOptions o;
    o.stdout_path = o.stderr_path = log;
    process = Subprocess::spawn(argv, o);
    for (int i = 0; i < 1500 && !std::filesystem::exists(data + "/api.port"); ++i) {
      if (!process.running()) throw Error("oma exited at start:\n" + mk::test::log_tail(log));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    auto gui = std::find(args.begin(), args.end(), "--gui-port");
    if (gui != args.end() && gui + 1 != args.end() && gui[1] != "-1") {  // written after api.port
      for (int i = 0; i < 1500 && !std::filesystem::exists(data + "/gui.port"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      gui_port = std::stoi(first_line(data + "/gui.port"));
    }
    port = std::stoi(first_line(data + "/api.port"));
    token = first_line(data + "/admin.token");
  }
  Subprocess process;
  int port = 0, gui_port = 0;
  std::string token;
};

// What a TLS client sees of the server on 127.0.0.1:port.
struct TlsView {
  bool connected = false;
  std::string fingerprint, version, cipher;
  std::vector<std::string> ip_names;  // subjectAltName iPAddress entries
};

int connect_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

TlsView look_at_tls(int port) {
  TlsView v;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  int fd = connect_loopback(port);
  SSL_set_fd(ssl, fd);
  if (fd >= 0 && SSL_connect(ssl) == 1) {
    v.connected = true;
    X509* cert = SSL_get1_peer_certificate(ssl);
    v.fingerprint = tls::sha256_fingerprint(cert);
    v.version = SSL_get_version(ssl);
    v.cipher = SSL_get_cipher_name(ssl);
    auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); ++i) {
      GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
      if (n->type != GEN_IPADD) continue;
      char buf[INET6_ADDRSTRLEN] = "";
      int len = ASN1_STRING_length(n->d.iPAddress);
      inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(n->d.iPAddress), buf, sizeof buf);
      v.ip_names.emplace_back(buf);
    }
    GENERAL_NAMES_free(names);
    X509_free(cert);
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  if (fd >= 0) ::close(fd);
  return v;
}

// An HTTPS client that pins `fingerprint`.
std::unique_ptr<httplib::SSLClient> pinned_client(int port, const std::string& fingerprint) {
  auto c = std::make_unique<httplib::SSLClient>("127.0.0.1", port);
  tls::apply_client_trust(*c, {fingerprint, ""});
  c->set_connection_timeout(std::chrono::seconds(10));
  c->set_read_timeout(std::chrono::seconds(30));
  return c;
}

// Everything the server answers a plain HTTP request (until it closes).
std::string plain_http_exchange(int port, const std::string& request) {
  int fd = connect_loopback(port);
  if (fd < 0) return "";
  (void)!::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) got.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return got;
}


struct HttpsFixture : ::testing::Test {
  mk::test::TempDir dir{"mk-oma-https"};
  std::string data = dir.file("data"), log = dir.file("oma.log");
  std::string host_key;

  void SetUp() override {
    std::string out;
    ASSERT_EQ(run_capture({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir.file("host_key")}, out), 0);
    host_key = dir.file("host_key.pub");
    std::filesystem::create_directories(dir.file("dist"));
    std::ofstream(dir.file("dist/index.html")) << "<!doctype html><title>gui over https</title>";
  }
  // An OMA whose API and GUI listen on 127.0.0.1 with HTTPS forced on.
  std::unique_ptr<OmaBin> start_https(std::vector<std::string> more = {}) {
    std::vector<std::string> args{"--api-listen", "127.0.0.1", "--gui-listen", "127.0.0.1", "--gui-port", "0",
                                  "--https", "on", "--ssh-host-key-file", host_key, "--gui-dir", dir.file("dist")};
    args.insert(args.end(), more.begin(), more.end());
    return std::make_unique<OmaBin>(data, log, args);
  }
  std::string cert_fingerprint() { return tls::certificate_file_fingerprint(data + "/https/cert.pem"); }

  json issue_bundle(OmaBin& oma) {
    auto c = pinned_client(oma.port, cert_fingerprint());
    auto r = c->Post("/api/v1/vmas/pairing-bundles", {{"Authorization", "Bearer " + oma.token}}, "{}",
                     "application/json");
    if (!r) throw Error("pairing bundle: no answer: " + httplib::to_string(r.error()));
    if (r->status != 201 && r->status != 200) throw Error("pairing bundle: HTTP " + std::to_string(r->status) + " " + r->body);
    return json::parse(r->body);
  }
  size_t vma_count(OmaBin& oma) {
    auto r = pinned_client(oma.port, cert_fingerprint())->Get("/api/v1/vmas", {{"Authorization", "Bearer " + oma.token}});
    if (!r || r->status != 200) throw Error("GET /api/v1/vmas failed");
    return json::parse(r->body)["vmas"].size();
  }
  // `vma pair` with `bundle`; exit code, stderr in *err.
  int pair(const json& bundle, const std::string& name, std::string* err) {
    std::string file = dir.file("bundle-" + name + ".json");
    std::ofstream(file) << bundle.dump();
    std::string out;
    int rc = run_capture({VMA_BIN, "pair", "--bundle", file, "--state-dir", dir.file("vma-" + name), "--name", name,
                          "--vcenter", "vc.example"},
                         out, dir.file("pair.err"));
    *err = mk::test::read_file_or_empty(dir.file("pair.err"));
    return rc;
  }
};

TEST_F(HttpsFixture, ListenerNotOnLoopbackSpeaksHttpsByDefaultWithItsOwnKeptCertificate) {
  // No --https option, the API on 0.0.0.0 (the default listen address), reached at 127.0.0.1.
  std::string fp;
  {
    OmaBin oma(data, log, {"--api-listen", "0.0.0.0", "--gui-port", "-1", "--ssh-host-key-file", host_key});
    TlsView v = look_at_tls(oma.port);
    ASSERT_TRUE(v.connected) << mk::test::log_tail(log);
    fp = cert_fingerprint();
    EXPECT_EQ(v.fingerprint, fp);
    EXPECT_TRUE(v.version == "TLSv1.3" || v.version == "TLSv1.2") << v.version;
    EXPECT_NE(v.cipher.find("AES"), std::string::npos) << v.cipher;  // AES-GCM preferred
    EXPECT_NE(v.cipher.find("GCM"), std::string::npos) << v.cipher;
    EXPECT_NE(std::find(v.ip_names.begin(), v.ip_names.end(), "127.0.0.1"), v.ip_names.end());
    EXPECT_EQ(mk::test::file_mode(data + "/https/key.pem"), 0600);
    EXPECT_NE(mk::test::read_file_or_empty(log).find(fp), std::string::npos) << "the log names the fingerprint";

    auto r = pinned_client(oma.port, fp)->Get("/health");
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 200);
    // Plain HTTP to the HTTPS port: a plain 400 that says so, then the connection ends.
    std::string plain = plain_http_exchange(oma.port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(plain.rfind("HTTP/1.1 400", 0), 0u) << plain;
    EXPECT_NE(plain.find("https://"), std::string::npos) << plain;
  }
  // The certificate is kept across restarts: pinned VMAs and CLIs keep working.
  OmaBin again(data, log, {"--api-listen", "0.0.0.0", "--gui-port", "-1", "--ssh-host-key-file", host_key});
  EXPECT_EQ(look_at_tls(again.port).fingerprint, fp);
}

TEST_F(HttpsFixture, PlainHttpOffLoopbackIsRefusedWithoutInsecureHttp) {
  std::string out;
  int rc = run_capture({OMA_BIN, "--data-dir", data, "--api-listen", "0.0.0.0", "--api-port", "0", "--gui-port", "-1",
                        "--nbd-listen", "127.0.0.1", "--nbd-port", "0", "--https", "off"},
                       out, dir.file("refused.err"));
  std::string err = mk::test::read_file_or_empty(dir.file("refused.err"));
  EXPECT_EQ(rc, 2) << err;
  EXPECT_NE(err.find("--insecure-http"), std::string::npos) << err;
  EXPECT_NE(err.find("0.0.0.0"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(data + "/api.port"));
  // The GUI's listener is held to the same rule.
  rc = run_capture({OMA_BIN, "--data-dir", data, "--api-listen", "127.0.0.1", "--api-port", "0", "--gui-listen",
                    "0.0.0.0", "--gui-port", "0", "--nbd-listen", "127.0.0.1", "--nbd-port", "0", "--https", "off"},
                   out, dir.file("refused.err"));
  err = mk::test::read_file_or_empty(dir.file("refused.err"));
  EXPECT_EQ(rc, 2) << err;
  EXPECT_NE(err.find("GUI"), std::string::npos) << err;
  // Plain HTTP on loopback stays allowed (local scripts and tests).
  OmaBin local(data, log, {"--api-listen", "127.0.0.1", "--gui-port", "-1", "--https", "off"});
  std::string plain = plain_http_exchange(local.port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(plain.rfind("HTTP/1.1 200", 0), 0u) << plain;
}

TEST_F(HttpsFixture, PairingBundleCarriesTheFingerprintAndVmaPairPinsIt) {
  auto oma = start_https();
  json bundle = issue_bundle(*oma);
  EXPECT_EQ(bundle["oma_api_url"], "https://127.0.0.1:" + std::to_string(oma->port));
  EXPECT_EQ(bundle["oma_api_fingerprint"], cert_fingerprint());

  std::string err;
  ASSERT_EQ(pair(bundle, "site-a", &err), 0) << err << mk::test::log_tail(log);
  EXPECT_EQ(vma_count(*oma), 1u);
  json state = json::parse(mk::test::read_file_or_empty(dir.file("vma-site-a/pairing.json")));
  EXPECT_EQ(state["oma_api_fingerprint"], cert_fingerprint());
}

TEST_F(HttpsFixture, VmaWithAWrongPinRefusesToEnrolAndSpendsNoCode) {
  auto oma = start_https();
  json bundle = issue_bundle(*oma);
  json wrong = bundle;
  std::string fp = bundle["oma_api_fingerprint"];
  fp[0] = fp[0] == 'A' ? 'B' : 'A';  // another certificate: what a man in the middle would present
  wrong["oma_api_fingerprint"] = fp;
  std::string err;
  EXPECT_EQ(pair(wrong, "site-b", &err), 1) << err;
  EXPECT_NE(err.find("pins"), std::string::npos) << err;
  EXPECT_EQ(vma_count(*oma), 0u);
  // The code was not sent, so the genuine bundle still enrols.
  EXPECT_EQ(pair(bundle, "site-b", &err), 0) << err;
  EXPECT_EQ(vma_count(*oma), 1u);
}

TEST_F(HttpsFixture, CliWorksOverHttpsWithThePinOrTheCaFileAndRefusesAnUntrustedServer) {
  auto oma = start_https();
  std::string api = "https://127.0.0.1:" + std::to_string(oma->port);
  std::string token_file = data + "/admin.token";
  auto pinned = mk::test::run_migratekit({"vms", "--api", api, "--token-file", token_file, "--fingerprint",
                                          cert_fingerprint()});
  EXPECT_EQ(pinned.exit_code, 0) << pinned.err;
  EXPECT_NE(pinned.out.find("CURRENT JOB"), std::string::npos) << pinned.out;
  // The fingerprint as openssl prints it, lowercase without colons, is the same pin.
  std::string bare = cert_fingerprint();
  bare.erase(std::remove(bare.begin(), bare.end(), ':'), bare.end());
  std::transform(bare.begin(), bare.end(), bare.begin(), ::tolower);
  EXPECT_EQ(mk::test::run_migratekit({"vms", "--api", api, "--token-file", token_file, "--fingerprint", bare}).exit_code,
            0);
  auto ca = mk::test::run_migratekit({"vms", "--api", api, "--token-file", token_file, "--ca-file",
                                      data + "/https/cert.pem"});
  EXPECT_EQ(ca.exit_code, 0) << ca.err;

  std::string wrong = cert_fingerprint();
  wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
  auto refused = mk::test::run_migratekit({"vms", "--api", api, "--token-file", token_file, "--fingerprint", wrong});
  EXPECT_EQ(refused.exit_code, 1) << refused.err;
  EXPECT_NE(refused.err.find("--fingerprint"), std::string::npos) << refused.err;
  auto untrusted = mk::test::run_migratekit({"vms", "--api", api, "--token-file", token_file});
  EXPECT_EQ(untrusted.exit_code, 1) << untrusted.err;
  EXPECT_NE(untrusted.err.find("not trusted"), std::string::npos) << untrusted.err;
}

TEST_F(HttpsFixture, GuiIsServedOverHttpsWithTheSameApi) {
  auto oma = start_https();
  ASSERT_GT(oma->gui_port, 0);
  TlsView v = look_at_tls(oma->gui_port);
  ASSERT_TRUE(v.connected);
  EXPECT_EQ(v.fingerprint, cert_fingerprint());
  auto c = pinned_client(oma->gui_port, cert_fingerprint());
  auto page = c->Get("/");
  ASSERT_TRUE(page) << httplib::to_string(page.error());
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(page->body.find("gui over https"), std::string::npos) << page->body;
  auto vms = c->Get("/api/v1/vms", {{"Authorization", "Bearer " + oma->token}});
  ASSERT_TRUE(vms);
  EXPECT_EQ(vms->status, 200) << vms->body;
  EXPECT_EQ(c->Get("/api/v1/vms")->status, 401);
}

TEST_F(HttpsFixture, SilentTlsClientsHoldNoWorkerAndAreClosedAfterTheHandshakeTimeout) {
  auto oma = start_https({"--http-handshake-timeout-ms", "500"});
  // More silent connections than the OMA has workers (16): none holds one.
  std::vector<int> silent;
  for (int i = 0; i < 24; ++i) silent.push_back(connect_loopback(oma->port));
  auto r = pinned_client(oma->port, cert_fingerprint())->Get("/health");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  // Each is closed by the server once its handshake is overdue (recv sees the end).
  for (int fd : silent) {
    char b;
    EXPECT_EQ(::recv(fd, &b, 1, 0), 0);
    ::close(fd);
  }
}

// The CloudStack settings refuse an http:// API URL (the API key and every signed request
// would travel in clear) unless the OMA runs with --cloudstack-allow-http.
TEST_F(HttpsFixture, CloudStackSettingsRefuseHttpUnlessAllowed) {
  json settings = {{"api_url", "http://127.0.0.1:9/client/api"},
                   {"api_key", "key"},
                   {"secret_key", "secret"},
                   {"zone_id", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e"},
                   {"disk_offering_id", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2f"},
                   {"service_offering_id", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d30"},
                   {"template_id", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d31"},
                   {"oma_mac", "02:00:00:00:00:01"}};
  auto put = [&](OmaBin& oma) {
    httplib::Client c("127.0.0.1", oma.port);
    auto r = c.Put("/api/v1/settings/cloudstack", {{"Authorization", "Bearer " + oma.token}}, settings.dump(),
                   "application/json");
    if (!r) throw Error("PUT /api/v1/settings/cloudstack: no answer");
    return std::make_pair(r->status, json::parse(r->body, nullptr, false));
  };
  {
    OmaBin oma(data, log, {"--api-listen", "127.0.0.1", "--gui-port", "-1"});
    auto [status, body] = put(oma);
    EXPECT_EQ(status, 400) << body;
    EXPECT_EQ(body.value("field", ""), "api_url") << body;
    EXPECT_NE(body.value("error", "").find("--cloudstack-allow-http"), std::string::npos) << body;
  }
  OmaBin lab(data, log, {"--api-listen", "127.0.0.1", "--gui-port", "-1", "--cloudstack-allow-http"});
  EXPECT_EQ(put(lab).first, 200);
}

// The decision alone, for addresses a test cannot listen on.
TEST(HttpsDecision, AutoIsHttpsOffLoopbackPlainOnLoopbackAndOffNeedsInsecureHttpElsewhere) {
  mk::test::TempDir dir("mk-https-decision");
  HttpsOptions o;
  HttpsSetup s = prepare_https(o, dir.file("a"), "10.1.2.3", "127.0.0.1", {"oma.example"});
  EXPECT_TRUE(s.api);
  EXPECT_FALSE(s.gui);
  EXPECT_EQ(s.fingerprint, tls::certificate_file_fingerprint(dir.file("a/https/cert.pem")));
  EXPECT_FALSE(prepare_https(o, dir.file("b"), "127.0.0.1", "::1", {}).api);
  EXPECT_FALSE(std::filesystem::exists(dir.file("b/https/cert.pem")));  // none needed, none made
  o.mode = "off";
  EXPECT_THROW(prepare_https(o, dir.file("c"), "10.1.2.3", "", {}), UsageError);
  o.insecure_http = true;
  EXPECT_FALSE(prepare_https(o, dir.file("c"), "10.1.2.3", "", {}).api);
  o = {};
  o.cert_file = dir.file("a/https/cert.pem");
  EXPECT_THROW(prepare_https(o, dir.file("d"), "0.0.0.0", "", {}), UsageError);  // no key
  o.key_file = dir.file("a/https/key.pem");
  EXPECT_EQ(prepare_https(o, dir.file("d"), "0.0.0.0", "", {}).fingerprint, s.fingerprint);  // the operator's
}

}  // namespace
}  // namespace mk::oma

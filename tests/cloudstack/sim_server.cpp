#include "sim_server.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "common/error.h"
#include "common/files.h"

namespace mk::cloudstack::test {
namespace {

constexpr const char* kApiKey = "sim-api-key-Az09_-";
constexpr const char* kSecret = "sim-secret+/= with spaces";

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

size_t append(char* d, size_t s, size_t n, void* out) {
  static_cast<std::string*>(out)->append(d, s * n);
  return s * n;
}

}  // namespace

SimServer::SimServer(SimOptions options) {
  mk::write_private_file(dir() + "/secret", kSecret);
  std::filesystem::create_directories(by_id_dir());
  SpawnOptions spawn;
  spawn.stdout_path = dir() + "/sim.log";
  spawn.stderr_path = dir() + "/sim.log";
  std::vector<std::string> argv = {
      "python3", CLOUDSTACK_SIM_PY, "--port-file", dir() + "/port", "--state-dir",
      dir() + "/state", "--by-id-dir", by_id_dir(), "--api-key", kApiKey,
      "--secret-key-file", dir() + "/secret", "--oma-vm-id", oma_vm_id(), "--oma-mac",
      oma_mac(), "--job-delay", fmt::format("{}", options.job_delay_seconds),
      "--max-page-size", std::to_string(options.max_page_size)};
  for (const auto& api : options.deny_apis) {
    argv.push_back("--deny-api");
    argv.push_back(api);
  }
  if (!options.oma_account.empty()) {
    argv.push_back("--oma-account");
    argv.push_back(options.oma_account);
  }
  argv.insert(argv.end(), {"--max-data-volumes", std::to_string(options.max_data_volumes), "--custom-disk-max-gb",
                           std::to_string(options.custom_disk_max_gb), "--disk-bus", options.disk_bus});
  auto flag = [&](bool on, const char* name) {
    if (on) argv.push_back(name);
  };
  flag(options.kvm_snapshot_enabled, "--kvm-snapshot-enabled");
  flag(options.user_account, "--user-account");
  flag(options.allow_user_expunge, "--allow-user-expunge");
  flag(options.enforce_post_and_expires, "--enforce-post-and-expires");
  flag(options.oma_vm_snapshot, "--oma-vm-snapshot");
  for (int n = 2; n <= 1 + options.extra_oma_vms; ++n) {
    std::filesystem::create_directories(by_id_dir(n));
    argv.insert(argv.end(), {"--oma-vm", oma_vm_id(n) + "=" + by_id_dir(n)});
  }
  if (!options.oma_backup_offering.empty()) {
    argv.insert(argv.end(), {"--oma-backup-offering", options.oma_backup_offering});
  }
  if (options.tls) {
    // A self-signed certificate for 127.0.0.1; it is its own CA.
    std::string out;
    int rc = run_capture({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                          "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
                          dir() + "/key.pem", "-out", ca_file()},
                         out, dir() + "/openssl.log");
    if (rc != 0) {
      throw Error("openssl could not make a test certificate: " + read_file(dir() + "/openssl.log"));
    }
    argv.insert(argv.end(), {"--tls-cert", ca_file(), "--tls-key", dir() + "/key.pem"});
    tls_ = true;
  }
  process_ = Subprocess::spawn(argv, spawn);
  // Wait for the port file (written after bind); a dead process fails at once.
  for (int i = 0; i < 1500; ++i) {
    if (std::filesystem::exists(dir() + "/port")) {
      port_ = std::stoi(read_file(dir() + "/port"));
      return;
    }
    if (!process_.running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::string log = read_file(dir() + "/sim.log");
  process_.stop();
  throw Error("the CloudStack simulator did not start; its log:\n" + log);
}

SimServer::~SimServer() { process_.stop(); }  // before TempDir removes its files

std::string SimServer::api_url() const {
  return fmt::format("{}://127.0.0.1:{}/client/api", tls_ ? "https" : "http", port_);
}

Endpoint SimServer::endpoint() const { return Endpoint{api_url(), kApiKey, kSecret}; }

nlohmann::json SimServer::oma_settings() const {
  Endpoint e = endpoint();
  return {{"api_url", e.api_url},
          {"api_key", e.api_key},
          {"secret_key", e.secret_key},
          {"zone_id", seed::zone},
          {"disk_offering_id", seed::custom_disk_offering},
          {"service_offering_id", seed::custom_service_offering},
          {"template_id", seed::ready_template},
          {"test_network_id", seed::test_network},
          {"oma_mac", oma_mac()}};
}

std::string SimServer::oma_vm_id(int n) const {
  if (n == 1) return oma_vm_id();
  return fmt::format("0a000000-0000-4000-8000-0000000000{:02x}", 0x0a + n - 1);
}

std::string SimServer::by_id_dir(int n) const { return n == 1 ? by_id_dir() : dir_.file(fmt::format("by-id-{}", n)); }

VolumesConfig SimServer::volumes_config(const std::string& oma_id, int vm) const {
  VolumesConfig c;
  c.oma_id = oma_id;
  c.oma_vm_id = oma_vm_id(vm);
  c.zone_id = seed::zone;
  c.disk_offering_id = seed::custom_disk_offering;
  c.by_id_dir = by_id_dir(vm);
  c.device_timeout = std::chrono::seconds(10);
  return c;
}

ClientOptions SimServer::fast_client_options() {
  ClientOptions o;
  o.poll_initial = std::chrono::milliseconds(10);
  o.poll_max = std::chrono::milliseconds(50);
  o.job_timeout = std::chrono::seconds(20);
  o.http_timeout = std::chrono::seconds(20);
  o.allow_insecure_http = true;
  return o;
}

std::string SimServer::control(const std::string& path, const std::string& body) const {
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  std::string url = fmt::format("{}://127.0.0.1:{}{}", tls_ ? "https" : "http", port_, path);
  if (tls_) curl_easy_setopt(curl.get(), CURLOPT_CAINFO, ca_file().c_str());
  std::string out;
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  if (!body.empty()) curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &out);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT, 20L);
  long status = 0;
  if (curl_easy_perform(curl.get()) != CURLE_OK ||
      curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status) != CURLE_OK ||
      status != 200) {
    throw Error(fmt::format("simulator control {} failed (HTTP {}): {}", path, status, out));
  }
  return out;
}

void SimServer::fail(const nlohmann::json& rule) { control("/control/fail", rule.dump()); }
void SimServer::clear_failures() { control("/control/clear", "{}"); }
nlohmann::json SimServer::state() const {
  return nlohmann::json::parse(control("/control/state", ""));
}

}  // namespace mk::cloudstack::test

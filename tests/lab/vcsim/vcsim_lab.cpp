#include "lab/vcsim/vcsim_lab.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "support/net.h"

namespace mk::test {
namespace {

void write_secret(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw Error(fmt::format("cannot create {}", path));
  std::string line = text + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!ok) throw Error(fmt::format("cannot write {}", path));
}

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    throw Error("RAND_bytes failed");
  }
  std::string out;
  for (unsigned char c : raw) out += fmt::format("{:02x}", c);
  return out;
}

std::string cert_thumbprint(const std::string& pem_path) {
  FILE* f = std::fopen(pem_path.c_str(), "r");
  if (!f) throw Error(fmt::format("cannot read {}", pem_path));
  X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (!cert) throw Error(fmt::format("{} holds no certificate", pem_path));
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  X509_digest(cert, EVP_sha1(), md, &n);
  X509_free(cert);
  std::string out;
  for (unsigned i = 0; i < n; ++i) out += fmt::format("{}{:02X}", i ? ":" : "", md[i]);
  return out;
}

}  // namespace

bool VcsimInventory::is_default() const {
  VcsimInventory d;
  return clusters == d.clusters && hosts_per_cluster == d.hosts_per_cluster &&
         standalone_hosts == d.standalone_hosts && vms_per_pool == d.vms_per_pool && datastores == d.datastores;
}

std::vector<std::string> VcsimInventory::vm_paths() const {
  if (is_default()) return {"DC0/vm/DC0_H0_VM0", "DC0/vm/DC0_H0_VM1", "DC0/vm/DC0_C0_RP0_VM0", "DC0/vm/DC0_C0_RP0_VM1"};
  std::vector<std::string> out;
  out.reserve(vms());
  for (int i = 0; i < vms_per_pool; ++i) {
    for (int h = 0; h < standalone_hosts; ++h) out.push_back(fmt::format("DC0/vm/DC0_H{}_VM{}", h, i));
    for (int c = 0; c < clusters; ++c) out.push_back(fmt::format("DC0/vm/DC0_C{}_RP0_VM{}", c, i));
  }
  return out;
}

void VcsimLab::check(const VcsimInventory& i) {
  if (i.clusters < 0 || i.standalone_hosts < 0 || i.clusters + i.standalone_hosts < 1) {
    throw Error(fmt::format("vcsim lab: {} clusters and {} standalone hosts: it needs at least one of either",
                            i.clusters, i.standalone_hosts));
  }
  if (i.clusters > 0 && i.hosts_per_cluster < 1) throw Error("vcsim lab: a cluster needs at least one host");
  if (i.vms_per_pool < 0 || i.datastores < 1) {
    throw Error(fmt::format("vcsim lab: {} VMs per pool and {} datastores: needs >= 0 and >= 1", i.vms_per_pool,
                            i.datastores));
  }
}

VcsimLab::VcsimLab(const VcsimOptions& options) : dir_("mk-vcsim"), inventory_(options.inventory) {
  check(inventory_);
  password_ = random_hex(12);
  write_secret(password_file(), password_);
  write_secret(wrong_password_file(), "not-" + password_);
  std::string out;
  int rc = mk::run_capture({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir_.file("key.pem"),
                            "-out", dir_.file("cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                            "subjectAltName=IP:127.0.0.1"},
                           out, dir_.file("openssl.log"));
  if (rc != 0) throw Error("openssl could not make the lab certificate: " + log_tail(dir_.file("openssl.log")));
  thumbprint_ = cert_thumbprint(dir_.file("cert.pem"));
  std::filesystem::create_directory(dir_.file("ds"));
  std::filesystem::create_directory(snapshot_index());
  start_vcsim();
  start_shim(options);
}

VcsimLab::~VcsimLab() {
  shim_.stop();
  vcsim_.stop();
}

void VcsimLab::start_vcsim() {
  // free_tcp_port() can race with another test: retry with a new port if vcsim dies.
  for (int attempt = 0;; ++attempt) {
    vcsim_port_ = free_tcp_port();
    SpawnOptions so;
    so.stdout_path = so.stderr_path = dir_.file("vcsim.log");
    // vcsim makes its datastores under TMPDIR: keep them in the lab's directory.
    so.env["TMPDIR"] = dir_.file("ds");
    // The password is a throwaway made for this lab; vcsim takes it only as a flag.
    vcsim_ = Subprocess::spawn({VCSIM_BIN, "-l", fmt::format("127.0.0.1:{}", vcsim_port_), "-tlscert",
                                dir_.file("cert.pem"), "-tlskey", dir_.file("key.pem"), "-username", user_,
                                "-password", password_, "-E", "/dev/null",
                                // The inventory, always explicit (the defaults are vcsim's own).
                                "-cluster", std::to_string(inventory_.clusters), "-host",
                                std::to_string(inventory_.hosts_per_cluster), "-standalone-host",
                                std::to_string(inventory_.standalone_hosts), "-vm",
                                std::to_string(inventory_.vms_per_pool), "-ds", std::to_string(inventory_.datastores)},
                               so);
    try {
      wait_for_tcp_port(vcsim_port_, {"vcsim", dir_.file("vcsim.log"), &vcsim_});
      return;
    } catch (const Error&) {
      vcsim_.stop();
      if (attempt == 2) throw;
    }
  }
}

void VcsimLab::start_shim(const VcsimOptions& options) {
  for (int attempt = 0;; ++attempt) {
    shim_port_ = free_tcp_port();
    SpawnOptions so;
    so.stdout_path = so.stderr_path = dir_.file("cbt-shim.log");
    shim_ = Subprocess::spawn({"python3", CBT_SHIM, "--listen-port", std::to_string(shim_port_), "--upstream-port",
                               std::to_string(vcsim_port_), "--cert", dir_.file("cert.pem"), "--key",
                               dir_.file("key.pem"), "--block-size", std::to_string(options.cbt_block_size),
                               "--max-extents", std::to_string(options.max_extents), "--snapshot-index",
                               snapshot_index()},
                              so);
    try {
      wait_for_tcp_port(shim_port_, {"cbt shim", dir_.file("cbt-shim.log"), &shim_});
      return;
    } catch (const Error&) {
      shim_.stop();
      if (attempt == 2) throw;
    }
  }
}

static size_t append_reply(char* d, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(d, size * n);
  return size * n;
}

std::string VcsimLab::shim_request(const std::string& method, const std::string& path, const std::string& body) const {
  std::unique_ptr<CURL, void (*)(CURL*)> c(curl_easy_init(), curl_easy_cleanup);
  if (!c) throw Error("cannot create a curl handle for the CBT shim");
  std::string url = fmt::format("https://127.0.0.1:{}{}", shim_port_, path), reply;
  std::string ca = ca_file();
  curl_easy_setopt(c.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(c.get(), CURLOPT_CAINFO, ca.c_str());
  curl_easy_setopt(c.get(), CURLOPT_WRITEFUNCTION, append_reply);
  curl_easy_setopt(c.get(), CURLOPT_WRITEDATA, &reply);
  curl_easy_setopt(c.get(), CURLOPT_TIMEOUT, 30L);
  if (method == "POST") {
    curl_easy_setopt(c.get(), CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  CURLcode rc = curl_easy_perform(c.get());
  long status = 0;
  curl_easy_getinfo(c.get(), CURLINFO_RESPONSE_CODE, &status);
  if (rc != CURLE_OK || status != 200) {
    throw Error(fmt::format("CBT shim {} {}: {} (HTTP {}): {}", method, path, curl_easy_strerror(rc), status, reply));
  }
  return reply;
}

void VcsimLab::override_property(const std::string& moref, const std::string& path,
                                 const std::optional<std::string>& val_xml) {
  nlohmann::json rule = {{"moref", moref}, {"path", path}, {"xml", nullptr}};
  if (val_xml) rule["xml"] = *val_xml;
  shim_request("POST", "/lab/override", rule.dump());
}

void VcsimLab::inject_qcda_fault(const std::string& fault, int count, const std::string& change_id,
                                 const std::string& message) {
  nlohmann::json rule = {{"fault", fault}, {"count", count}, {"message", message}, {"change_id", nullptr}};
  if (!change_id.empty()) rule["change_id"] = change_id;
  shim_request("POST", "/lab/qcda-fault", rule.dump());
}

nlohmann::json VcsimLab::shim_stats() const { return nlohmann::json::parse(shim_request("GET", "/lab/stats", "")); }

std::string VcsimLab::url() const { return fmt::format("https://127.0.0.1:{}/sdk", shim_port_); }
std::string VcsimLab::vcsim_url() const { return fmt::format("https://127.0.0.1:{}/sdk", vcsim_port_); }

std::string VcsimLab::flat_file(const std::string& disk_file_name) const {
  auto close = disk_file_name.find(']');
  if (disk_file_name.empty() || disk_file_name[0] != '[' || close == std::string::npos) {
    throw Error(fmt::format("\"{}\" is not a datastore path", disk_file_name));
  }
  std::string ds = disk_file_name.substr(1, close - 1);
  std::string rel = disk_file_name.substr(close + 1);
  while (!rel.empty() && rel[0] == ' ') rel.erase(0, 1);
  if (rel.size() < 6 || !rel.ends_with(".vmdk") || rel.find("..") != std::string::npos) {
    throw Error(fmt::format("\"{}\": not a .vmdk path inside the datastore", disk_file_name));
  }
  return (std::filesystem::path(datastore_dir(ds)) / (rel.substr(0, rel.size() - 5) + "-flat.vmdk")).string();
}

std::string VcsimLab::datastore_dir(const std::string& ds) const {
  // vcsim names each datastore directory govcsim-<datacenter>-<datastore>-<random>.
  for (auto& e : std::filesystem::directory_iterator(dir_.file("ds"))) {
    std::string name = e.path().filename().string();
    if (name.starts_with("govcsim-") && name.find("-" + ds + "-") != std::string::npos) return e.path().string();
  }
  throw Error(fmt::format("no directory for datastore {} under {}", ds, dir_.file("ds")));
}

}  // namespace mk::test

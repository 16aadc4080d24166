// web-lab: the lab the browser tests drive, as a process. Starts the real `oma` binary
// (GUI on a free port, its web app from --gui-dir) and a VMA that copies real data:
//
//  * --vma real (default when --vma-bin and --mk-lab are given): the vSphere lab
//    (mk-lab: vcsim + CBT shim, a VM with two disks of generated data) and the real
//    `vma run` reading it, with a token the OMA sends (--vma-token-file); the VM is
//    left for the test to add from discovery;
//  * --vma fake: the strict fake VMA of the OMA tests (tests/oma/fake_vma.h) running
//    `migratekit copy` from rate-limited nbdkit sources; the VM is added through the
//    OMA's public API, as a script would.
//
// With --cloudstack-sim (fake VMA only) the OMA keeps its volumes in the CloudStack
// simulator (tests/lab/cloudstack; --volume-backend cloudstack, its settings put through
// the API) and every createVolume job fails with --cloudstack-error as CloudStack's
// errortext: what a failed pass shows. --vm-name names the fake VMA's VM.
//
// With --https the OMA serves the API and the GUI over HTTPS although it listens on
// loopback (`oma --https on`, its own self-signed certificate, made in DATA/https/ on
// the first start and kept across restarts), as it does by default on any other address;
// this lab's own calls to the API pin that certificate.
//
//   web-lab --out lab.json --oma BIN --gui-dir DIR [--vma real|fake] [--vma-bin BIN]
//           [--mk-lab BIN] [--disk-mib 64,32] [--rate 64M] [--vm-name NAME]
//           [--cloudstack-sim --cloudstack-error TEXT] [--https]
//
// lab.json: {"pid", "generation", "vma", "gui_url", "api_url", "token_file", "data_dir",
// "oma_pid", "vm": {"vm_id", "name"}, "vm_added", "blocked_vm": name | null (a VM that
// discovery shows blocked: it has a snapshot of its own), "https": {"cert_file",
// "fingerprint"} | null}; rewritten (generation + 1) after each
// restart. SIGUSR1 restarts the OMA (SIGTERM, wait, start again on the same data
// directory); SIGINT/SIGTERM stop everything this process started (by PID) and end it.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/error.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "common/tls.h"
#include "fake_vma.h"
#include "sim_server.h"
#include "oma/crypto.h"
#include "support/files.h"
#include "support/nbdkit_server.h"
#include "support/temp_dir.h"

namespace {

using nlohmann::json;
constexpr uint64_t MiB = 1 << 20;

struct Options {
  std::string out, oma, gui_dir, rate = "64M";  // rate: bits per second (nbdkit's rate filter)
  std::string vma = "fake", vma_bin, mk_lab;
  std::vector<uint64_t> disk_mib = {64, 32};
  std::string vm_name = "web01";
  bool cloudstack_sim = false;
  std::string cloudstack_error;
  bool https = false;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw mk::UsageError(a + " needs a value");
      return argv[++i];
    };
    if (a == "--out") o.out = value();
    else if (a == "--oma") o.oma = value();
    else if (a == "--gui-dir") o.gui_dir = value();
    else if (a == "--rate") o.rate = value();
    else if (a == "--vma") o.vma = value();
    else if (a == "--vma-bin") o.vma_bin = value();
    else if (a == "--mk-lab") o.mk_lab = value();
    else if (a == "--vm-name") o.vm_name = value();
    else if (a == "--cloudstack-sim") o.cloudstack_sim = true;
    else if (a == "--https") o.https = true;
    else if (a == "--cloudstack-error") o.cloudstack_error = value();
    else if (a == "--disk-mib") {
      o.disk_mib.clear();
      std::string v = value();
      for (size_t p = 0; p <= v.size();) {
        size_t c = v.find(',', p);
        if (c == std::string::npos) c = v.size();
        o.disk_mib.push_back(std::stoull(v.substr(p, c - p)));
        p = c + 1;
      }
    } else {
      throw mk::UsageError("unknown option " + a + " (see the comment at the top of tests/web/web_lab.cpp)");
    }
  }
  if (o.out.empty() || o.oma.empty() || o.gui_dir.empty()) throw mk::UsageError("--out, --oma and --gui-dir are required");
  if (o.disk_mib.empty() || o.disk_mib.size() > 4) throw mk::UsageError("--disk-mib takes 1..4 sizes");
  if (o.vma != "fake" && o.vma != "real") throw mk::UsageError("--vma takes real or fake");
  if (o.vma == "real" && (o.vma_bin.empty() || o.mk_lab.empty()))
    throw mk::UsageError("--vma real needs --vma-bin and --mk-lab");
  if (o.cloudstack_sim && (o.vma != "fake" || o.cloudstack_error.empty()))
    throw mk::UsageError("--cloudstack-sim needs --vma fake and --cloudstack-error");
  return o;
}

std::string read_trimmed(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

class Lab {
 public:
  explicit Lab(Options o) : o_(std::move(o)) {
    vm_name_ = o_.vm_name;
    std::filesystem::create_directories(data_);
    if (o_.cloudstack_sim) sim_ = std::make_unique<mk::cloudstack::test::SimServer>();
    psk_ = mk::test::make_psk_file(data_ + "/nbd-psk.keys", "oma");
    if (o_.vma == "real") start_real_vma();
    else start_fake_vma();
  }

  // mk-lab (vcsim + CBT shim + a VM with generated disks), then `vma run` against it.
  void start_real_vma() {
    std::string lab_json = dir_.file("vsphere-lab.json");
    mk::SpawnOptions so;
    so.stdout_path = so.stderr_path = dir_.file("mk-lab.log");
    std::string sizes;
    for (auto m : o_.disk_mib) sizes += (sizes.empty() ? "" : ",") + std::to_string(m);
    // Dense data: with the VMA's read rate limit a full pass lasts seconds, long enough
    // for the browser to see progress between 0 and 100 %.
    mk_lab_ = mk::Subprocess::spawn(
        {o_.mk_lab, "--out", lab_json, "--vms", "1", "--disk-mib", sizes, "--fill", "dense", "--blocked-vm"}, so);
    for (int i = 0; i < 12000 && !std::filesystem::exists(lab_json); ++i) {
      if (!mk_lab_.running()) throw mk::Error("mk-lab exited at start; its log is " + dir_.file("mk-lab.log"));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    json lab = json::parse(std::ifstream(lab_json));
    const json& vm = lab["vms"][0];
    vm_id_ = vm["instance_uuid"];
    vm_name_ = vm["name"];
    blocked_vm_ = lab["blocked_vm"]["name"];
    // "[LocalDS_0] DC0_H0_VM0/lab-disk0.vmdk" is read from <datastore dir>/DC0_H0_VM0/lab-disk0-flat.vmdk.
    std::string file_name = vm["disks"][0]["file_name"];
    std::string datastore = file_name.substr(1, file_name.find(']') - 1);
    std::string ds_dir = std::filesystem::path(vm["disks"][0]["flat_file"].get<std::string>())
                             .parent_path().parent_path().string();
    vma_token_ = dir_.file("vma.token");
    mk::write_private_file(vma_token_, mk::oma::new_token() + "\n");  // what pairing would issue
    std::string state = dir_.file("vma-state");
    std::filesystem::create_directories(state);
    mk::SpawnOptions vo;
    vo.stdout_path = vo.stderr_path = dir_.file("vma.log");
    vma_proc_ = mk::Subprocess::spawn(
        {o_.vma_bin, "run", "--state-dir", state, "--vcenter", lab["vcenter_url"], "--vcenter-user", lab["user"],
         "--vcenter-password-file", lab["password_file"], "--vcenter-thumbprint", lab["thumbprint"], "--listen",
         "127.0.0.1:0", "--token-file", vma_token_, "--nbd-psk-file", psk_, "--lab-flat-datastore",
         datastore + "=" + ds_dir, "--read-rate-limit", "4M"},
        vo);
    for (int i = 0; i < 6000 && !std::filesystem::exists(state + "/api.port"); ++i) {
      if (!vma_proc_.running()) throw mk::Error("vma exited at start; its log is " + dir_.file("vma.log"));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    vma_url_ = "http://127.0.0.1:" + read_trimmed(state + "/api.port");
  }

  void start_fake_vma() {
    vma_ = std::make_unique<mk::oma::test::FakeVma>(psk_);
    vma_url_ = vma_->url();
    for (size_t i = 0; i < o_.disk_mib.size(); ++i) {
      // Mostly data, some holes: what a used disk looks like to the copy.
      std::string img = dir_.file(fmt::format("source-disk{}.img", i));
      uint64_t size = o_.disk_mib[i] * MiB;
      mk::test::create_sparse_file(img, size);
      for (uint64_t off = 0; off < size; off += 8 * MiB)
        mk::test::write_random_at(img, off, std::min<uint64_t>(6 * MiB, size - off), 1000 + i * 97 + off / MiB);
      mk::test::NbdkitOptions no;
      no.plugin = "file";
      no.filters = {"rate"};
      no.args = {"file=" + img, "rate=" + o_.rate};
      no.read_only = true;
      sources_.push_back(std::make_unique<mk::test::NbdkitServer>(no));
      vma_->set_source(std::to_string(2000 + i), sources_.back()->uri());
    }
  }

  bool fake() const { return vma_ != nullptr; }

  void start_oma() {
    std::string log = data_ + "/oma.log";
    std::filesystem::remove(data_ + "/gui.port");
    std::filesystem::remove(data_ + "/api.port");
    mk::SpawnOptions so;
    so.stdout_path = so.stderr_path = log;
    std::vector<std::string> argv = {o_.oma, "--data-dir", data_, "--api-listen", "127.0.0.1", "--api-port", "0",
                                  "--gui-listen", "127.0.0.1", "--gui-port", "0", "--gui-dir", o_.gui_dir,
                                  "--nbd-listen", "127.0.0.1", "--nbd-port", "0", "--vma-url", vma_url_,
                                  "--poll-interval-ms", "250", "--vma-timeout", "60", "--strict-api-replies"};
    if (!vma_token_.empty()) {
      argv.push_back("--vma-token-file");
      argv.push_back(vma_token_);
    }
    if (o_.https) argv.insert(argv.end(), {"--https", "on"});
    if (sim_) {
      argv.insert(argv.end(), {"--volume-backend", "cloudstack", "--by-id-dir", sim_->by_id_dir(),
                               "--cloudstack-allow-http"});
    }
    oma_ = mk::Subprocess::spawn(argv, so);
    for (int i = 0; i < 3000 && !std::filesystem::exists(data_ + "/gui.port"); ++i) {
      if (!oma_.running()) throw mk::Error("oma exited at start; its log is " + log);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!std::filesystem::exists(data_ + "/gui.port")) throw mk::Error("oma did not write gui.port; see " + log);
    gui_port_ = std::stoi(read_trimmed(data_ + "/gui.port"));
    api_port_ = std::stoi(read_trimmed(data_ + "/api.port"));
    if (o_.https) fingerprint_ = mk::tls::certificate_file_fingerprint(cert_file());
  }

  std::string cert_file() const { return data_ + "/https/cert.pem"; }
  std::string scheme() const { return o_.https ? "https" : "http"; }

  // A client of the OMA's API: with --https, one that accepts only the OMA's certificate.
  std::unique_ptr<httplib::Client> api_client() {
    auto c = std::make_unique<httplib::Client>(fmt::format("{}://127.0.0.1:{}", scheme(), api_port_));
    if (o_.https) mk::tls::apply_client_trust(*c, {fingerprint_, ""});
    return c;
  }

  void stop_oma() { oma_.stop(std::chrono::milliseconds(10000)); }
  void stop_all() {
    stop_oma();
    vma_proc_.stop(std::chrono::milliseconds(10000));
    mk_lab_.stop(std::chrono::milliseconds(10000));
  }

  // The OMA's CloudStack settings (the simulator's seeded zone and offerings), then the
  // failure every pass meets: createVolume's job ends with --cloudstack-error.
  void configure_cloudstack() {
    auto r = api_client()->Put("/api/v1/settings/cloudstack", {{"Authorization", "Bearer " + read_trimmed(data_ + "/admin.token")}},
                   sim_->oma_settings().dump(), "application/json");
    if (!r || r->status != 200)
      throw mk::Error("setting CloudStack up failed: " + (r ? r->body : std::string("no answer")));
    sim_->fail({{"command", "createVolume"}, {"how", "job"}, {"errortext", o_.cloudstack_error}, {"count", 1000}});
  }

  void add_vm() {
    if (sim_) configure_cloudstack();
    json disks = json::array();
    for (size_t i = 0; i < o_.disk_mib.size(); ++i) {
      disks.push_back({{"key", std::to_string(2000 + i)}, {"unit", i}, {"label", fmt::format("Hard disk {}", i + 1)},
                       {"capacity_bytes", o_.disk_mib[i] * MiB}});
    }
    json body = {{"vm_id", vm_id_}, {"name", vm_name_}, {"vcenter", "vcsim.lab"}, {"datacenter", "DC0"},
                 {"cpus", 2}, {"memory_mb", 4096}, {"guest_os", "debian12_64Guest"}, {"power_state", "poweredOn"},
                 {"disks", disks}};
    auto r = api_client()->Post("/api/v1/vms", {{"Authorization", "Bearer " + read_trimmed(data_ + "/admin.token")}},
                    body.dump(), "application/json");
    if (!r || r->status != 201) throw mk::Error("adding the lab VM failed: " + (r ? r->body : std::string("no answer")));
    vma_->add_source_vm(vm_id_, vm_name_, true);  // powered on, for the cutover's shutdown
  }

  void write_out() {
    json j = {{"pid", getpid()},
              {"generation", generation_++},
              {"gui_url", fmt::format("{}://127.0.0.1:{}/", scheme(), gui_port_)},
              {"api_url", fmt::format("{}://127.0.0.1:{}", scheme(), api_port_)},
              {"token_file", data_ + "/admin.token"},
              {"data_dir", data_},
              {"oma_pid", oma_.pid()},
              {"vma", o_.vma},
              {"vm_added", fake()},
              {"vm", {{"vm_id", vm_id_}, {"name", vm_name_}}},
              {"blocked_vm", blocked_vm_.empty() ? json(nullptr) : json(blocked_vm_)},
              {"https", o_.https ? json{{"cert_file", cert_file()}, {"fingerprint", fingerprint_}} : json(nullptr)}};
    std::string tmp = o_.out + ".tmp";
    std::ofstream(tmp) << j.dump(2) << "\n";
    std::filesystem::rename(tmp, o_.out);  // readers never see half a file
  }

  std::vector<std::string> violations() { return vma_ ? vma_->violations() : std::vector<std::string>{}; }

 private:
  Options o_;
  mk::test::TempDir dir_{"mk-web-lab"};
  std::string data_ = dir_.file("data");
  std::string psk_;
  std::string vm_id_ = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0101", vm_name_;
  std::unique_ptr<mk::cloudstack::test::SimServer> sim_;  // --cloudstack-sim
  std::string vma_url_, vma_token_;
  std::unique_ptr<mk::oma::test::FakeVma> vma_;  // --vma fake
  mk::Subprocess mk_lab_, vma_proc_;             // --vma real
  std::string blocked_vm_;                       // --vma real: a VM with a snapshot of its own
  std::vector<std::unique_ptr<mk::test::NbdkitServer>> sources_;
  mk::Subprocess oma_;
  int gui_port_ = 0, api_port_ = 0, generation_ = 0;
  std::string fingerprint_;  // --https: the OMA's certificate's
};

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse(argc, argv);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before any thread: sigwait takes them
    Lab lab(o);
    lab.start_oma();
    if (lab.fake()) lab.add_vm();
    lab.write_out();
    for (;;) {
      int sig = 0;
      sigwait(&set, &sig);
      if (sig != SIGUSR1) break;
      lab.stop_oma();
      lab.start_oma();
      lab.write_out();
    }
    lab.stop_all();
    for (const auto& v : lab.violations()) std::cerr << "web-lab: fake VMA protocol violation: " << v << "\n";
    return lab.violations().empty() ? 0 : 1;
  } catch (const mk::UsageError& e) {
    std::cerr << "web-lab: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "web-lab: " << e.what() << "\n";
    return 1;
  }
}

// Shared setup of the VMA tests: a VcsimLab (vcsim + CBT shim) whose VMs' disks have
// flat files with generated data, the real `vma` binary against it, and — for
// replication — a real OMA in-process (SQLite, local volumes, nbdkit exports with TLS
// PSK) whose VMA URL is the VMA's port and whose client sends the VMA's token; or, with
// start_paired_over_ssh, a real sshd and the VMA paired with the OMA, NBD inside SSH.
//
// Owns everything it starts; servers are stopped by PID. Not thread-safe.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/error.h"
#include "common/subprocess.h"
#include "lab/vcsim/lab_vm.h"
#include "lab/vcsim/vcsim_lab.h"
#include "oma/app.h"
#include "oma/vma/vma_client.h"
#include "oma_service.h"
#include "support/files.h"
#include "support/eventually.h"
#include "support/net.h"
#include "support/sshd_server.h"
#include "support/temp_dir.h"
#include "vma_process.h"
#include "vsphere/inventory.h"
#include "vsphere/session.h"
#include "vsphere/tasks.h"
#include "vsphere/vm_ops.h"

namespace mk::vma::test {

inline constexpr uint64_t kBlock = 64 * 1024;
inline constexpr const char* kToken = "vma-test-token-4d1f0c2b9a7e";

class VmaFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    connect = mk::test::lab_connect_options(lab);
    session = vsphere::Session::connect(connect);
    std::filesystem::create_directories(dir.file("oma"));
    std::filesystem::create_directories(dir.file("vma"));
    psk = mk::test::make_psk_file(dir.file("oma/nbd-psk.keys"), "oma");
    token_file = dir.file("vma-token");
    mk::test::write_at(token_file, 0, std::string(kToken) + "\n");
    std::filesystem::permissions(token_file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }

  void TearDown() override {
    if (HasFailure() && vma) std::cerr << "vma log:\n" << mk::test::log_tail(vma->log_path(), 6000) << "\n";
    if (HasFailure() && sshd) std::cerr << "sshd log:\n" << mk::test::log_tail(sshd->log_path(), 3000) << "\n";
    oma.reset();
    vma.reset();
    sshd.reset();
  }

  void start_vma(VmaProcessOptions o = {}) {
    o.state_dir = dir.file("vma/state");
    o.token_file = token_file;
    if (o.certificates_dir.empty()) o.psk_file = psk;  // else an X.509 VMA: no PSK
    vma = std::make_unique<VmaProcess>(lab, o);
    client = std::make_unique<oma::HttpVmaClient>(vma->url(), std::chrono::seconds(60), kToken);
  }

  // x509_dir: the OMA serves NBD with X.509 (`--tls-certificates x509_dir`) instead of the PSK.
  void start_oma(const std::string& x509_dir = "") {
    oma::OmaConfig c = oma::test::test_config(dir.file("oma"), vma->url());
    if (!x509_dir.empty()) {
      c.tls_psk_file.clear();
      c.tls_certificates_dir = x509_dir;
    }
    c.vma_token_file = token_file;
    start_oma_with(c);
  }

  void start_oma_with(oma::OmaConfig c) {
    c.vma_timeout_s = 60;
    oma = std::make_unique<oma::Oma>(c);
    oma->start();
    api = std::make_unique<oma::test::ApiClient>(oma->api_port(), oma::test::read_admin_token(dir.file("oma")));
  }

  // The OMA (in-process) with a real sshd, and the VMA paired with it as an operator does
  // (`vma pair` on the OMA's bundle, approved through the API), running `vma run
  // --nbd-over-ssh` with `o`'s other options: the OMA reaches the VMA's API through the
  // VMA's reverse forward, and every copy goes through its ssh -L forward. Returns once
  // the OMA sees the tunnel up; returns the VMA's id (register_vm's vma_id).
  std::string start_paired_over_ssh(VmaProcessOptions o = {}) {
    std::string keys = dir.file("oma/vma_authorized_keys");
    std::ofstream(keys).close();  // sshd reads it from the start; the OMA rewrites it
    sshd = std::make_unique<mk::test::SshdServer>(mk::test::SshdOptions{.authorized_keys_file = keys});
    oma::OmaConfig c = oma::test::test_config(dir.file("oma"), "http://127.0.0.1:1");  // no unpaired VMA
    c.ssh_host = "127.0.0.1";
    c.ssh_port = sshd->port();
    c.ssh_user = "root";
    c.ssh_host_key_file = sshd->host_public_key_file();
    c.authorized_keys_file = keys;
    tunnel_ports = std::make_unique<mk::test::PortBlock>(2);
    c.tunnel_port_base = tunnel_ports->first();
    start_oma_with(c);

    auto bundle = api->post("/api/v1/vmas/pairing-bundles", "{}");
    if (bundle.status != 201) throw Error("pairing bundle: " + bundle.raw);
    std::string state = dir.file("vma/state"), bundle_file = dir.file("vma/bundle.json");
    std::ofstream(bundle_file) << bundle.body.dump();
    std::string out;
    if (run_capture({VMA_BIN, "pair", "--bundle", bundle_file, "--state-dir", state, "--name", "site-a", "--vcenter",
                     "vc-a"},
                    out) != 0)
      throw Error("vma pair failed:\n" + out);
    std::string id = nlohmann::json::parse(mk::test::read_file(state + "/pairing.json"))["vma_id"];
    auto approved = api->post("/api/v1/vmas/" + id + "/approve", "");
    if (approved.status != 200) throw Error("approving VMA " + id + ": " + approved.raw);
    if (!mk::test::eventually([&] { return mk::test::read_file(keys).find("vma-" + id) != std::string::npos; }, 30))
      throw Error("the OMA never wrote the approved VMA's key into " + keys);

    o.state_dir = state;
    o.token_file = state + "/api.token";
    o.psk_file = state + "/nbd-psk.keys";
    o.nbd_over_ssh = true;
    vma = std::make_unique<VmaProcess>(lab, o);
    std::string token = mk::test::read_file(o.token_file);
    token.erase(token.find_last_not_of(" \n") + 1);
    client = std::make_unique<oma::HttpVmaClient>(vma->url(), std::chrono::seconds(60), token);
    bool up = mk::test::eventually([&] {
      auto h = api->get("/api/v1/vmas/" + id + "/health");
      return h.status == 200 && h.body["vma"]["tunnel"]["state"] == "up";
    }, 120);
    if (!up) throw Error("the OMA never saw the VMA's tunnel up; vma log:\n" + mk::test::log_tail(vma->log_path()));
    return id;
  }

  // The VMA's running ssh client (its child running ssh, not a zombie yet to be reaped),
  // or -1: what its tunnel supervisor runs.
  pid_t vma_ssh_pid() {
    for (pid_t p : mk::test::child_pids(vma->pid())) {
      std::ifstream in("/proc/" + std::to_string(p) + "/stat");
      std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      size_t close = stat.rfind(')');  // "PID (COMM) STATE ..."
      if (close == std::string::npos || close + 2 >= stat.size()) continue;
      if (stat.find("(ssh)") != std::string::npos && stat[close + 2] != 'Z') return p;
    }
    return -1;
  }

  // Polls the VMA until disk `disk_key` of `job` reported `fraction` of its plan done while
  // copying; returns its progress as last seen (checked: copying, not yet done).
  protocol::DiskProgress disk_at(const std::string& job, const std::string& disk_key, double fraction) {
    protocol::DiskProgress seen;
    wait_vma(job, [&](const protocol::JobProgress& p) {
      for (const auto& d : p.disks) {
        if (d.disk_key.str() != disk_key || d.status != protocol::DiskStatus::Copying || d.bytes_total <= 0) continue;
        seen = d;
        return d.bytes_done >= static_cast<int64_t>(fraction * static_cast<double>(d.bytes_total));
      }
      return false;
    });
    EXPECT_EQ(seen.status, protocol::DiskStatus::Copying) << "disk " << disk_key << " was not seen copying";
    EXPECT_LT(seen.bytes_done, seen.bytes_total) << "disk " << disk_key << " was done before it could be interrupted";
    return seen;
  }

  vsphere::VmInfo vm_at(const std::string& path) {
    return vsphere::describe_vm(*session, vsphere::find_by_inventory_path(*session, path).value());
  }

  // Gives the VM a second disk of `kb` KiB and flat files with random blocks on both
  // disks (`blocks_per_disk` blocks of kBlock, spread over the disk). Returns the VM.
  vsphere::VmInfo prepare_vm(const std::string& path, int kb, int blocks_per_disk, uint64_t seed) {
    auto v = vm_at(path);
    v = mk::test::add_lab_disk(*session, v, v.disks.at(0).controller_key, "LocalDS_0", uint64_t(kb) * 1024, "disk2");
    EXPECT_EQ(v.disks.size(), 2u);
    for (auto& d : v.disks) {
      std::string flat = lab.flat_file(d.file_name);
      mk::test::create_sparse_file(flat, d.capacity_bytes);
      flats[v.instance_uuid][d.key] = flat;
      uint64_t nblocks = d.capacity_bytes / kBlock;
      for (int i = 0; i < blocks_per_disk && nblocks > 0; ++i) {
        write_block(v.instance_uuid, d.key, (i * 7919u) % nblocks, seed + i);
      }
    }
    return v;
  }

  void write_block(const std::string& vm_id, int key, uint64_t block, uint64_t seed) {
    mk::test::write_random_at(flats.at(vm_id).at(key), block * kBlock, kBlock, seed);
  }

  // The VM as the VMA discovered it, registered with the OMA (as discovered by the paired
  // VMA `vma_id`, if given: its jobs then go through that VMA).
  protocol::DiscoveredVm register_vm(const std::string& vm_id, const std::string& vma_id = "") {
    for (const auto& v : client->discover().vms) {
      if (v.vm_id != vm_id) continue;
      nlohmann::json disks = nlohmann::json::array();
      for (const auto& d : v.disks) {
        disks.push_back(
            {{"key", d.disk_key.str()}, {"unit", d.unit}, {"label", d.label}, {"capacity_bytes", d.capacity_bytes}});
      }
      nlohmann::json body = {{"vm_id", v.vm_id},       {"name", v.name},           {"vcenter", "vcsim"},
                             {"datacenter", v.datacenter}, {"cpus", v.cpus},      {"memory_mb", v.memory_mb},
                             {"guest_os", v.guest_os}, {"power_state", enum_name(v.power_state)}, {"disks", disks}};
      if (!vma_id.empty()) body["vma_id"] = vma_id;
      auto r = api->post("/api/v1/vms", body.dump());
      EXPECT_EQ(r.status, 201) << r.raw;
      return v;
    }
    ADD_FAILURE() << "the VMA did not discover VM " << vm_id;
    return {};
  }

  std::string start_job(const std::string& vm_id, const std::string& kind) {
    auto r = api->post("/api/v1/jobs", nlohmann::json{{"vm_id", vm_id}, {"kind", kind}}.dump());
    EXPECT_EQ(r.status, 201) << r.raw;
    return r.body.value("job_id", "");
  }

  nlohmann::json wait_job(const std::string& job_id) {
    return oma::test::wait_for_job(*api, job_id, oma::test::job_ended, std::chrono::seconds(180));
  }

  // Every disk's OMA volume holds exactly the VM's flat file.
  void expect_targets_match(const std::string& vm_id) {
    for (auto& [key, flat] : flats.at(vm_id)) {
      auto vol = oma->repos().storage.find_volume(vm_id, std::to_string(key));
      ASSERT_TRUE(vol.has_value()) << "no volume for disk " << key;
      EXPECT_EQ(mk::test::sha256_file(vol->device_path), mk::test::sha256_file(flat)) << "VM " << vm_id << " disk " << key;
    }
  }

  // Every disk's volume, as the OMA of `oma_api` lists it (its device path), holds exactly
  // the VM's flat file; for an OMA out of process. Returns how many disks were compared.
  int expect_volumes_match_sources(oma::test::ApiClient& oma_api, const std::string& vm_id) {
    auto volumes = oma_api.get("/api/v1/volumes");
    EXPECT_EQ(volumes.status, 200) << volumes.raw;
    int compared = 0;
    for (auto& [key, flat] : flats.at(vm_id)) {
      std::string device;
      for (const auto& v : volumes.body["volumes"]) {
        if (v.value("vm_id", "") == vm_id && v.value("disk_key", "") == std::to_string(key)) device = v["device_path"];
      }
      if (device.empty()) {
        ADD_FAILURE() << "no volume for disk " << key << ": " << volumes.raw;
        continue;
      }
      EXPECT_EQ(mk::test::sha256_file(device), mk::test::sha256_file(flat)) << "VM " << vm_id << " disk " << key;
      ++compared;
    }
    return compared;
  }

  // The passes left no snapshot of ours: cleanup (which waits for a pass that is still
  // closing) finds none to remove, and vSphere lists none.
  void expect_no_snapshot_left(const vsphere::VmInfo& v) {
    EXPECT_EQ(client->cleanup(v.instance_uuid), 0) << "a pass left its snapshot behind";
    EXPECT_EQ(our_snapshots(v), 0);
  }

  int our_snapshots(const vsphere::VmInfo& v) {
    int n = 0;
    for (auto& s : vsphere::list_snapshots(*session, v.ref)) n += s.name.starts_with("migratekit-");
    return n;
  }

  // Polls the VMA until `done(progress)`; the deadline only stops a hung test.
  protocol::JobProgress wait_vma(const std::string& job_id, const std::function<bool(const protocol::JobProgress&)>& done) {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    protocol::JobProgress p;
    for (;;) {
      try {
        p = client->progress(job_id);
        if (done(p)) return p;
      } catch (const oma::VmaJobUnknown&) {
        // The OMA has not sent the job yet.
      }
      if (std::chrono::steady_clock::now() > end) return p;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  mk::test::VcsimLab lab{mk::test::VcsimOptions{kBlock, 64}};
  mk::test::TempDir dir{"mk-vma"};
  vsphere::ConnectOptions connect;
  std::shared_ptr<vsphere::Session> session;
  std::string psk, token_file;
  std::map<std::string, std::map<int, std::string>> flats;  // vm -> disk key -> flat file
  std::unique_ptr<VmaProcess> vma;
  std::unique_ptr<oma::HttpVmaClient> client;
  std::unique_ptr<oma::Oma> oma;
  std::unique_ptr<oma::test::ApiClient> api;
  std::unique_ptr<mk::test::SshdServer> sshd;  // start_paired_over_ssh
  std::unique_ptr<mk::test::PortBlock> tunnel_ports;  // start_paired_over_ssh: the OMA's tunnel ports
};

// Every disk of a completed pass has each phase once, in the order of a pass, with a
// time that is not negative (times themselves are not judged: they vary). `job` is the
// OMA's GET /api/v1/jobs/{id}.
inline void expect_all_phases_in_order(const nlohmann::json& job) {
  const std::vector<std::string> order = {"snapshot", "change_query", "reader_start", "planning",
                                          "copying",  "flushing",     "snapshot_removal", "reporting"};
  ASSERT_FALSE(job["disks"].empty()) << job.dump(2);
  for (const auto& d : job["disks"]) {
    std::vector<std::string> names;
    for (const auto& p : d["phases"]) {
      names.push_back(p["phase"].get<std::string>());
      EXPECT_GE(p["seconds"].get<double>(), 0.0) << d.dump();
    }
    EXPECT_EQ(names, order) << "disk " << d["disk_key"] << ": " << d.dump();
  }
}

}  // namespace mk::vma::test

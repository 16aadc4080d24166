// mk-lab: the lab as a process, for the demo, the browser tests and labs at scale.
// Starts vcsim with the CBT shim (VcsimLab), gives the first VMs disks of generated
// data, optionally starts an sshd standing in for the OMA's SSH server (its
// AuthorizedKeysFile is the file the OMA manages), writes what a VMA needs to know into
// a JSON file (--out) and runs until SIGINT or SIGTERM; then stops everything it started.
//
//   mk-lab --out lab.json [--vms 1] [--disk-mib 256,128] [--seed 1] [--fill sparse|dense|light]
//          [--sshd-authorized-keys FILE] [--blocked-vm]
//          [--clusters 2] [--hosts-per-cluster 4] [--standalone-hosts 0] [--datastores 1]
//          [--seed-threads 2] [--disk-image FILE]...
//
// sparse: 4 MiB of data every 32 MiB (a used disk); dense: random bytes throughout;
// light: 64 KiB at the start and in the middle (a disk that costs 128 KiB).
// --disk-image FILE (repeatable, in unit order; with --vms 1, instead of --disk-mib and
// --fill): the VM's disks are sparse copies of these raw images, each of its image's size,
// so that anyone can migrate their own disk image (scripts/demo --disk-image).
//
// --vms 1..4 without an inventory option is vcsim's default inventory (4 VMs, the names
// the tests know: DC0_H0_VM0, DC0_H0_VM1, DC0_C0_RP0_VM0, DC0_C0_RP0_VM1, seeded in that
// order) with 256,128 MiB sparse disks. More VMs (up to 256) or any inventory option
// make a lab at scale with vcsim's own model flags: --clusters clusters of
// --hosts-per-cluster hosts and --standalone-hosts standalone hosts, each holding
// ceil(vms / (clusters + standalone hosts)) VMs (vcsim places a cluster's VMs on its
// hosts); its disks default to 16,8 MiB filled light, so that 256 VMs cost 64 MiB of
// flat files, all sparse. The first --vms VMs, spread over the clusters and hosts, are
// seeded; --blocked-vm takes the inventory's last VM, which must be one not seeded.
// With --datastores N above 1 the disks spread over LocalDS_0..N-1 (disk i of the k-th VM
// on LocalDS_((k + i) mod N)); "datastore_dirs" in the JSON maps each to its directory.
#include <fmt/format.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "common/units.h"
#include "lab/vcsim/lab_vm.h"
#include "lab/vcsim/vcsim_lab.h"
#include "support/files.h"
#include "support/sshd_server.h"
#include "vsphere/tasks.h"
#include "vsphere/vm_ops.h"

namespace {

using nlohmann::json;
namespace vs = mk::vsphere;

constexpr int kMaxVms = 256;

struct Options {
  std::string out;
  int vms = 1;
  std::vector<uint64_t> disk_mib = {256, 128};
  uint64_t seed = 1;
  mk::test::LabFill fill = mk::test::LabFill::Sparse;
  std::string sshd_authorized_keys;
  bool blocked_vm = false;
  bool fill_given = false, disks_given = false, inventory_given = false;
  mk::test::VcsimInventory inventory;  // the default one unless at scale
  int seed_threads = 2;
  std::vector<std::string> disk_images;
};

Options parse(int argc, char** argv) {
  Options o;
  mk::test::VcsimInventory scale{2, 4, 0, 0, 1};  // clusters, hosts per cluster, standalone hosts, VMs per pool, datastores
  auto count = [](const std::string& name, const std::string& v, int lo, int hi) {
    int n = 0;
    try {
      n = std::stoi(v);
    } catch (const std::exception&) {
      throw mk::UsageError(name + " takes a number, not \"" + v + "\"");
    }
    if (n < lo || n > hi) throw mk::UsageError(fmt::format("{} must be {}..{}", name, lo, hi));
    return n;
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw mk::UsageError(a + " needs a value");
      return argv[++i];
    };
    if (a == "--out") {
      o.out = value();
    } else if (a == "--vms") {
      o.vms = count(a, value(), 1, kMaxVms);
    } else if (a == "--clusters") {
      scale.clusters = count(a, value(), 0, 16);
      o.inventory_given = true;
    } else if (a == "--hosts-per-cluster") {
      scale.hosts_per_cluster = count(a, value(), 1, 32);
      o.inventory_given = true;
    } else if (a == "--standalone-hosts") {
      scale.standalone_hosts = count(a, value(), 0, 32);
      o.inventory_given = true;
    } else if (a == "--datastores") {
      scale.datastores = count(a, value(), 1, 8);
      o.inventory_given = true;
    } else if (a == "--seed-threads") {
      o.seed_threads = count(a, value(), 1, 16);
    } else if (a == "--seed") {
      o.seed = std::stoull(value());
    } else if (a == "--blocked-vm") {
      o.blocked_vm = true;
    } else if (a == "--sshd-authorized-keys") {
      o.sshd_authorized_keys = value();
    } else if (a == "--fill") {
      std::string v = value();
      if (v == "sparse") {
        o.fill = mk::test::LabFill::Sparse;
      } else if (v == "dense") {
        o.fill = mk::test::LabFill::Dense;
      } else if (v == "light") {
        o.fill = mk::test::LabFill::Light;
      } else {
        throw mk::UsageError("--fill takes sparse, dense or light");
      }
      o.fill_given = true;
    } else if (a == "--disk-image") {
      o.disk_images.push_back(value());
    } else if (a == "--disk-mib") {
      o.disk_mib.clear();
      o.disks_given = true;
      std::string v = value();
      for (size_t p = 0; p <= v.size();) {
        size_t c = v.find(',', p);
        if (c == std::string::npos) c = v.size();
        o.disk_mib.push_back(std::stoull(v.substr(p, c - p)));
        p = c + 1;
      }
    } else {
      throw mk::UsageError("unknown option " + a + " (see the comment at the top of tests/lab/vcsim/lab_main.cpp)");
    }
  }
  if (o.out.empty()) throw mk::UsageError("--out FILE is required");
  if (o.vms > 4 || o.inventory_given) {
    int resources = scale.clusters + scale.standalone_hosts;
    if (resources < 1) throw mk::UsageError("a lab at scale needs --clusters or --standalone-hosts above 0");
    scale.vms_per_pool = (o.vms + resources - 1) / resources;
    o.inventory = scale;
    if (!o.disks_given) o.disk_mib = {16, 8};
    if (!o.fill_given) o.fill = mk::test::LabFill::Light;
    if (o.blocked_vm && o.vms >= scale.vms()) {
      throw mk::UsageError(fmt::format("--blocked-vm needs a VM the lab does not seed: the inventory has {} VMs, so --vms 1..{}",
                                       scale.vms(), scale.vms() - 1));
    }
  } else if (o.blocked_vm && o.vms > 3) {
    throw mk::UsageError("--blocked-vm needs a VM the lab does not seed: --vms 1..3");
  }
  if (!o.disk_images.empty()) {
    if (o.disks_given || o.fill_given) throw mk::UsageError("--disk-image replaces --disk-mib and --fill");
    if (o.vms != 1) throw mk::UsageError("--disk-image gives the disks of one VM: use it with --vms 1");
    if (o.disk_images.size() > 4) throw mk::UsageError("--disk-image: at most 4 disks");
    for (const auto& image : o.disk_images) {
      if (!std::filesystem::is_regular_file(image)) throw mk::UsageError("--disk-image " + image + ": no such file");
    }
  }
  if (o.disk_mib.empty() || o.disk_mib.size() > 4) throw mk::UsageError("--disk-mib takes 1..4 sizes");
  for (auto mib : o.disk_mib) {
    if (mib < 1) throw mk::UsageError("--disk-mib: a disk is at least 1 MiB");
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse(argc, argv);
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before any thread: sigwait below takes them

    auto t0 = std::chrono::steady_clock::now();
    mk::test::VcsimOptions vo;
    vo.inventory = o.inventory;
    mk::test::VcsimLab lab(vo);
    auto session = vs::Session::connect(mk::test::lab_connect_options(lab));
    mk::test::LabSeedOptions so{o.disk_mib, o.fill, o.seed, o.disk_images};
    json vms = mk::test::seed_lab_vms(lab, *session, o.vms, so, o.seed_threads);
    json blocked = nullptr;
    if (o.blocked_vm) {
      // A snapshot of its own: the VMA's preflight refuses a pass and discovery says so.
      std::string path = o.inventory.is_default() ? "DC0/vm/DC0_C0_RP0_VM1" : o.inventory.vm_paths().back();
      auto vm = vs::describe_vm(*session, vs::find_by_inventory_path(*session, path).value());
      vs::create_snapshot(*session, vm, "before-upgrade", "the owner's, not MigrateKit's");
      blocked = {{"name", vm.name}, {"instance_uuid", vm.instance_uuid}};
    }
    session.reset();
    double made_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json datastore_dirs = json::object();
    for (int i = 0; i < o.inventory.datastores; ++i) {
      std::string name = fmt::format("LocalDS_{}", i);
      datastore_dirs[name] = lab.datastore_dir(name);
    }

    std::unique_ptr<mk::test::SshdServer> sshd;
    if (!o.sshd_authorized_keys.empty()) {
      sshd = std::make_unique<mk::test::SshdServer>(mk::test::SshdOptions{o.sshd_authorized_keys, {}});
    }
    json out = {{"pid", getpid()},
                {"vcenter_url", lab.url()},
                {"user", lab.user()},
                {"password_file", lab.password_file()},
                {"thumbprint", lab.thumbprint()},
                {"ca_file", lab.ca_file()},
                {"lab_dir", lab.dir().path()},
                {"inventory",
                 {{"datacenters", 1},
                  {"clusters", o.inventory.clusters},
                  {"hosts_per_cluster", o.inventory.hosts_per_cluster},
                  {"standalone_hosts", o.inventory.standalone_hosts},
                  {"hosts", o.inventory.hosts()},
                  {"datastores", o.inventory.datastores},
                  {"vms", o.inventory.vms()}}},
                {"seconds_to_make", made_s},
                {"datastore_dirs", datastore_dirs},  // what vma-lab's --lab-flat-datastore maps
                {"vms", vms},
                {"blocked_vm", blocked}};
    if (sshd) {
      out["sshd"] = {{"port", sshd->port()}, {"pid", sshd->pid()}, {"host_key_file", sshd->host_public_key_file()},
                     {"log", sshd->log_path()}};
    }
    mk::write_private_file(o.out, out.dump(2) + "\n");  // a poller sees it whole or not at all
    std::cerr << fmt::format(
        "mk-lab: vSphere lab at {} with {} VM(s) ({} seeded; {} cluster(s), {} host(s)) made in {:.1f} s; details in "
        "{}; Ctrl-C stops it\n",
        lab.url(), o.inventory.vms(), o.vms, o.inventory.clusters, o.inventory.hosts(), made_s, o.out);
    int sig = 0;
    sigwait(&stop, &sig);
    return 0;
  } catch (const mk::UsageError& e) {
    std::cerr << "mk-lab: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "mk-lab: " << e.what() << "\n";
    return 1;
  }
}

// mk-lab: the lab as a process, for the demo and the browser tests. Starts vcsim with
// the CBT shim (VcsimLab), gives the first VMs two disks of generated data, optionally
// starts an sshd standing in for the OMA's SSH server (its AuthorizedKeysFile is the
// file the OMA manages), writes what a VMA needs to know into a JSON file (--out) and
// runs until SIGINT or SIGTERM; then stops everything it started.
//
//   mk-lab --out lab.json [--vms 1] [--disk-mib 256,128] [--seed 1] [--fill sparse|dense]
//          [--sshd-authorized-keys FILE] [--blocked-vm]
//
// sparse: 4 MiB of data every 32 MiB (a used disk); dense: random bytes throughout.
#include <fmt/format.h>
#include <signal.h>

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

struct Options {
  std::string out;
  int vms = 1;
  std::vector<uint64_t> disk_mib = {256, 128};
  uint64_t seed = 1;
  bool dense = false;
  std::string sshd_authorized_keys;
  bool blocked_vm = false;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw mk::UsageError(a + " needs a value");
      return argv[++i];
    };
    if (a == "--out") {
      o.out = value();
    } else if (a == "--vms") {
      o.vms = std::stoi(value());
    } else if (a == "--seed") {
      o.seed = std::stoull(value());
    } else if (a == "--blocked-vm") {
      o.blocked_vm = true;
    } else if (a == "--sshd-authorized-keys") {
      o.sshd_authorized_keys = value();
    } else if (a == "--fill") {
      std::string v = value();
      if (v != "sparse" && v != "dense") throw mk::UsageError("--fill takes sparse or dense");
      o.dense = v == "dense";
    } else if (a == "--disk-mib") {
      o.disk_mib.clear();
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
  if (o.vms < 1 || o.vms > 4) throw mk::UsageError("--vms must be 1..4 (the lab's VMs)");
  if (o.blocked_vm && o.vms > 3) throw mk::UsageError("--blocked-vm needs a VM the lab does not seed: --vms 1..3");
  if (o.disk_mib.empty() || o.disk_mib.size() > 4) throw mk::UsageError("--disk-mib takes 1..4 sizes");
  return o;
}

// Removes the VM's first disk (vcsim gives every VM a 1 MiB one and cannot grow it),
// keeping its controller for the disks the lab adds.
vs::VmInfo remove_first_disk(vs::Session& s, const vs::VmInfo& vm) {
  const auto& d = vm.disks.front();
  std::string spec = fmt::format(
      "<spec><deviceChange><operation>remove</operation><fileOperation>destroy</fileOperation>"
      "<device xsi:type=\"VirtualDisk\"><key>{}</key>"
      "<backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>{}</fileName>"
      "<diskMode>persistent</diskMode></backing>"
      "<controllerKey>{}</controllerKey><unitNumber>{}</unitNumber><capacityInKB>{}</capacityInKB></device>"
      "</deviceChange></spec>",
      d.key, d.file_name, d.controller_key, d.unit_number, d.capacity_bytes / 1024);
  vs::run_task(s, "ReconfigVM_Task", vm.ref.xml("_this") + spec, "removing the first disk of " + vm.name);
  return vs::describe_vm(s, vm.ref);
}

json seed_vm(mk::test::VcsimLab& lab, vs::Session& s, const std::string& name, const Options& o, int index) {
  auto ref = vs::find_by_inventory_path(s, "DC0/vm/" + name);
  if (!ref) throw mk::Error("the lab has no VM " + name);
  auto vm = vs::describe_vm(s, *ref);
  if (vm.disks.empty()) throw mk::Error("lab VM " + name + " has no disk to take the controller from");
  int controller = vm.disks.front().controller_key;
  std::string datastore = vm.disks.front().datastore;
  vm = remove_first_disk(s, vm);
  for (size_t i = 0; i < o.disk_mib.size(); ++i) {
    vm = mk::test::add_lab_disk(s, vm, controller, datastore, o.disk_mib[i] << 20, fmt::format("lab-disk{}", i));
  }
  json disks = json::array();
  for (size_t i = 0; i < vm.disks.size(); ++i) {
    const auto& d = vm.disks[i];
    std::string flat = lab.flat_file(d.file_name);
    uint64_t seed = o.seed * 100 + index * 10 + i;
    if (o.dense) {
      mk::test::create_sparse_file(flat, d.capacity_bytes);
      constexpr uint64_t kChunk = 64 << 20;  // bounded memory for large disks
      for (uint64_t off = 0; off < d.capacity_bytes; off += kChunk) {
        mk::test::write_random_at(flat, off, std::min(kChunk, d.capacity_bytes - off), seed * 65537 + off / kChunk);
      }
    } else {
      mk::test::fill_generated_disk(flat, d.capacity_bytes, seed);
    }
    disks.push_back({{"key", d.key},
                     {"unit", d.unit_number},
                     {"capacity_bytes", d.capacity_bytes},
                     {"file_name", d.file_name},
                     {"flat_file", flat}});
  }
  return {{"name", vm.name}, {"instance_uuid", vm.instance_uuid}, {"disks", disks}};
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

    mk::test::VcsimLab lab;
    auto session = vs::Session::connect(mk::test::lab_connect_options(lab));
    const char* names[] = {"DC0_H0_VM0", "DC0_H0_VM1", "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"};
    json vms = json::array();
    for (int i = 0; i < o.vms; ++i) vms.push_back(seed_vm(lab, *session, names[i], o, i));
    json blocked = nullptr;
    if (o.blocked_vm) {
      // A snapshot of its own: the VMA's preflight refuses a pass and discovery says so.
      auto vm = vs::describe_vm(*session, vs::find_by_inventory_path(*session, "DC0/vm/DC0_C0_RP0_VM1").value());
      vs::create_snapshot(*session, vm, "before-upgrade", "the owner's, not MigrateKit's");
      blocked = {{"name", vm.name}, {"instance_uuid", vm.instance_uuid}};
    }
    session.reset();

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
                {"vms", vms},
                {"blocked_vm", blocked}};
    if (sshd) {
      out["sshd"] = {{"port", sshd->port()}, {"pid", sshd->pid()}, {"host_key_file", sshd->host_public_key_file()},
                     {"log", sshd->log_path()}};
    }
    mk::write_private_file(o.out, out.dump(2) + "\n");  // a poller sees it whole or not at all
    std::cerr << "mk-lab: vSphere lab at " << lab.url() << " with " << o.vms << " VM(s); details in " << o.out
              << "; Ctrl-C stops it\n";
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

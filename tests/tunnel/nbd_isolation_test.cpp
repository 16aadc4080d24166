// NBD isolation between VMAs (issue 13, finding 3) on the OMA's one NBD port: the real
// migratekit-nbd-router in front of one real nbdkit per approved VMA, real libnbd
// clients with each paired VMA's own PSK, and the real migratekit binary copying.
// A VMA's key lists and opens only the exports of the VMs assigned to it; unknown,
// pending and wrong keys get nothing; revoking a VMA ends its running copy within
// seconds while another VMA's copy goes on, and its bytes never reach another VMA's disk.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <libnbd.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "common/endpoint.h"
#include "oma/exports/vma_isolated_exports.h"
#include "support/files.h"
#include "support/migratekit_runner.h"
#include "support/nbdkit_server.h"
#include "tunnel_lab.h"

namespace mk::tunnel_test {
namespace {

using nlohmann::json;

constexpr const char* kVmA = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b00a1";
constexpr const char* kVmB = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b00b1";
std::string export_of(const std::string& vm) { return "migration-vm-" + vm + "-disk0"; }

// Bytes the file system holds for `path` (a sparse target grows as a copy writes it).
uint64_t allocated_bytes(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

struct NbdClose {
  void operator()(nbd_handle* h) const { nbd_close(h); }
};
using Nbd = std::unique_ptr<nbd_handle, NbdClose>;

// A libnbd handle for 127.0.0.1:port with TLS required and the first identity of
// `psk_file` (as the copy engine uses it), in option mode when `list`.
Nbd connect(int port, const std::string& psk_file, const std::string& export_name, bool list, std::string& err) {
  Nbd h(nbd_create());
  nbd_set_tls(h.get(), LIBNBD_TLS_REQUIRE);
  nbd_set_tls_psk_file(h.get(), psk_file.c_str());
  nbd_set_tls_username(h.get(), mk::first_psk_identity(psk_file).c_str());
  nbd_set_export_name(h.get(), export_name.c_str());
  if (list) nbd_set_opt_mode(h.get(), true);
  if (nbd_connect_tcp(h.get(), "127.0.0.1", std::to_string(port).c_str()) == -1) {
    err = nbd_get_error() ? nbd_get_error() : "connect failed";
    return nullptr;
  }
  return h;
}

// "" when `export_name` opens with `psk_file`'s key, else libnbd's error.
std::string open_error(int port, const std::string& psk_file, const std::string& export_name) {
  std::string err;
  Nbd h = connect(port, psk_file, export_name, false, err);
  if (!h) return err.empty() ? "refused" : err;
  if (nbd_get_size(h.get()) < 0) return nbd_get_error();
  return "";
}

int collect(void* user, const char* name, const char*) {
  static_cast<std::vector<std::string>*>(user)->push_back(name);
  return 0;
}

// The exports `psk_file`'s key lists (NBD_OPT_LIST), or nullopt with `err` set.
std::optional<std::vector<std::string>> list_exports(int port, const std::string& psk_file, std::string& err) {
  Nbd h = connect(port, psk_file, "", true, err);
  if (!h) return std::nullopt;
  std::vector<std::string> names;
  if (nbd_opt_list(h.get(), nbd_list_callback{collect, &names, nullptr}) == -1) {
    err = nbd_get_error();
    return std::nullopt;
  }
  nbd_opt_abort(h.get());
  std::sort(names.begin(), names.end());
  return names;
}

struct NbdIsolation : ::testing::Test {
  TunnelLab lab;
  mk::test::TempDir dir{"mk-nbd-isolation"};
  std::unique_ptr<Vma> a = lab.make_vma("site-a", true, false, false);
  std::unique_ptr<Vma> b = lab.make_vma("site-b", true, false, false);

  int port() { return lab.oma().export_server().port(); }
  std::string target(const std::string& vm) { return dir.file(vm + ".img"); }

  // The VM (one disk) assigned to `vma`, its export published on a fresh sparse file.
  void add_vm(const std::string& vm, const Vma& vma, uint64_t size) {
    json body = {{"vm_id", vm}, {"name", "vm"}, {"vcenter", "vc"}, {"datacenter", "dc"}, {"cpus", 1},
                 {"memory_mb", 512}, {"vma_id", vma.paired.vma_id},
                 {"disks", json::array({{{"key", "2000"}, {"unit", 0}, {"capacity_bytes", size}}})}};
    Reply r = http("POST", lab.api_port(), "/api/v1/vms", lab.admin(), body.dump());
    ASSERT_EQ(r.status, 201) << r.raw;
    mk::test::create_sparse_file(target(vm), size);
    lab.oma().export_server().publish(export_of(vm), target(vm));
  }
  std::string oma_psk() { return lab.oma().export_server().endpoint(export_of(kVmA)).tls.psk_file; }
};

TEST_F(NbdIsolation, EachVmasKeyListsAndOpensOnlyItsOwnVmsExports) {
  add_vm(kVmA, *a, 4 << 20);
  add_vm(kVmB, *b, 4 << 20);
  std::string err;
  auto listed_a = list_exports(port(), a->paired.psk_file(), err);
  ASSERT_TRUE(listed_a) << err;
  EXPECT_EQ(*listed_a, std::vector<std::string>{export_of(kVmA)});
  auto listed_b = list_exports(port(), b->paired.psk_file(), err);
  ASSERT_TRUE(listed_b) << err;
  EXPECT_EQ(*listed_b, std::vector<std::string>{export_of(kVmB)});

  EXPECT_EQ(open_error(port(), a->paired.psk_file(), export_of(kVmA)), "");
  EXPECT_EQ(open_error(port(), b->paired.psk_file(), export_of(kVmB)), "");
  EXPECT_NE(open_error(port(), a->paired.psk_file(), export_of(kVmB)), "") << "VMA a opened VMA b's disk";
  EXPECT_NE(open_error(port(), b->paired.psk_file(), export_of(kVmA)), "") << "VMA b opened VMA a's disk";
  // The OMA's own key (its export checks, a default VMA) still reaches every export.
  auto listed_oma = list_exports(port(), oma_psk(), err);
  ASSERT_TRUE(listed_oma) << err;
  EXPECT_EQ(*listed_oma, (std::vector<std::string>{export_of(kVmA), export_of(kVmB)}));
  // An export published later for a VMA's VM is served to that VMA at once.
  const char* vm_a2 = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b00a2";
  add_vm(vm_a2, *a, 1 << 20);
  EXPECT_EQ(open_error(port(), a->paired.psk_file(), export_of(vm_a2)), "");
  EXPECT_NE(open_error(port(), b->paired.psk_file(), export_of(vm_a2)), "");
}

TEST_F(NbdIsolation, UnknownPendingAndWrongKeysAreRefused) {
  add_vm(kVmA, *a, 4 << 20);
  // An identity no VMA has.
  std::string unknown = mk::test::make_psk_file(dir.file("unknown.keys"), "vma-00000000deadbeef");
  EXPECT_NE(open_error(port(), unknown, export_of(kVmA)), "");
  std::string err;
  EXPECT_FALSE(list_exports(port(), unknown, err));
  // VMA a's identity with another key: its nbdkit refuses the TLS handshake.
  std::string forged = mk::test::make_psk_file(dir.file("forged.keys"), mk::first_psk_identity(a->paired.psk_file()));
  EXPECT_NE(open_error(port(), forged, export_of(kVmA)), "");
  // A pending VMA has no server yet; approved, it has one (serving none of a's VMs).
  auto c = lab.make_vma("site-c", /*approve=*/false, false, false);
  EXPECT_NE(open_error(port(), c->paired.psk_file(), export_of(kVmA)), "");
  EXPECT_FALSE(list_exports(port(), c->paired.psk_file(), err));
  lab.approve(c->paired.vma_id);
  auto listed = list_exports(port(), c->paired.psk_file(), err);
  ASSERT_TRUE(listed) << err;
  EXPECT_TRUE(listed->empty());
  EXPECT_NE(open_error(port(), c->paired.psk_file(), export_of(kVmA)), "");
  // The VMAs' keys are no longer in the OMA's own PSK file.
  std::string oma_keys = mk::test::read_file(oma_psk());
  EXPECT_EQ(oma_keys.find("vma-"), std::string::npos) << "the OMA's PSK file holds a VMA's key";
}

TEST_F(NbdIsolation, RevocationEndsThatVmasCopyWithinSecondsAndNotAnotherVmas) {
  const uint64_t size_a = 256 << 20, size_b = 48 << 20;
  add_vm(kVmA, *a, size_a);
  add_vm(kVmB, *b, size_b);
  // Sources that take a while: random data, read at 8 MB/s (the rate filter counts bits).
  mk::test::NbdkitServer src_a({.plugin = "random", .args = {fmt::format("size={}", size_a), "seed=1", "rate=64M"},
                                .filters = {"rate"}, .read_only = true});
  mk::test::NbdkitServer src_b({.plugin = "random", .args = {fmt::format("size={}", size_b), "seed=2", "rate=64M"},
                                .filters = {"rate"}, .read_only = true});
  auto copy = [&](const Vma& vma, const std::string& src, const std::string& vm, const std::string& log) {
    return mk::test::start_migratekit({"copy", src, fmt::format("nbds://127.0.0.1:{}/{}", port(), export_of(vm)),
                                       "--target-tls-psk", vma.paired.psk_file(), "--verify"},
                                      log, log);
  };
  Subprocess copy_a = copy(*a, src_a.uri(), kVmA, dir.file("copy-a.log"));
  Subprocess copy_b = copy(*b, src_b.uri(), kVmB, dir.file("copy-b.log"));
  // Both copies move bytes.
  auto allocated = [&](const std::string& vm) { return allocated_bytes(target(vm)) > (1 << 20); };
  ASSERT_TRUE(eventually([&] { return allocated(kVmA) && allocated(kVmB); }, std::chrono::seconds(60)))
      << mk::test::read_file(dir.file("copy-a.log")) << mk::test::read_file(dir.file("copy-b.log"));
  ASSERT_TRUE(copy_a.running() && copy_b.running());
  pid_t b_server = dynamic_cast<oma::VmaIsolatedExports&>(lab.oma().export_server()).vma_server_pid(b->paired.vma_id);

  auto revoked_at = std::chrono::steady_clock::now();
  Reply r = http("POST", lab.api_port(), "/api/v1/vmas/" + a->paired.vma_id + "/revoke", lab.admin());
  ASSERT_EQ(r.status, 200) << r.raw;
  // VMA a's copy fails (its connections end with its nbdkit; reconnecting is refused).
  ASSERT_TRUE(eventually([&] { return !copy_a.running(); }, std::chrono::seconds(30)))
      << "VMA a's copy still runs after its revocation";
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - revoked_at);
  EXPECT_NE(copy_a.wait(), 0) << mk::test::read_file(dir.file("copy-a.log"));
  std::cout << "VMA a's copy ended " << took.count() << " ms after its revocation\n";
  EXPECT_LT(took, std::chrono::seconds(15)) << "a revoked VMA's copy must end within seconds";
  uint64_t a_bytes = allocated_bytes(target(kVmA));
  // VMA b's copy goes on, on the same nbdkit, and its disk holds exactly its source.
  EXPECT_EQ(copy_b.wait(), 0) << mk::test::read_file(dir.file("copy-b.log"));
  EXPECT_EQ(dynamic_cast<oma::VmaIsolatedExports&>(lab.oma().export_server()).vma_server_pid(b->paired.vma_id),
            b_server);
  // (--verify compared b's target with b's source: none of a's bytes are on it.)
  // VMA a's key opens nothing any more, and its disk got nothing more.
  EXPECT_NE(open_error(port(), a->paired.psk_file(), export_of(kVmA)), "");
  EXPECT_NE(open_error(port(), a->paired.psk_file(), export_of(kVmB)), "");
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_EQ(allocated_bytes(target(kVmA)), a_bytes);
}

}  // namespace
}  // namespace mk::tunnel_test

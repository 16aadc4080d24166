// Full copies between nbdkit file exports: disk shapes (dense, sparse, all-zero, odd
// size), reused and fresh targets, and TLS with pre-shared keys.
#include "common/subprocess.h"
#include "copy_fixture.h"
#include "support/qemu_nbd_server.h"
#include "support/x509.h"

#include <filesystem>

namespace mk::test {
namespace {

using mk::MiB;

class CopyFull : public CopyTest {
 protected:
  // Copies `source` to a fresh sparse target of the same size and checks byte equality.
  void copy_to_fresh_target(const std::string& source, std::vector<std::string> extra = {}) {
    std::string target = file("target.img");
    create_sparse_file(target, file_size(source));
    RunResult r = copy(serve(source).uri(), serve(target).uri(), extra);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_TRUE(files_identical(source, target));
  }
};

TEST_F(CopyFull, DenseDisk) {
  std::string source = file("source.img");
  write_random_at(source, 0, 4 * MiB, 7);
  copy_to_fresh_target(source);
}

TEST_F(CopyFull, SparseDiskWithDataAtBothEnds) {
  std::string source = make_disk("source.img", 8 * MiB,
                                 {{0, 4096}, {1 * MiB + 512, 100000}, {3 * MiB, 1 * MiB}, {8 * MiB - 4096, 4096}});
  copy_to_fresh_target(source);
}

TEST_F(CopyFull, AllZeroDisk) {
  std::string source = file("source.img");
  create_sparse_file(source, 4 * MiB);
  // Allocated zeros too, not only a hole: they must also come out as zeros.
  fill_at(source, 1 * MiB, 1 * MiB, '\0');
  std::string target = file("target.img");
  fill_at(target, 0, 4 * MiB, '\x5a');  // a reused target: every byte must become zero
  RunResult r = copy(serve(source).uri(), serve(target).uri());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source, target));
}

TEST_F(CopyFull, UnalignedSizeDense) {
  std::string source = file("source.img");
  write_random_at(source, 0, kOddSize, 11);
  copy_to_fresh_target(source);
}

TEST_F(CopyFull, UnalignedSizeSparseWithLastByteSet) {
  std::string source = make_disk("source.img", kOddSize, {{70000, 5000}, {2 * MiB, 65536}});
  write_at(source, kOddSize - 1, "\x7f");
  copy_to_fresh_target(source, {"--target-is-zero"});
}

TEST_F(CopyFull, ManyRequestsInFlightAndTwoConnections) {
  std::string source = make_disk("source.img", kOddSize, {{0, 3 * MiB}, {4 * MiB, 1 * MiB + 1234}});
  copy_to_fresh_target(source, {"--requests", "64", "--connections", "2"});
}

TEST_F(CopyFull, OverTcpLoopback) {
  std::string source = make_disk("source.img", kOddSize, {{0, 1 * MiB}, {2 * MiB + 5, 3 * MiB}});
  std::string target = file("target.img");
  create_sparse_file(target, kOddSize);
  NbdkitServer& src = serve(source, {.tcp = true});
  NbdkitServer& dst = serve(target, {.tcp = true});
  ASSERT_EQ(src.uri().rfind("nbd://127.0.0.1:", 0), 0u) << src.uri();
  RunResult r = copy(src.uri(), dst.uri(), {"--target-is-zero"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source, target));
}

TEST_F(CopyFull, TinyAndEmptyDisks) {
  for (uint64_t size : {0, 1, 1000, 4095}) {
    std::string source = file("source.img"), target = file("target.img");
    create_sparse_file(source, 0);
    write_random_at(source, 0, size, size);
    create_sparse_file(target, 0);
    fill_at(target, 0, size, 'T');
    RunResult r = copy(serve(source).uri(), serve(target).uri(), {"--verify"});
    ASSERT_EQ(r.exit_code, 0) << size << " bytes: " << describe(r);
    EXPECT_TRUE(files_identical(source, target)) << size << " bytes";
  }
}

// Bytes of a larger target past the end of the source are not the copy's business.
TEST_F(CopyFull, LargerTargetKeepsItsTail) {
  std::string source = make_disk("source.img", kOddSize, {{0, kOddSize}});
  std::string target = file("target.img");
  write_random_at(target, 0, 8 * MiB, 21);
  std::string tail = read_at(target, kOddSize, 8 * MiB - kOddSize);
  RunResult r = copy(serve(source).uri(), serve(target).uri(), {"--verify"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(read_at(target, 0, kOddSize), read_file(source));
  EXPECT_EQ(read_at(target, kOddSize, 8 * MiB - kOddSize), tail);
}

// A source that reports no block status (nbdkit's noextents filter) is all data: the
// copy reads everything, and zero blocks still come out as zeros.
TEST_F(CopyFull, SourceWithoutBlockStatus) {
  std::string source = make_disk("source.img", kOddSize, {{1 * MiB, 1 * MiB}});
  std::string target = file("target.img");
  write_random_at(target, 0, kOddSize, 8);
  std::string progress = file("progress.json");
  RunResult r = copy(serve(source, {.filters = {"noextents"}}).uri(), serve(target).uri(),
                     {"--progress-json", progress});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source, target));
  std::string text = read_file(progress);
  nlohmann::json last = nlohmann::json::parse(text.substr(text.rfind('\n', text.size() - 2) + 1));
  EXPECT_EQ(last["bytes_total"].get<uint64_t>(), kOddSize) << last.dump();
}

// NBD lengths are 32-bit: block status, write-zeroes and planning must all split a
// disk larger than 4 GiB. Sparse files keep this test at a few KiB of real data.
TEST_F(CopyFull, DiskLargerThan4GiB) {
  const uint64_t size = 5 * mk::GiB + 4096, four_gib = 4 * mk::GiB;
  std::string source = make_disk("source.img", size, {{0, 4096}, {four_gib - 4096, 8192}, {size - 4096, 4096}});
  std::string target = file("target.img");
  create_sparse_file(target, size);
  // Garbage where the source has holes, on both sides of 4 GiB and near the end.
  for (uint64_t at : {uint64_t{1} << 20, four_gib + 65536, size - 65536}) write_random_at(target, at, 4096, at);
  std::string progress = file("progress.json");
  RunResult r = run_migratekit({"copy", serve(source).uri(), serve(target).uri(), "--progress-json", progress});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source, target));
  std::string text = read_file(progress);
  nlohmann::json last = nlohmann::json::parse(text.substr(text.rfind('\n', text.size() - 2) + 1));
  EXPECT_EQ(last["bytes_done"].get<uint64_t>(), size) << last.dump();
}

// Hundreds of extents: the plan needs many block-status replies. Served by nbdkit and
// by qemu-nbd (raw), whose replies differ in how many extents they carry.
TEST_F(CopyFull, ManySmallExtents) {
  // 256 extents; more make deleting the copied image slow on ext4 (seconds per file).
  const uint64_t size = 4 * MiB;
  std::vector<Area> data;
  for (uint64_t at = 0; at < size; at += 16384) data.push_back({at, 8192});
  std::string source = make_disk("source.img", size, data);
  for (bool qemu : {false, true}) {
    std::string target = file(qemu ? "target-qemu.img" : "target-nbdkit.img");
    create_sparse_file(target, size);
    std::unique_ptr<QemuNbdServer> qemu_server;
    std::string source_uri;
    if (qemu) {
      qemu_server = std::make_unique<QemuNbdServer>(QemuNbdOptions{.image = source, .format = "raw"});
      source_uri = qemu_server->uri();
    } else {
      source_uri = serve(source).uri();
    }
    std::string progress = file("progress.json");
    RunResult r = copy(source_uri, serve(target).uri(), {"--target-is-zero", "--progress-json", progress});
    ASSERT_EQ(r.exit_code, 0) << (qemu ? "qemu-nbd: " : "nbdkit: ") << describe(r);
    EXPECT_TRUE(files_identical(source, target)) << (qemu ? "qemu-nbd" : "nbdkit");
    std::string text = read_file(progress);
    nlohmann::json last = nlohmann::json::parse(text.substr(text.rfind('\n', text.size() - 2) + 1));
    EXPECT_EQ(last["bytes_total"].get<uint64_t>(), size / 2) << (qemu ? "qemu-nbd: " : "nbdkit: ") << last.dump();
  }
}

// qemu-nbd as the target, writing a qcow2 image (a KVM destination): another server's
// block-size constraints, write-zeroes and flush. Compared through a raw conversion.
TEST_F(CopyFull, IntoQcow2ServedByQemuNbd) {
  const uint64_t size = 5 * MiB + 512;
  std::string source = make_disk("source.img", size, {{0, 100000}, {2 * MiB, 1 * MiB}, {size - 512, 512}});
  fill_at(source, 4 * MiB, 64 * 1024, '\0');
  std::string image = file("target.qcow2"), raw = file("target.raw");
  std::string out;
  ASSERT_EQ(mk::run_capture({"qemu-img", "create", "-q", "-f", "qcow2", image, std::to_string(size)}, out), 0);
  {
    QemuNbdServer target({.image = image, .read_only = false});
    RunResult r = copy(serve(source).uri(), target.uri(), {"--verify"});
    ASSERT_EQ(r.exit_code, 0) << describe(r) << read_file(target.log_path());
  }  // qemu-nbd stopped: the image is closed and consistent
  ASSERT_EQ(mk::run_capture({"qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw}, out), 0);
  EXPECT_TRUE(files_identical(source, raw));
}

class CopyReusedTarget : public CopyTest {};

// A reused target holds garbage: without --target-is-zero every zero or hole range of
// the source must be zeroed on it.
TEST_F(CopyReusedTarget, GarbageTargetIsZeroedWhereTheSourceIsZero) {
  std::string source = make_disk("source.img", kOddSize, {{1 * MiB, 1 * MiB}, {3 * MiB + 100, 200}});
  fill_at(source, 4 * MiB, 64 * 1024, '\0');  // allocated zeros
  std::string target = file("target.img");
  write_random_at(target, 0, kOddSize, 99);
  RunResult r = copy(serve(source).uri(), serve(target).uri());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source, target));
}

TEST_F(CopyReusedTarget, TargetIsZeroOnAFreshTargetIsIdentical) {
  std::string source = make_disk("source.img", kOddSize, {{1 * MiB, 1 * MiB}, {3 * MiB + 100, 200}});
  std::string target = file("target.img");
  create_sparse_file(target, kOddSize);
  RunResult r = copy(serve(source).uri(), serve(target).uri(), {"--target-is-zero"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source, target));
}

// The converse, showing that --target-is-zero really skips the holes: on a garbage
// target they keep their garbage while the data is copied.
TEST_F(CopyReusedTarget, TargetIsZeroSkipsHolesSoGarbageStays) {
  std::string source = make_disk("source.img", 4 * MiB, {{1 * MiB, 1 * MiB}});
  std::string target = file("target.img");
  write_random_at(target, 0, 4 * MiB, 5);
  std::string before = read_file(target);
  RunResult r = copy(serve(source).uri(), serve(target).uri(), {"--target-is-zero"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::string after = read_file(target);
  EXPECT_EQ(after.substr(1 * MiB, 1 * MiB), read_at(source, 1 * MiB, 1 * MiB));
  EXPECT_EQ(after.substr(0, 1 * MiB), before.substr(0, 1 * MiB));
  EXPECT_EQ(after.substr(2 * MiB), before.substr(2 * MiB));
}

class CopyTls : public CopyTest {};

TEST_F(CopyTls, PskOnBothEnds) {
  std::string source = make_disk("source.img", kOddSize, {{0, 1 * MiB}, {3 * MiB, 123456}});
  std::string target = file("target.img");
  write_random_at(target, 0, kOddSize, 3);
  std::string src_psk = make_psk_file(file("source.psk"), "vma");
  std::string dst_psk = make_psk_file(file("target.psk"), "oma");
  NbdkitServer& src = serve(source, {.tls_psk_file = src_psk});
  NbdkitServer& dst = serve(target, {.tls_psk_file = dst_psk});
  ASSERT_EQ(src.uri().rfind("nbds+unix://", 0), 0u);
  RunResult r = copy(src.uri(), dst.uri(), {"--source-tls-psk", src_psk, "--target-tls-psk", dst_psk, "--verify"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source, target));
  // The keys never show in the output.
  for (const std::string& psk : {read_file(src_psk), read_file(dst_psk)}) {
    std::string key = psk.substr(psk.find(':') + 1, 64);
    EXPECT_EQ(r.out.find(key), std::string::npos);
    EXPECT_EQ(r.err.find(key), std::string::npos);
  }
}

TEST_F(CopyTls, PskOverTcpLoopback) {
  std::string source = make_disk("source.img", 2 * MiB, {{0, 2 * MiB}});
  std::string target = file("target.img");
  create_sparse_file(target, 2 * MiB);
  std::string psk = make_psk_file(file("keys.psk"), "vma");
  NbdkitServer& src = serve(source, {.tcp = true, .tls_psk_file = psk});
  NbdkitServer& dst = serve(target, {.tcp = true, .tls_psk_file = psk});
  ASSERT_EQ(dst.uri().rfind("nbds://127.0.0.1:", 0), 0u) << dst.uri();
  RunResult r = copy(src.uri(), dst.uri(), {"--source-tls-psk", psk, "--target-tls-psk", psk});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source, target));
}

TEST_F(CopyTls, VerboseLogsCarryNoKey) {
  std::string source = make_disk("source.img", 1 * MiB, {{0, 1 * MiB}});
  std::string target = file("target.img");
  create_sparse_file(target, 1 * MiB);
  std::string psk = make_psk_file(file("keys.psk"), "vma");
  NbdkitServer& src = serve(source, {.tls_psk_file = psk});
  NbdkitServer& dst = serve(target, {.tls_psk_file = psk});
  RunResult r = run_migratekit({"-v", "copy", src.uri(), dst.uri(), "--source-tls-psk", psk, "--target-tls-psk", psk});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::string text = read_file(psk);
  std::string key = text.substr(text.find(':') + 1, 64);
  EXPECT_EQ(r.out.find(key), std::string::npos);
  EXPECT_EQ(r.err.find(key), std::string::npos);
  EXPECT_TRUE(files_identical(source, target));
}

TEST_F(CopyTls, PlainUriAgainstATlsOnlyServerFails) {
  std::string source = make_disk("source.img", 1 * MiB, {{0, 4096}});
  std::string target = file("target.img");
  fill_at(target, 0, 1 * MiB, 'T');
  std::string psk = make_psk_file(file("keys.psk"), "oma");
  NbdkitServer& dst = serve(target, {.tls_psk_file = psk});
  std::string plain_uri = "nbd+unix:///?socket=" + dst.socket_path();
  RunResult r = copy(serve(source).uri(), plain_uri);
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(plain_uri), std::string::npos) << r.err;
  EXPECT_EQ(read_file(target), std::string(1 * MiB, 'T'));
}

TEST_F(CopyTls, UnknownIdentityIsRefused) {
  std::string source = make_disk("source.img", 1 * MiB, {{0, 4096}});
  std::string target = file("target.img");
  fill_at(target, 0, 1 * MiB, 'T');
  NbdkitServer& dst = serve(target, {.tls_psk_file = make_psk_file(file("server.psk"), "oma")});
  RunResult r = copy(serve(source).uri(), dst.uri(), {"--target-tls-psk", make_psk_file(file("client.psk"), "intruder")});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(dst.uri()), std::string::npos) << r.err;
  EXPECT_EQ(read_file(target), std::string(1 * MiB, 'T'));
}

// X.509: the source on a Unix socket, the target on TCP checking the client's
// certificate (--tls-verify-peer), as an OMA would.
TEST_F(CopyTls, X509CertificatesOnBothEnds) {
  std::string source = make_disk("source.img", kOddSize, {{0, 1 * MiB}, {4 * MiB, 4096}});
  std::string target = file("target.img");
  write_random_at(target, 0, kOddSize, 12);
  std::filesystem::create_directory(file("pki"));
  X509Dirs pki = make_x509_pki(file("pki"));
  NbdkitServer& src = serve(source, {.tls_certificates_dir = pki.server});
  NbdkitServer& dst = serve(target, {.tcp = true, .tls_certificates_dir = pki.server, .tls_verify_peer = true});
  RunResult r = copy(src.uri(), dst.uri(), {"--source-tls-certificates", pki.client, "--target-tls-certificates",
                                            pki.client, "--verify"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source, target));
}

TEST_F(CopyTls, ClientCertificateOfAnotherCaIsRefused) {
  std::string source = make_disk("source.img", 1 * MiB, {{0, 4096}});
  std::string target = file("target.img");
  fill_at(target, 0, 1 * MiB, 'T');
  std::filesystem::create_directory(file("oma-pki"));
  std::filesystem::create_directory(file("other-pki"));
  X509Dirs oma = make_x509_pki(file("oma-pki"));
  X509Dirs other = make_x509_pki(file("other-pki"), "intruder");
  NbdkitServer& dst = serve(target, {.tcp = true, .tls_certificates_dir = oma.server, .tls_verify_peer = true});
  RunResult r = copy(serve(source).uri(), dst.uri(), {"--target-tls-certificates", other.client});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(dst.uri()), std::string::npos) << r.err;
  EXPECT_EQ(read_file(target), std::string(1 * MiB, 'T'));
}

TEST_F(CopyTls, WrongKeyIsRefused) {
  std::string source = make_disk("source.img", 1 * MiB, {{0, 4096}});
  std::string target = file("target.img");
  fill_at(target, 0, 1 * MiB, 'T');
  std::string server_psk = make_psk_file(file("server.psk"), "vma");
  std::string client_psk = make_psk_file(file("client.psk"), "vma");  // same identity, other key
  NbdkitServer& src = serve(source, {.tls_psk_file = server_psk});
  RunResult r = copy(src.uri(), serve(target).uri(), {"--source-tls-psk", client_psk});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(src.uri()), std::string::npos) << r.err;
  EXPECT_EQ(read_file(target), std::string(1 * MiB, 'T'));
}

TEST_F(CopyTls, TlsUriAgainstAPlainServerFails) {
  std::string source = make_disk("source.img", 1 * MiB, {{0, 4096}});
  std::string target = file("target.img");
  fill_at(target, 0, 1 * MiB, 'T');
  std::string psk = make_psk_file(file("client.psk"), "vma");
  NbdkitServer& src = serve(source);
  std::string tls_uri = "nbds+unix:///?socket=" + src.socket_path();
  RunResult r = copy(tls_uri, serve(target).uri(), {"--source-tls-psk", psk});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(tls_uri), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("TLS"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(target), std::string(1 * MiB, 'T'));
}

}  // namespace
}  // namespace mk::test

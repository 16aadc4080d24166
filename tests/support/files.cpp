#include "support/files.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <random>

#include "common/error.h"

namespace mk::test {
namespace {

// An open descriptor closed on scope exit; throws naming the file if open fails.
class Fd {
 public:
  Fd(const std::string& path, int flags, mode_t mode = 0600) : path_(path) {
    fd_ = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    if (fd_ < 0) fail("open");
  }
  ~Fd() { if (fd_ >= 0) ::close(fd_); }
  int get() const { return fd_; }
  [[noreturn]] void fail(const char* what) const {
    throw Error(fmt::format("{}: {}: {}", path_, what, std::strerror(errno)));
  }

 private:
  std::string path_;
  int fd_;
};

void pwrite_all(const Fd& fd, const char* p, size_t n, uint64_t offset) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd.get(), p, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fd.fail("write");
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

// Reads up to `n` bytes at `offset`; fewer only at end of file.
size_t pread_full(const Fd& fd, char* p, size_t n, uint64_t offset) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd.get(), p + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fd.fail("read");
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

std::string hex(const unsigned char* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += fmt::format("{:02x}", p[i]);
  return s;
}

// A write the lab's CBT shim must know of: one "offset length" line appended to the
// file's journal, when the shim keeps one (tests/lab/vcsim/cbt_shim.py), after the data
// is written. One write(2) with O_APPEND, so lines never interleave.
void journal_write(const std::string& path, uint64_t offset, uint64_t length) {
  std::string journal = path + ".cbt-journal";
  int fd = ::open(journal.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return;  // not a disk under change tracking
    throw Error(fmt::format("{}: open: {}", journal, std::strerror(errno)));
  }
  std::string line = fmt::format("{} {}\n", offset, length);
  ssize_t w = ::write(fd, line.data(), line.size());
  int err = errno;
  ::close(fd);
  if (w != static_cast<ssize_t>(line.size())) throw Error(fmt::format("{}: write: {}", journal, std::strerror(err)));
}

}  // namespace

void create_sparse_file(const std::string& path, uint64_t size) {
  struct stat st {};
  uint64_t before = ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  {
    Fd fd(path, O_WRONLY | O_CREAT | O_TRUNC);
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) fd.fail("ftruncate");
  }
  journal_write(path, 0, std::max(before, size));  // every byte may have changed
}

void write_at(const std::string& path, uint64_t offset, const std::string& bytes) {
  {
    Fd fd(path, O_WRONLY | O_CREAT);
    pwrite_all(fd, bytes.data(), bytes.size(), offset);
  }
  journal_write(path, offset, bytes.size());
}

std::string random_bytes(uint64_t length, uint64_t seed) {
  std::mt19937_64 gen(seed * 0x9E3779B97F4A7C15ull + 1);
  std::string s(length, '\0');
  for (uint64_t i = 0; i < length; i += 8) {
    uint64_t v = gen();
    std::memcpy(s.data() + i, &v, std::min<uint64_t>(8, length - i));
  }
  return s;
}

void write_random_at(const std::string& path, uint64_t offset, uint64_t length, uint64_t seed) {
  write_at(path, offset, random_bytes(length, seed));
}

void fill_at(const std::string& path, uint64_t offset, uint64_t length, char byte) {
  write_at(path, offset, std::string(length, byte));
}

int file_mode(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777) : -1;
}

std::string read_at(const std::string& path, uint64_t offset, uint64_t length) {
  Fd fd(path, O_RDONLY);
  std::string s(length, '\0');
  s.resize(pread_full(fd, s.data(), length, offset));
  return s;
}

uint64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error(fmt::format("{}: stat: {}", path, std::strerror(errno)));
  return static_cast<uint64_t>(st.st_size);
}

std::string read_file(const std::string& path) { return read_at(path, 0, file_size(path)); }

std::string read_file_or_empty(const std::string& path) {
  try {
    return read_file(path);
  } catch (const std::exception&) {
    return "";
  }
}

// The next offset >= `offset` holding data, or `size` when only a hole follows. Holes
// read as zeros by definition, so ranges that are holes in both files need no reading:
// this keeps comparisons of large sparse images fast.
uint64_t next_data(const Fd& fd, uint64_t offset, uint64_t size) {
  off_t r = ::lseek(fd.get(), static_cast<off_t>(offset), SEEK_DATA);
  return r < 0 ? size : static_cast<uint64_t>(r);
}

std::optional<uint64_t> first_difference(const std::string& a, const std::string& b) {
  Fd fa(a, O_RDONLY), fb(b, O_RDONLY);
  uint64_t common = std::min(file_size(a), file_size(b));
  constexpr size_t kChunk = 1 << 20;
  std::string ba(kChunk, '\0'), bb(kChunk, '\0');
  for (uint64_t off = 0; off < common;) {
    off = std::max(off, std::min(next_data(fa, off, common), next_data(fb, off, common)));
    if (off >= common) break;
    size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, common - off));
    if (pread_full(fa, ba.data(), n, off) != n || pread_full(fb, bb.data(), n, off) != n) {
      throw Error(fmt::format("{} or {} shrank while being compared", a, b));
    }
    if (std::memcmp(ba.data(), bb.data(), n) != 0) {
      for (size_t i = 0; i < n; ++i) if (ba[i] != bb[i]) return off + i;
    }
    off += n;
  }
  return std::nullopt;
}

::testing::AssertionResult files_identical(const std::string& a, const std::string& b) {
  uint64_t sa = file_size(a), sb = file_size(b);
  if (auto d = first_difference(a, b)) {
    auto byte = [](const std::string& p, uint64_t o) { return static_cast<unsigned char>(read_at(p, o, 1)[0]); };
    return ::testing::AssertionFailure()
           << a << " and " << b << " differ first at offset " << *d << " (0x" << std::hex << byte(a, *d)
           << " vs 0x" << byte(b, *d) << std::dec << "); sizes " << sa << " and " << sb;
  }
  if (sa != sb) {
    return ::testing::AssertionFailure() << a << " (" << sa << " bytes) and " << b << " (" << sb
                                         << " bytes) have different sizes; the common part is identical";
  }
  return ::testing::AssertionSuccess();
}

std::string sha256_file(const std::string& path) {
  Fd fd(path, O_RDONLY);
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    throw Error(fmt::format("{}: cannot start SHA-256 (OpenSSL)", path));
  }
  std::string buf(1 << 20, '\0');
  uint64_t off = 0;
  for (size_t n; (n = pread_full(fd, buf.data(), buf.size(), off)) > 0; off += n) {
    EVP_DigestUpdate(ctx.get(), buf.data(), n);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  return hex(md, len);
}

std::string make_psk_file(const std::string& path, const std::string& identity) {
  if (identity.empty() || identity.find_first_of(":\n") != std::string::npos) {
    throw Error(fmt::format("make_psk_file {}: identity \"{}\" must be non-empty without ':' or newline", path,
                            identity));
  }
  unsigned char key[32];
  if (getrandom(key, sizeof key, 0) != static_cast<ssize_t>(sizeof key)) {
    throw Error(fmt::format("make_psk_file {}: getrandom: {}", path, std::strerror(errno)));
  }
  Fd fd(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (::fchmod(fd.get(), 0600) != 0) fd.fail("chmod 0600");  // an existing file keeps its mode otherwise
  std::string line = identity + ":" + hex(key, sizeof key) + "\n";
  pwrite_all(fd, line.data(), line.size(), 0);
  return path;
}

}  // namespace mk::test

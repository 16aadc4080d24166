// bench/seq_baseline: the sequential incremental copy that bench/copy measures migratekit
// against.
//
//   seq_baseline SOURCE_URI TARGET_URI CHANGED_AREAS_JSON
//
// It does what vexxhost's migratekit does for an incremental pass: for each changed area,
// in the order given, a synchronous nbd_pread of up to 64 MiB followed by a synchronous
// nbd_pwrite of the same bytes, one request in flight at a time, no zero detection, and one
// flush at the end. It is deliberately naive: it is the "before" of the benchmark, so it
// must not borrow any of the engine's tricks (pipelining, block status, zero detection).
#include <libnbd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr uint64_t kMaxRequest = 64ull << 20;  // vexxhost reads at most 64 MiB per call

struct Area {
  uint64_t start, length;
};

// A libnbd failure as an exception that says which call and which server failed.
[[noreturn]] void fail(const std::string& what) {
  const char* err = nbd_get_error();
  throw std::runtime_error(what + ": " + (err ? err : "unknown libnbd error"));
}

using Handle = std::unique_ptr<nbd_handle, void (*)(nbd_handle*)>;

Handle connect(const std::string& uri) {
  Handle h(nbd_create(), nbd_close);
  if (!h) fail("nbd_create");
  if (nbd_connect_uri(h.get(), uri.c_str()) == -1) fail("connect " + uri);
  return h;
}

// The file's [{"start":N,"length":N},...] list, kept in file order (vexxhost does not
// sort or merge what vSphere returns).
std::vector<Area> load_areas(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open changed areas file " + path);
  std::stringstream text;
  text << in.rdbuf();
  auto doc = nlohmann::json::parse(text.str());
  std::vector<Area> areas;
  for (const auto& item : doc) {
    areas.push_back({item.at("start").get<uint64_t>(), item.at("length").get<uint64_t>()});
  }
  return areas;
}

// The server may advertise a smaller maximum request than 64 MiB; honour it as any
// correct client must.
uint64_t request_limit(nbd_handle* h) {
  int64_t max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
  if (max > 0 && static_cast<uint64_t>(max) < kMaxRequest) return static_cast<uint64_t>(max);
  return kMaxRequest;
}

uint64_t copy_areas(nbd_handle* src, nbd_handle* dst, const std::vector<Area>& areas) {
  uint64_t limit = std::min(request_limit(src), request_limit(dst));
  // Not value-initialised: only the bytes a request uses are ever touched.
  auto buf = std::make_unique_for_overwrite<char[]>(limit);
  uint64_t copied = 0;
  for (const Area& a : areas) {
    for (uint64_t off = a.start; off < a.start + a.length;) {
      uint64_t n = std::min(limit, a.start + a.length - off);
      if (nbd_pread(src, buf.get(), n, off, 0) == -1) fail("read at " + std::to_string(off));
      if (nbd_pwrite(dst, buf.get(), n, off, 0) == -1) fail("write at " + std::to_string(off));
      off += n;
      copied += n;
    }
  }
  return copied;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: seq_baseline SOURCE_URI TARGET_URI CHANGED_AREAS_JSON\n");
    return 2;
  }
  try {
    auto areas = load_areas(argv[3]);
    Handle src = connect(argv[1]);
    Handle dst = connect(argv[2]);
    copy_areas(src.get(), dst.get(), areas);
    if (nbd_flush(dst.get(), 0) == -1) fail("flush target");
    nbd_shutdown(dst.get(), 0);
    nbd_shutdown(src.get(), 0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "seq_baseline: %s\n", e.what());
    return 1;
  }
  return 0;
}

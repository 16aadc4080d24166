#include "engine/nbd_connection.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace mk::engine {
namespace {

std::string libnbd_error() {
  const char* msg = nbd_get_error();
  if (msg && *msg) return msg;
  int err = nbd_get_errno();
  return err ? std::strerror(err) : "unknown error";
}

// True when the URI names a user for TLS (nbds://user@host/...).
bool uri_has_user(const std::string& uri) {
  auto scheme_end = uri.find("://");
  if (scheme_end == std::string::npos) return false;
  auto authority_end = uri.find_first_of("/?", scheme_end + 3);
  std::string authority = uri.substr(scheme_end + 3, authority_end - (scheme_end + 3));
  return authority.find('@') != std::string::npos;
}

}  // namespace

std::unique_ptr<NbdConnection> NbdConnection::open(const Endpoint& endpoint,
                                                   const std::vector<std::string>& meta_contexts) {
  nbd_handle* h = nbd_create();
  if (!h) throw Error(fmt::format("{}: cannot create an NBD handle: {}", endpoint.describe(), libnbd_error()));
  std::unique_ptr<NbdConnection> conn(new NbdConnection(h, endpoint));

  // Identify ourselves in the server's logs, and let libnbd check the server more strictly.
  nbd_set_handle_name(h, endpoint.role.empty() ? "migratekit" : endpoint.role.c_str());
  // The URI comes from the operator, who may name a PSK file or socket in its query.
  nbd_set_uri_allow_local_file(h, true);
#ifdef LIBNBD_HAVE_NBD_SET_PREAD_INITIALIZE
  // libnbd zeroes every read buffer first, in case a caller uses the buffer of a failed
  // read. Ours never does: a failed read throws before its buffer is looked at (see
  // RequestPipeline::completed and pread() below), and libnbd fails a structured read
  // whose data chunks fall short of the request. The zeroing was 2 % of a copy's CPU.
  nbd_set_pread_initialize(h, false);
#endif
  if (endpoint.uses_tls()) {
    if (!endpoint.tls.psk_file.empty()) {
      if (nbd_set_tls_psk_file(h, endpoint.tls.psk_file.c_str()) == -1) conn->fail("TLS PSK file");
      if (!uri_has_user(endpoint.uri)) {
        std::string identity = first_psk_identity(endpoint.tls.psk_file);
        if (nbd_set_tls_username(h, identity.c_str()) == -1) conn->fail("TLS username");
      }
    }
    if (!endpoint.tls.certificates_dir.empty() &&
        nbd_set_tls_certificates(h, endpoint.tls.certificates_dir.c_str()) == -1) {
      conn->fail("TLS certificates directory");
    }
  }
  for (const auto& name : meta_contexts) {
    if (nbd_add_meta_context(h, name.c_str()) == -1) conn->fail("meta context " + name);
  }
  if (nbd_connect_uri(h, endpoint.uri.c_str()) == -1) conn->fail("cannot connect");
  if (endpoint.uses_tls() && nbd_get_tls_negotiated(h) != 1) {
    throw Error(fmt::format("{}: the server did not negotiate TLS", endpoint.describe()));
  }
  int64_t size = nbd_get_size(h);
  if (size < 0) conn->fail("cannot read the export size");
  conn->size_ = static_cast<uint64_t>(size);
  return conn;
}

NbdConnection::~NbdConnection() {
  if (h_) {
    if (nbd_aio_is_ready(h_)) nbd_shutdown(h_, 0);
    nbd_close(h_);
  }
}

bool NbdConnection::can_multi_conn() const { return nbd_can_multi_conn(h_) == 1; }
bool NbdConnection::can_zero() const { return nbd_can_zero(h_) == 1; }
bool NbdConnection::can_flush() const { return nbd_can_flush(h_) == 1; }
bool NbdConnection::read_only() const { return nbd_is_read_only(h_) == 1; }
bool NbdConnection::can_meta_context(const std::string& name) const {
  return nbd_can_meta_context(h_, name.c_str()) == 1;
}

uint64_t NbdConnection::max_request() const {
  constexpr uint64_t fallback = 32 * 1024 * 1024;
  int64_t max = nbd_get_block_size(h_, LIBNBD_SIZE_MAXIMUM);
  if (max <= 0) return fallback;
  return std::min<uint64_t>(static_cast<uint64_t>(max), fallback);
}

void NbdConnection::pread(void* buf, size_t count, uint64_t offset) {
  if (nbd_pread(h_, buf, count, offset, 0) == -1) fail(fmt::format("read of {} bytes at offset {}", count, offset));
}

void NbdConnection::pwrite(const void* buf, size_t count, uint64_t offset) {
  if (nbd_pwrite(h_, buf, count, offset, 0) == -1) fail(fmt::format("write of {} bytes at offset {}", count, offset));
}

void NbdConnection::flush() {
  if (can_flush() && nbd_flush(h_, 0) == -1) fail("flush");
}

void NbdConnection::fail(const std::string& what) const {
  throw Error(fmt::format("{}: {}: {}", endpoint_.describe(), what, libnbd_error()));
}

}  // namespace mk::engine

// One client connection to an NBD export, opened from an NBD URI with libnbd.
//
// An Endpoint (common/endpoint.h) says where to connect and how to authenticate;
// NbdConnection owns one libnbd handle. A connection is used by one thread at a time
// (libnbd handles are thread-safe, but the copy engine gives each worker its own
// handles so that no lock is ever contended). Errors throw mk::Error with the endpoint's name and libnbd's
// message; argument problems (bad scheme, TLS options without TLS) throw UsageError.
#pragma once

#include <libnbd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/endpoint.h"

namespace mk::engine {

class NbdConnection {
 public:
  // Connects and negotiates. `meta_contexts` are requested before the handshake
  // (e.g. "base:allocation", "qemu:dirty-bitmap:NAME"); those the server lacks are
  // simply absent (see can_meta_context). Throws mk::Error if the connection fails.
  static std::unique_ptr<NbdConnection> open(const Endpoint& endpoint,
                                             const std::vector<std::string>& meta_contexts = {});
  ~NbdConnection();
  NbdConnection(const NbdConnection&) = delete;
  NbdConnection& operator=(const NbdConnection&) = delete;

  nbd_handle* handle() const { return h_; }
  const Endpoint& endpoint() const { return endpoint_; }

  uint64_t size() const { return size_; }
  bool can_multi_conn() const;
  bool can_zero() const;
  bool can_flush() const;
  bool can_meta_context(const std::string& name) const;
  bool read_only() const;
  // Largest request the server accepts (from NBD_INFO_BLOCK_SIZE, or 32 MiB when unset).
  uint64_t max_request() const;

  // Synchronous helpers used outside the pipeline (planning, checks). Throw mk::Error.
  void pread(void* buf, size_t count, uint64_t offset);
  void pwrite(const void* buf, size_t count, uint64_t offset);
  void flush();

  // Throws mk::Error "<endpoint>: <what>: <libnbd error>".
  [[noreturn]] void fail(const std::string& what) const;

 private:
  NbdConnection(nbd_handle* h, Endpoint endpoint) : h_(h), endpoint_(std::move(endpoint)) {}

  nbd_handle* h_;
  Endpoint endpoint_;
  uint64_t size_ = 0;
};

}  // namespace mk::engine

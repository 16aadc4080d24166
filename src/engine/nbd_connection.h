// One client connection to an NBD export, opened from an NBD URI with libnbd.
//
// Endpoint describes where to connect and how to authenticate; NbdConnection owns one
// libnbd handle. A connection is used by one thread at a time (libnbd handles are
// thread-safe, but the copy engine gives each worker its own handles so that no lock
// is ever contended). Errors throw mk::Error with the endpoint's name and libnbd's
// message; argument problems (bad scheme, TLS options without TLS) throw UsageError.
#pragma once

#include <libnbd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mk::engine {

struct TlsOptions {
  std::string psk_file;          // PSK keys file ("identity:hexkey" lines), or empty
  std::string certificates_dir;  // X.509 directory (ca-cert.pem, client-cert.pem, ...) or empty
};

struct Endpoint {
  std::string uri;  // nbd://, nbds://, nbd+unix://, nbds+unix://
  TlsOptions tls;
  std::string role;  // "source" or "target": used in messages

  bool uses_tls() const;
  // "source nbd://host:10809/export" for messages (the URI holds no secret).
  std::string describe() const;
};

// Checks the scheme and that TLS options come with a TLS scheme; throws UsageError.
void validate_endpoint(const Endpoint& endpoint);

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

// The first identity in a PSK keys file ("identity:hexkey" per line). Throws UsageError
// if the file cannot be read or holds no identity. The key itself is never returned.
std::string first_psk_identity(const std::string& psk_file);

}  // namespace mk::engine

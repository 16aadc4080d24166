// ExportBackend: the NBD server that serves the OMA's volumes to the VMA, one export
// per source disk, and how an export is added to it.
//
// Two implementations: NbdkitExportServer (the default: one nbdkit in dir= mode; an
// export is a symlink, so adding one never restarts or signals the server) and
// NbdServerExportServer (stock nbd-server: config section + SIGHUP, for sites that
// standardise on it). Export names are checked with is_export_name() before they reach
// a file name or a config file.
//
// A backend owns its server process. Implementations are thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/endpoint.h"

namespace mk::oma {

struct TlsConfig {
  std::string psk_file;          // PSK keys file (identity:hexkey), mode 0600: the default
  std::string certificates_dir;  // X.509 directory instead (ca-cert.pem, server-cert.pem, server-key.pem)
  // X.509: clients must present a certificate from a CA in ca-cert.pem, not on
  // ca-crl.pem (nbdkit --tls-verify-peer; the nbdkit backend only).
  bool verify_peer = false;
};

struct ExportServerConfig {
  std::string exports_dir;                 // where export symlinks (or nbd-server's config) live
  std::string listen_address = "0.0.0.0";  // where the server listens
  int port = 10809;                        // 0: a free port chosen at start (see port())
  TlsConfig tls;                           // required on a TCP port; none: plain NBD on unix_socket
  std::string log_path;                    // the server's stdout/stderr ("" = /dev/null)
  // Keep the server running across restarts of the OMA (nbdkit only): it runs in its own
  // session, is recorded in `record_path` and adopted by the next start; stop() leaves it.
  bool keep_running = false;
  std::string record_path;                 // required with keep_running (DATA/export-server.json)
  // Where the nbdkit backend's written-bytes filter keeps each export's count of durable
  // written bytes (EXPORT.written); "" = EXPORTS_DIR-written. Never inside exports_dir
  // (nbdkit serves every file there).
  std::string written_dir;
  // The filter (nbdkit-written-filter.so); "" = default_written_filter_path().
  std::string written_filter;
  // An OMA node of several (issue 18): the file (absolute path) whose deadline bounds
  // every write of the nbdkit servers (the written filter's lease-file=): the node moves
  // it forward at each renewal of its lease, so a frozen or cut-off node's servers stop
  // writing before another node may take its VMs over. "" = not bound (a single OMA).
  // The nbdkit backend only.
  std::string lease_file;
  // nbdkit listens on this Unix socket instead of listen_address:port (a VMA's own
  // server behind the NBD router; VmaIsolatedExports). The nbdkit backend only.
  std::string unix_socket;
  // The process is the NBD router (migratekit-nbd-router, listening on
  // listen_address:port, routing to SOCKETS/IDENTITY.sock) instead of nbdkit: it is
  // supervised, kept and adopted exactly like nbdkit. exports_dir, tls and the written
  // filter are then unused. The nbdkit backend only.
  std::string router_sockets_dir;
  std::string router_binary;  // "" = default_nbd_router_path()
  // X.509: the router ends TLS with this directory's files (nbd_router.h) and the servers
  // behind it speak plain NBD on their Unix sockets (tls empty; allowed only there).
  std::string router_tls_certificates_dir;
};

class ExportBackend {
 public:
  virtual ~ExportBackend() = default;

  virtual std::string name() const = 0;  // "nbdkit" or "nbd-server"
  // Starts (and from then on supervises) the server. Throws mk::Error if it cannot.
  virtual void start() = 0;
  virtual void stop() = 0;

  // Makes `export_name` serve `device_path` (idempotent: publishing the same pair again
  // changes nothing). Throws UsageError for a name is_export_name() rejects.
  virtual void publish(const std::string& export_name, const std::string& device_path) = 0;
  virtual void unpublish(const std::string& export_name) = 0;
  // Cuts a writer off: unpublishes `export_names` (no new connection finds them) and
  // closes every client connection already open on them; when it returns, nothing
  // writes through those exports until they are published again. How the OMA ends a
  // job whose VMA it cannot reach (see JobManager). Throws mk::Error if it cannot, and
  // then the caller must assume the writer is live.
  virtual void cut_off(const std::vector<std::string>& export_names) = 0;

  // Where a client on this host reaches an export, and with which TLS credentials.
  virtual Endpoint endpoint(const std::string& export_name) const = 0;
  virtual pid_t server_pid() const = 0;
  virtual int port() const = 0;  // the port it listens on (after start)
  virtual int restarts() const = 0;  // times the supervisor restarted a dead server

  // The bytes clients have made durable on `export_name` since it was first served
  // (writes and zeroes followed by a successful flush or sent with FUA; a count kept by
  // the server itself, across server and OMA restarts), or nullopt when this backend
  // cannot count (nbd-server). How the OMA checks what a VMA reports (JobManager).
  // Throws mk::Error when the count exists but cannot be read.
  virtual std::optional<uint64_t> written_bytes(const std::string& export_name) const = 0;
};

}  // namespace mk::oma

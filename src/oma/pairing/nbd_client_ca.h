// NbdClientCa: in X.509 mode, the OMA's own CA for its VMAs' NBD client certificates,
// and the certificates directory its nbdkit reads (with --tls-verify-peer).
//
// The operator gives the NBD server's certificate (`oma --tls-certificates DIR`:
// ca-cert.pem, server-cert.pem, server-key.pem). That directory is only read, and the
// operator's CA key is never needed: on first start the OMA makes a client CA of its own
// in STATE/client-ca/ (ca-key.pem mode 0600) and keeps it. A VMA makes its key and sends
// a certificate request at enrolment; the OMA signs it (CN = the VMA's id, SAN
// URI:urn:uuid:<id>) and keeps the certificate as STATE/issued/<vma_id>.pem. The key
// never leaves the VMA.
//
// STATE/nbdkit/ is the NBD router's --tls-certificates directory (and the OMA's own
// client directory), rewritten by sync():
//   server-cert.pem, server-key.pem  copies of the operator's
//   client-ca.pem the OMA's client CA alone: the only issuer the router trusts for
//                 clients (the operator's CA may have signed certificates of any name)
//   ca-cert.pem   the operator's CA, then the OMA's client CA: what the OMA's own
//                 client (libnbd) trusts for the server
//   ca-crl.pem    the client CA's revocation list: every certificate it issued whose
//                 VMA may not connect (pending, revoked, or unknown to the database)
//   client-cert.pem, client-key.pem  the OMA's own client certificate (CN "oma"), so
//                 that the OMA's checks of its exports (libnbd reads these names) get in
// The router reads these files at every connection. sync() still says whether what a
// server reading them only at start would accept changed (the nbd-server backend's
// caller may restart it).
//
// Owns the files under STATE. Thread-safe (one mutex around them).
#pragma once

#include <mutex>
#include <set>
#include <string>

namespace mk::oma {

class NbdClientCa {
 public:
  // Makes the client CA (and the OMA's own client certificate) if STATE has none, and
  // checks that operator_dir has what nbdkit needs. Throws mk::Error naming the file
  // and what to do.
  NbdClientCa(std::string state_dir, std::string operator_dir);

  // nbdkit's --tls-certificates directory (and the OMA's own client directory).
  std::string nbdkit_dir() const { return state_dir_ + "/nbdkit"; }
  std::string ca_cert_file() const { return state_dir_ + "/client-ca/ca-cert.pem"; }

  // Signs `vma_id`'s client certificate from the PEM request `csr_pem` without storing
  // it (so a refused enrolment leaves nothing). Throws UsageError for a bad request.
  std::string sign(const std::string& vma_id, const std::string& csr_pem) const;
  // Keeps a certificate sign() made (STATE/issued/<vma_id>.pem). Throws mk::Error.
  void store(const std::string& vma_id, const std::string& cert_pem);

  // Rewrites STATE/nbdkit so that, of the certificates this CA issued, only those of
  // `allowed_vma_ids` verify (and the OMA's own). Returns true when what nbdkit accepts
  // changed since the last sync (a file it reads differs, or the set of revoked
  // certificates): nbdkit must then restart. Throws mk::Error.
  bool sync(const std::set<std::string>& allowed_vma_ids);

 private:
  std::string issued_file(const std::string& vma_id) const;

  std::string state_dir_, operator_dir_;
  std::mutex mu_;
};

}  // namespace mk::oma

// NbdClientCa: in X.509 mode, the OMA service's CA for its VMAs' NBD client
// certificates, and the certificates directory its NBD router reads (it verifies clients).
//
// The operator gives the NBD server's certificate (`oma --tls-certificates DIR`:
// ca-cert.pem, server-cert.pem, server-key.pem). That directory is only read, and the
// operator's CA key is never needed: the OMA makes a client CA of its own. A VMA makes
// its key and sends a certificate request at enrolment; the OMA signs it (CN = the VMA's
// id, SAN URI:urn:uuid:<id>) and keeps the certificate. The key never leaves the VMA.
//
// One CA for the whole service (issue 18): the CA and the issued certificates live in
// the database (NbdCaRepository; the CA key sealed with the OMA's SecretBox), so that
// every OMA node of one database signs with it, trusts it and revokes the same
// certificates. At construction the node loads it, or, when the database has none, it
// stores its own: the CA already in STATE/client-ca/ (a single OMA from before, whose
// issued certificates, STATE/issued/<vma_id>.pem, are stored with it and stay valid) or
// a new one; of nodes that start at once the first to store wins and the others take
// its CA. The CA is then written to STATE/client-ca/ (ca-key.pem mode 0600), which
// sign() reads. A node whose STATE holds another CA than the database's (a node given
// its own CA before the CA was shared) takes the database's: its old CA files are kept
// beside as ca-{cert,key}.pem.replaced-<serial>, and the log names every VMA whose
// certificate came from the old CA: such a VMA must be paired again.
//
// STATE/nbdkit/ is the NBD router's --tls-certificates directory (and the OMA's own
// client directory), rewritten by sync():
//   server-cert.pem, server-key.pem  copies of the operator's
//   client-ca.pem the OMA's client CA alone: the only issuer the router trusts for
//                 clients (the operator's CA may have signed certificates of any name)
//   ca-cert.pem   the operator's CA, then the OMA's client CA: what the OMA's own
//                 client (libnbd) trusts for the server
//   ca-crl.pem    the client CA's revocation list: every certificate it issued (on any
//                 node: the database's) whose VMA may not connect (pending, revoked,
//                 or unknown to the database)
//   client-cert.pem, client-key.pem  the OMA's own client certificate (CN "oma"), so
//                 that the OMA's checks of its exports (libnbd reads these names) get in
// The router reads these files at every connection. sync() still says whether what a
// server reading them only at start would accept changed (the nbd-server backend's
// caller may restart it).
//
// Owns the files under STATE and its NbdCaRepository; does not own the Database or the
// SecretBox. Thread-safe (one mutex around the files).
#pragma once

#include <mutex>
#include <set>
#include <string>

#include "oma/crypto.h"
#include "oma/db/database.h"
#include "oma/db/nbd_ca_repository.h"

namespace mk::oma {

class NbdClientCa {
 public:
  // Loads the service's client CA from `db` (or stores this node's, see above), writes it
  // to STATE, makes the OMA's own client certificate if it has none from this CA, and
  // checks that operator_dir has what nbdkit needs. `node_id` ("" for a single OMA) is
  // recorded with a CA this node stores. Throws mk::Error naming the file and what to do.
  NbdClientCa(std::string state_dir, std::string operator_dir, db::Database& db, const SecretBox& secrets,
              std::string node_id);

  // nbdkit's --tls-certificates directory (and the OMA's own client directory).
  std::string nbdkit_dir() const { return state_dir_ + "/nbdkit"; }
  std::string ca_cert_file() const { return state_dir_ + "/client-ca/ca-cert.pem"; }

  // Signs `vma_id`'s client certificate from the PEM request `csr_pem` without storing
  // it (so a refused enrolment leaves nothing). Throws UsageError for a bad request.
  std::string sign(const std::string& vma_id, const std::string& csr_pem) const;
  // Keeps a certificate sign() made, in the database (before the VMA's row is written:
  // every node that sees the VMA lists its certificate). Throws mk::Error.
  void store(const std::string& vma_id, const std::string& cert_pem);
  // Drops what store() kept for an enrolment that then failed.
  void forget(const std::string& vma_id);

  // Rewrites STATE/nbdkit so that, of the certificates this CA issued (the database's),
  // only those of `allowed_vma_ids` verify (and the OMA's own). Returns true when what
  // nbdkit accepts changed since the last sync (a file it reads differs, or the set of
  // revoked certificates): nbdkit must then restart. Throws mk::Error.
  bool sync(const std::set<std::string>& allowed_vma_ids);

 private:
  std::string ca_key_file() const { return state_dir_ + "/client-ca/ca-key.pem"; }
  NbdClientCaRecord new_ca() const;
  void adopt_issued_certificates();
  // Writes the service's CA to STATE/client-ca/ unless it is there; true when it wrote.
  bool install(const NbdClientCaRecord& ca);

  std::string state_dir_, operator_dir_;
  NbdCaRepository shared_;
  const SecretBox& secrets_;
  std::mutex mu_;
};

}  // namespace mk::oma

// NbdCaRepository: the service's NBD client CA in X.509 mode (nbd_client_ca) and the
// client certificates it issued to VMAs (nbd_client_certs), shared by every OMA node of
// the database so that a VMA paired through one node is trusted, and revoked, by all
// (issue 18). NbdClientCa (pairing/nbd_client_ca.h) owns one and is its only user.
//
// One CA per database: the first node stores it (insert_ca_if_absent) and every node,
// including one that raced it with a CA of its own, uses the one stored. The CA's
// private key is kept sealed with the OMA's SecretBox, bound to its row and purpose
// (sealed_values.h: kNbdCaKeyPurpose, row kNbdClientCaName); the caller seals and opens
// it. Certificates are public: kept as PEM, one per VMA id.
//
// Does not own the Database. Thread-safe: each method is one statement or one
// transaction on the thread-safe Database.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "oma/db/database.h"

namespace mk::oma {

// The CA's row name (its key's sealing binding names it).
inline constexpr const char* kNbdClientCaName = "nbd-client";

struct NbdClientCaRecord {
  std::string name = kNbdClientCaName;
  std::string cert_pem;    // the CA certificate
  std::string key_sealed;  // its private key (PEM), sealed
  std::string created_by;  // the node that stored it ("" for a single OMA), for the log
  int64_t created_at = 0;
};

class NbdCaRepository {
 public:
  explicit NbdCaRepository(db::Database& db) : db_(db) {}

  // Stores `candidate` unless the database holds a CA already, and returns the CA it
  // holds now: `candidate`, or the one another node stored first. Safe when several
  // nodes call it at once (the row's primary key decides; a duplicate key or a Galera
  // conflict runs the transaction again, which reads the row stored).
  NbdClientCaRecord insert_ca_if_absent(const NbdClientCaRecord& candidate);
  std::optional<NbdClientCaRecord> find_ca();

  // Keeps the certificate issued to `vma_id` (replacing one it had).
  void put_certificate(const std::string& vma_id, const std::string& cert_pem, int64_t issued_at);
  // Keeps it unless the VMA has one already (adoption of a node's own certificates).
  // Returns whether it was stored.
  bool add_certificate_if_absent(const std::string& vma_id, const std::string& cert_pem, int64_t issued_at);
  void remove_certificate(const std::string& vma_id);
  // Every issued certificate by VMA id.
  std::map<std::string, std::string> certificates();

 private:
  db::Database& db_;
};

}  // namespace mk::oma

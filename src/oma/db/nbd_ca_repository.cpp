#include "oma/db/nbd_ca_repository.h"

#include "oma/db/table.h"

namespace mk::oma {

using db::column;
using db::Table;

namespace {

const Table<NbdClientCaRecord> kCa{"nbd_client_ca", {column("name", &NbdClientCaRecord::name),
    column("cert_pem", &NbdClientCaRecord::cert_pem), column("key_sealed", &NbdClientCaRecord::key_sealed),
    column("created_by", &NbdClientCaRecord::created_by), column("created_at", &NbdClientCaRecord::created_at)}, 1};

void insert_certificate(db::Database& db, const std::string& vma_id, const std::string& pem, int64_t at) {
  db.exec("INSERT INTO nbd_client_certs (vma_id, cert_pem, issued_at) VALUES (?, ?, ?)", {vma_id, pem, at});
}

}  // namespace

NbdClientCaRecord NbdCaRepository::insert_ca_if_absent(const NbdClientCaRecord& candidate) {
  NbdClientCaRecord stored;
  db_.transaction([&] {
    if (!kCa.query_one(db_, "WHERE name = ?", {candidate.name})) {
      try {
        kCa.insert(db_, candidate);
      } catch (const db::ConstraintError&) {
        // Another node stored its CA between our read and our insert: theirs is the CA.
        // This transaction cannot see it (MariaDB reads in the snapshot of its first
        // read), so a new one reads it.
        throw db::RetryableError("another OMA node stored the NBD client CA first; reading that one");
      }
    }
    stored = kCa.query_written(db_, "WHERE name = ?", {candidate.name}, "the NBD client CA");
  });
  return stored;
}

std::optional<NbdClientCaRecord> NbdCaRepository::find_ca() {
  return kCa.query_one(db_, "WHERE name = ?", {std::string(kNbdClientCaName)});
}

void NbdCaRepository::put_certificate(const std::string& vma_id, const std::string& cert_pem, int64_t issued_at) {
  db_.transaction([&] {
    db_.exec("DELETE FROM nbd_client_certs WHERE vma_id = ?", {vma_id});
    insert_certificate(db_, vma_id, cert_pem, issued_at);
  });
}

bool NbdCaRepository::add_certificate_if_absent(const std::string& vma_id, const std::string& cert_pem,
                                                int64_t issued_at) {
  bool added = false;
  db_.transaction([&] {
    added = db_.query("SELECT 1 FROM nbd_client_certs WHERE vma_id = ?", {vma_id}).empty();
    if (added) insert_certificate(db_, vma_id, cert_pem, issued_at);
  });
  return added;
}

void NbdCaRepository::remove_certificate(const std::string& vma_id) {
  db_.exec("DELETE FROM nbd_client_certs WHERE vma_id = ?", {vma_id});
}

std::map<std::string, std::string> NbdCaRepository::certificates() {
  std::map<std::string, std::string> out;
  for (const auto& r : db_.query("SELECT vma_id, cert_pem FROM nbd_client_certs")) out[r.str(0)] = r.str(1);
  return out;
}

}  // namespace mk::oma

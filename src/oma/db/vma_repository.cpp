#include "oma/db/vma_repository.h"

#include <fmt/format.h>

#include <algorithm>

#include "oma/db/sealed_values.h"
#include "oma/db/table.h"
#include "oma/errors.h"

namespace mk::oma {

using db::column;
using db::Table;

const EnumTable<VmaState>& enum_table(VmaState) {
  static const EnumTable<VmaState> t{"VMA state", {{VmaState::Pending, "pending"}, {VmaState::Approved, "approved"},
    {VmaState::Revoked, "revoked"}}};
  return t;
}

namespace {

const Table<VmaRecord> kVmas{"vmas", {column("vma_id", &VmaRecord::vma_id), column("name", &VmaRecord::name),
    column("vcenter", &VmaRecord::vcenter), column("ssh_public_key", &VmaRecord::ssh_public_key),
    column("state", &VmaRecord::state), column("tunnel_port", &VmaRecord::tunnel_port),
    column("api_token_sealed", &VmaRecord::api_token_sealed), column("created_at", &VmaRecord::created_at),
    column("approved_at", &VmaRecord::approved_at), column("revoked_at", &VmaRecord::revoked_at),
    column("nbd_psk_sealed", &VmaRecord::nbd_psk_sealed)}, 1};

const Table<PairingCodeRecord> kPairingCodes{"vma_pairing_codes", {column("code_hash", &PairingCodeRecord::code_hash),
    column("api_token_sealed", &PairingCodeRecord::api_token_sealed),
    column("nbd_psk_sealed", &PairingCodeRecord::nbd_psk_sealed), column("created_at", &PairingCodeRecord::created_at),
    column("expires_at", &PairingCodeRecord::expires_at), column("used_at", &PairingCodeRecord::used_at),
    column("vma_id", &PairingCodeRecord::vma_id)}, 1};

const char* kUsed = "this pairing code was already used (codes are single-use): ask for a new pairing bundle";

// Uses the code for `vma_id` (call inside a transaction); throws Conflict saying why not.
PairingCodeRecord use_code(db::Database& db, const std::string& code_hash, int64_t now, const std::string& vma_id) {
  auto code = kPairingCodes.query_one(db, "WHERE code_hash = ?", {code_hash});
  if (!code) throw Conflict("unknown pairing code: ask the OMA's operator for a new pairing bundle");
  if (code->used_at) throw Conflict(kUsed);
  if (code->expires_at <= now) throw Conflict("this pairing code has expired: ask for a new pairing bundle");
  if (db.exec("UPDATE vma_pairing_codes SET used_at = ?, vma_id = ? WHERE code_hash = ? AND used_at IS NULL",
              {now, vma_id, code_hash}) != 1)
    throw Conflict(kUsed);
  return *code;
}

}  // namespace

void VmaRepository::insert_pairing_code(const PairingCodeRecord& c) {
  PairingCodeRecord row = c;
  row.used_at.reset();
  row.vma_id.reset();
  kPairingCodes.insert(db_, row);
}

VmaRecord VmaRepository::enroll_vma(const std::string& code_hash, int64_t now, VmaRecord vma, int64_t port_base,
                                    const Reseal& reseal) {
  db_.transaction([&] {
    PairingCodeRecord code = use_code(db_, code_hash, now, vma.vma_id);
    auto max = db_.query("SELECT MAX(tunnel_port) FROM vmas");
    int64_t top = max.empty() || max[0].is_null(0) ? 0 : max[0].i64(0);
    vma.tunnel_port = std::max(port_base, top + 1);
    vma.api_token_sealed = reseal(code.api_token_sealed, seal_binding(kCodeTokenPurpose, code_hash),
                                  seal_binding(kVmaTokenPurpose, vma.vma_id));
    vma.nbd_psk_sealed.reset();
    if (code.nbd_psk_sealed) {
      vma.nbd_psk_sealed = reseal(*code.nbd_psk_sealed, seal_binding(kCodePskPurpose, code_hash),
                                  seal_binding(kVmaPskPurpose, vma.vma_id));
    }
    vma.state = VmaState::Pending;
    vma.created_at = now;
    vma.approved_at = vma.revoked_at = std::nullopt;
    kVmas.insert(db_, vma);
  });
  return vma;
}

std::optional<VmaRecord> VmaRepository::find_vma(const std::string& vma_id) {
  return kVmas.query_one(db_, "WHERE vma_id = ?", {vma_id});
}

VmaRecord VmaRepository::get_vma(const std::string& vma_id) {
  return found(find_vma(vma_id), fmt::format("VMA {} is not paired with this OMA (see GET /api/v1/vmas)", vma_id));
}

std::vector<VmaRecord> VmaRepository::list_vmas() { return kVmas.query(db_, "ORDER BY created_at, vma_id"); }

void VmaRepository::set_vma_state(const std::string& vma_id, VmaState state) {
  db_.transaction([&] {
    VmaRecord v = get_vma(vma_id);
    bool ok = (state == VmaState::Approved && v.state == VmaState::Pending) ||
              (state == VmaState::Revoked && v.state != VmaState::Revoked);
    if (!ok) throw Conflict(fmt::format("VMA {} ({}) is {}: it cannot become {}", vma_id, v.name, v.state, state));
    v.state = state;
    (state == VmaState::Approved ? v.approved_at : v.revoked_at) = now_ms();
    kVmas.update(db_, v, {"state", state == VmaState::Approved ? "approved_at" : "revoked_at"});
  });
}

}  // namespace mk::oma

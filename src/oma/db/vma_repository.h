// VmaRepository: the VMAs paired with this OMA (vmas) and the one-time codes that
// enrol them (vma_pairing_codes). src/oma/pairing is its user.
//
// Invariants, each in one transaction:
//  - a pairing code enrols one VMA, before it expires: enroll_vma uses the code (unused,
//    not expired at `now`) and records the VMA, or throws Conflict saying why the code
//    cannot be used and stores nothing;
//  - each VMA gets its own tunnel port, the next free one >= port_base; ports of revoked
//    VMAs stay taken (UNIQUE tunnel_port), so a new VMA never gets a port an old session
//    might still hold;
//  - states only move forward: pending -> approved, pending|approved -> revoked
//    (set_vma_state throws Conflict otherwise).
// The API token and NBD PSK a VMA receives are kept sealed (SecretBox), never in clear.
// Which VMA serves a VM is the VM's (VmRepository::vm_vma).
//
// Does not own the Database. Thread-safe: each method is one statement or one
// transaction on the thread-safe Database.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/enum_names.h"
#include "oma/db/database.h"

namespace mk::oma {

// pending: enrolled, waiting for an operator; approved: its key may hold the tunnel;
// revoked: for good. Stored in vmas.state.
enum class VmaState { Pending, Approved, Revoked };
const EnumTable<VmaState>& enum_table(VmaState);

struct VmaRecord {
  std::string vma_id, name, vcenter, ssh_public_key;
  VmaState state = VmaState::Pending;
  std::string api_token_sealed;               // the token the OMA presents to it
  std::optional<std::string> nbd_psk_sealed;  // its NBD PSK line (none with X.509)
  int64_t tunnel_port = 0, created_at = 0;
  std::optional<int64_t> approved_at, revoked_at;
};

// A one-time pairing code (stored as its SHA-256), the VMA API token and NBD PSK it
// will hand to the VMA that enrols with it.
struct PairingCodeRecord {
  std::string code_hash, api_token_sealed;
  int64_t created_at = 0, expires_at = 0;
  std::optional<int64_t> used_at;
  std::optional<std::string> vma_id, nbd_psk_sealed;
};

class VmaRepository {
 public:
  explicit VmaRepository(db::Database& db) : db_(db) {}

  void insert_pairing_code(const PairingCodeRecord& c);
  // Returns the VMA as recorded: state pending, its tunnel port, the code's secrets,
  // each re-sealed by `reseal(sealed, from_binding, to_binding)` for the VMA's row
  // (sealed values are bound to their row: see sealed_values.h).
  using Reseal = std::function<std::string(const std::string& sealed, const std::string& from, const std::string& to)>;
  VmaRecord enroll_vma(const std::string& code_hash, int64_t now, VmaRecord vma, int64_t port_base,
                       const Reseal& reseal);
  std::optional<VmaRecord> find_vma(const std::string& vma_id);
  VmaRecord get_vma(const std::string& vma_id);  // NotFound
  std::vector<VmaRecord> list_vmas();            // oldest first
  void set_vma_state(const std::string& vma_id, VmaState state);

 private:
  db::Database& db_;
};

}  // namespace mk::oma

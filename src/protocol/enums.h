// The closed sets of words the OMA<->VMA protocol carries, as enum classes, each with
// one table (common/enum_names.h, defined in enums.cpp) that is its only to/from-string
// place:
//
//   PassKind      full | incremental                 replicate: what the pass copies
//   DiskStatus    pending | copying | completed | failed        progress, per disk
//   DiskPhase     pending | planning | copying | verifying | done | failed
//   PassPhase     snapshot | change_query | reader_start | planning | copying | flushing |
//                 snapshot_removal | reporting          progress: where a pass's time went
//   VmaJobStatus  queued | running | completed | failed | stopped   progress, the job
//   PowerAction   shutdown | off | on                power request
//   PowerState    poweredOn | poweredOff | suspended (vSphere's words) power, discover
//   TunnelState   up | connecting | down             health: the VMA's SSH tunnel
//   HealthStatus  ok | degraded                      health: the VMA as a whole
//   NbdTls        psk | x509                         replicate, pairing bundle
//
// enum_name(e), find_enum<E>(s), enum_names<E>() (a schema's one_of, hence the OpenAPI
// "enum"), fmt and JSON come from common/enum_names.h. parse_field<E>(s, field) is the
// protocol's parse: it throws schema::FieldError naming the field. Free functions over
// constant tables; thread-safe.
#pragma once

#include <ostream>
#include <string>
#include <string_view>

#include "common/enum_names.h"
#include "common/json_schema.h"

namespace mk::protocol {

enum class PassKind { Full, Incremental };
enum class DiskStatus { Pending, Copying, Completed, Failed };
enum class DiskPhase { Pending, Planning, Copying, Verifying, Done, Failed };
// The parts of a pass in the order they happen, for the time each took (PhaseTime).
enum class PassPhase { Snapshot, ChangeQuery, ReaderStart, Planning, Copying, Flushing, SnapshotRemoval, Reporting };
enum class VmaJobStatus { Queued, Running, Completed, Failed, Stopped };
enum class PowerAction { Shutdown, Off, On };
enum class PowerState { PoweredOn, PoweredOff, Suspended };
enum class TunnelState { Up, Connecting, Down };
enum class HealthStatus { Ok, Degraded };
enum class NbdTls { Psk, X509 };

const EnumTable<PassKind>& enum_table(PassKind);
const EnumTable<DiskStatus>& enum_table(DiskStatus);
const EnumTable<DiskPhase>& enum_table(DiskPhase);
const EnumTable<PassPhase>& enum_table(PassPhase);
const EnumTable<VmaJobStatus>& enum_table(VmaJobStatus);
const EnumTable<PowerAction>& enum_table(PowerAction);
const EnumTable<PowerState>& enum_table(PowerState);
const EnumTable<TunnelState>& enum_table(TunnelState);
const EnumTable<HealthStatus>& enum_table(HealthStatus);
const EnumTable<NbdTls>& enum_table(NbdTls);

// The name of a word that is not one, fit for a message: cut to 40 characters, control
// characters shown as '?' (a peer's bytes never reach a log unfiltered).
std::string printable_word(std::string_view word);

// The value named `s`; throws schema::FieldError(field, "'s' is not a <what> (known:
// ...)") for a word not in E's table.
template <NamedEnum E>
E parse_field(std::string_view s, const std::string& field) {
  if (auto e = find_enum<E>(s)) return *e;
  throw schema::FieldError(field, unknown_enum_message<E>(printable_word(s)));
}

// The wire word, for logs and test failure messages.
template <NamedEnum E>
std::ostream& operator<<(std::ostream& os, E e) {
  return os << enum_name(e);
}

}  // namespace mk::protocol

// The closed sets of words the OMA<->VMA protocol carries, as enum classes, each with
// one table that is its only to/from-string place:
//
//   PassKind      full | incremental                 replicate: what the pass copies
//   DiskStatus    pending | copying | completed | failed        progress, per disk
//   DiskPhase     pending | planning | copying | verifying | done | failed
//   VmaJobStatus  queued | running | completed | failed | stopped   progress, the job
//   PowerAction   shutdown | off | on                power request
//   PowerState    poweredOn | poweredOff | suspended (vSphere's words) power, discover
//   TunnelState   up | connecting | down             health: the VMA's SSH tunnel
//   HealthStatus  ok | degraded                      health: the VMA as a whole
//   NbdTls        psk | x509                         replicate, pairing bundle
//
// to_string(e) (and operator<<) gives the wire word; from_string<E>(s) the value, or throws
// schema::FieldError naming `field` and the words allowed; enum_names<E>() lists the
// words (for a schema's one_of, hence the OpenAPI "enum"). Free functions over
// constant tables; thread-safe.
#pragma once

#include <array>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mk::protocol {

enum class PassKind { Full, Incremental };
enum class DiskStatus { Pending, Copying, Completed, Failed };
enum class DiskPhase { Pending, Planning, Copying, Verifying, Done, Failed };
enum class VmaJobStatus { Queued, Running, Completed, Failed, Stopped };
enum class PowerAction { Shutdown, Off, On };
enum class PowerState { PoweredOn, PoweredOff, Suspended };
enum class TunnelState { Up, Connecting, Down };
enum class HealthStatus { Ok, Degraded };
enum class NbdTls { Psk, X509 };

// The table of one enum: its words in declaration order, and what it is called in
// error messages. Specialised below for every enum above.
template <typename E>
struct EnumTable;

template <>
struct EnumTable<PassKind> {
  static constexpr std::string_view what = "pass kind";
  static constexpr std::array<std::pair<PassKind, std::string_view>, 2> words{
      {{PassKind::Full, "full"}, {PassKind::Incremental, "incremental"}}};
};

template <>
struct EnumTable<DiskStatus> {
  static constexpr std::string_view what = "disk status";
  static constexpr std::array<std::pair<DiskStatus, std::string_view>, 4> words{{{DiskStatus::Pending, "pending"},
                                                                                 {DiskStatus::Copying, "copying"},
                                                                                 {DiskStatus::Completed, "completed"},
                                                                                 {DiskStatus::Failed, "failed"}}};
};

template <>
struct EnumTable<DiskPhase> {
  static constexpr std::string_view what = "disk phase";
  static constexpr std::array<std::pair<DiskPhase, std::string_view>, 6> words{{{DiskPhase::Pending, "pending"},
                                                                                {DiskPhase::Planning, "planning"},
                                                                                {DiskPhase::Copying, "copying"},
                                                                                {DiskPhase::Verifying, "verifying"},
                                                                                {DiskPhase::Done, "done"},
                                                                                {DiskPhase::Failed, "failed"}}};
};

template <>
struct EnumTable<VmaJobStatus> {
  static constexpr std::string_view what = "VMA job status";
  static constexpr std::array<std::pair<VmaJobStatus, std::string_view>, 5> words{
      {{VmaJobStatus::Queued, "queued"},
       {VmaJobStatus::Running, "running"},
       {VmaJobStatus::Completed, "completed"},
       {VmaJobStatus::Failed, "failed"},
       {VmaJobStatus::Stopped, "stopped"}}};
};

template <>
struct EnumTable<PowerAction> {
  static constexpr std::string_view what = "power action";
  static constexpr std::array<std::pair<PowerAction, std::string_view>, 3> words{
      {{PowerAction::Shutdown, "shutdown"}, {PowerAction::Off, "off"}, {PowerAction::On, "on"}}};
};

template <>
struct EnumTable<PowerState> {
  static constexpr std::string_view what = "power state";
  static constexpr std::array<std::pair<PowerState, std::string_view>, 3> words{{{PowerState::PoweredOn, "poweredOn"},
                                                                                 {PowerState::PoweredOff, "poweredOff"},
                                                                                 {PowerState::Suspended, "suspended"}}};
};

template <>
struct EnumTable<TunnelState> {
  static constexpr std::string_view what = "tunnel state";
  static constexpr std::array<std::pair<TunnelState, std::string_view>, 3> words{
      {{TunnelState::Up, "up"}, {TunnelState::Connecting, "connecting"}, {TunnelState::Down, "down"}}};
};

template <>
struct EnumTable<HealthStatus> {
  static constexpr std::string_view what = "health status";
  static constexpr std::array<std::pair<HealthStatus, std::string_view>, 2> words{
      {{HealthStatus::Ok, "ok"}, {HealthStatus::Degraded, "degraded"}}};
};

template <>
struct EnumTable<NbdTls> {
  static constexpr std::string_view what = "NBD TLS mode";
  static constexpr std::array<std::pair<NbdTls, std::string_view>, 2> words{
      {{NbdTls::Psk, "psk"}, {NbdTls::X509, "x509"}}};
};

template <typename E>
constexpr std::string_view to_string(E e) {
  for (const auto& [value, word] : EnumTable<E>::words) {
    if (value == e) return word;
  }
  return "?";  // unreachable for a value of the enum
}

template <typename E>
constexpr std::optional<E> try_from_string(std::string_view s) {
  for (const auto& [value, word] : EnumTable<E>::words) {
    if (word == s) return value;
  }
  return std::nullopt;
}

template <typename E>
std::vector<std::string> enum_names() {
  std::vector<std::string> out;
  for (const auto& [value, word] : EnumTable<E>::words) out.emplace_back(word);
  return out;
}

// The wire word, for logs and test failure messages.
template <typename E>
  requires requires { EnumTable<E>::words; }
std::ostream& operator<<(std::ostream& os, E e) {
  return os << to_string(e);
}

// Throws schema::FieldError(field, "... must be one of ...") for a word not in the table.
[[noreturn]] void throw_unknown_word(std::string_view what, std::string_view word,
                                     const std::vector<std::string>& allowed, const std::string& field);

template <typename E>
E from_string(std::string_view s, const std::string& field) {
  if (auto e = try_from_string<E>(s)) return *e;
  throw_unknown_word(EnumTable<E>::what, s, enum_names<E>(), field);
}

}  // namespace mk::protocol

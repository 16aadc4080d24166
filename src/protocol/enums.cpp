#include "protocol/enums.h"

namespace mk::protocol {

const EnumTable<PassKind>& enum_table(PassKind) {
  static const EnumTable<PassKind> t{"pass kind", {{PassKind::Full, "full"}, {PassKind::Incremental, "incremental"}}};
  return t;
}

const EnumTable<DiskStatus>& enum_table(DiskStatus) {
  static const EnumTable<DiskStatus> t{"disk status",
                                       {{DiskStatus::Pending, "pending"},
                                        {DiskStatus::Copying, "copying"},
                                        {DiskStatus::Completed, "completed"},
                                        {DiskStatus::Failed, "failed"}}};
  return t;
}

const EnumTable<DiskPhase>& enum_table(DiskPhase) {
  static const EnumTable<DiskPhase> t{"disk phase",
                                      {{DiskPhase::Pending, "pending"},
                                       {DiskPhase::Planning, "planning"},
                                       {DiskPhase::Copying, "copying"},
                                       {DiskPhase::Verifying, "verifying"},
                                       {DiskPhase::Done, "done"},
                                       {DiskPhase::Failed, "failed"}}};
  return t;
}

const EnumTable<PassPhase>& enum_table(PassPhase) {
  static const EnumTable<PassPhase> t{"pass phase",
                                      {{PassPhase::Snapshot, "snapshot"},
                                       {PassPhase::ChangeQuery, "change_query"},
                                       {PassPhase::ReaderStart, "reader_start"},
                                       {PassPhase::Planning, "planning"},
                                       {PassPhase::Copying, "copying"},
                                       {PassPhase::Flushing, "flushing"},
                                       {PassPhase::SnapshotRemoval, "snapshot_removal"},
                                       {PassPhase::Reporting, "reporting"}}};
  return t;
}

const EnumTable<VmaJobStatus>& enum_table(VmaJobStatus) {
  static const EnumTable<VmaJobStatus> t{"VMA job status",
                                         {{VmaJobStatus::Queued, "queued"},
                                          {VmaJobStatus::Running, "running"},
                                          {VmaJobStatus::Completed, "completed"},
                                          {VmaJobStatus::Failed, "failed"},
                                          {VmaJobStatus::Stopped, "stopped"}}};
  return t;
}

const EnumTable<PowerAction>& enum_table(PowerAction) {
  static const EnumTable<PowerAction> t{
      "power action", {{PowerAction::Shutdown, "shutdown"}, {PowerAction::Off, "off"}, {PowerAction::On, "on"}}};
  return t;
}

const EnumTable<PowerState>& enum_table(PowerState) {
  static const EnumTable<PowerState> t{"power state",
                                       {{PowerState::PoweredOn, "poweredOn"},
                                        {PowerState::PoweredOff, "poweredOff"},
                                        {PowerState::Suspended, "suspended"}}};
  return t;
}

const EnumTable<TunnelState>& enum_table(TunnelState) {
  static const EnumTable<TunnelState> t{
      "tunnel state", {{TunnelState::Up, "up"}, {TunnelState::Connecting, "connecting"}, {TunnelState::Down, "down"}}};
  return t;
}

const EnumTable<HealthStatus>& enum_table(HealthStatus) {
  static const EnumTable<HealthStatus> t{"health status", {{HealthStatus::Ok, "ok"}, {HealthStatus::Degraded, "degraded"}}};
  return t;
}

const EnumTable<NbdTls>& enum_table(NbdTls) {
  static const EnumTable<NbdTls> t{"NBD TLS mode", {{NbdTls::Psk, "psk"}, {NbdTls::X509, "x509"}}};
  return t;
}

std::string printable_word(std::string_view word) {
  std::string shown(word.substr(0, 40));
  for (char& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return shown;
}

}  // namespace mk::protocol

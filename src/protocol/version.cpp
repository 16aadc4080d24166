#include "protocol/version.h"

#include <fmt/format.h>

#include <charconv>

namespace mk::protocol {
namespace {

const char* name(Side s) { return s == Side::Oma ? "OMA" : "VMA"; }
Side other(Side s) { return s == Side::Oma ? Side::Vma : Side::Oma; }

}  // namespace

std::string mismatch_message(Side self, int ours, std::optional<int64_t> theirs) {
  const char* me = name(self);
  const char* peer = name(other(self));
  if (!theirs) {
    return fmt::format(
        "OMA<->VMA protocol mismatch: the {} sent no protocol version (a release older than versioned "
        "protocols) and this {} speaks version {}: upgrade the {} to the {}'s release",
        peer, me, ours, peer, me);
  }
  // The older appliance is the one to upgrade.
  bool peer_older = *theirs < ours;
  const char* upgrade = peer_older ? peer : me;
  const char* to = peer_older ? me : peer;
  return fmt::format(
      "OMA<->VMA protocol mismatch: the {} speaks protocol version {} and this {} speaks version {}: "
      "upgrade the {} to the {}'s release (one that speaks version {})",
      peer, *theirs, me, ours, upgrade, to, std::max<int64_t>(*theirs, ours));
}

void check_peer_version(Side self, std::optional<int64_t> theirs, int ours) {
  if (theirs && *theirs == ours) return;
  throw VersionMismatch(mismatch_message(self, ours, theirs), ours, theirs);
}

void check_peer_header(Side self, const std::optional<std::string>& header, int ours) {
  if (!header || header->empty()) return check_peer_version(self, std::nullopt, ours);
  int64_t v = 0;
  auto [end, ec] = std::from_chars(header->data(), header->data() + header->size(), v);
  if (ec != std::errc() || end != header->data() + header->size() || v < 0) {
    std::string shown = header->substr(0, 20);
    for (char& c : shown)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    throw VersionMismatch(fmt::format("OMA<->VMA protocol mismatch: the {} sent {}: \"{}\", which is not a protocol "
                                      "version (this {} speaks version {}): is it a MigrateKit {}?",
                                      name(other(self)), kVersionHeader, shown, name(self), ours, name(other(self))),
                          ours, std::nullopt);
  }
  check_peer_version(self, v, ours);
}

}  // namespace mk::protocol

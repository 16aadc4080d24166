// The version of the OMA<->VMA protocol, which both appliances send and check.
//
// Every request the OMA sends to a VMA and every answer a VMA gives (errors, 401s and
// 404s included) carries the header "MigrateKit-Protocol: <version>"; the health answer,
// the pairing bundle, the enrolment request and the enrolment answer carry it as the
// field "protocol_version" as well. Messages are validated strictly (an unknown field
// is refused), so two versions are compatible only when they are equal: any change of
// a message, a route or a rule raises kVersion.
//
// A peer of another version is refused with a message that names both versions and
// says which appliance to upgrade (the older one; a peer that sends no version is
// older than versioning itself): the VMA answers a request of another version with
// 426 Upgrade Required, and the OMA fails the call (VersionMismatch) when an answer
// carries another version, whatever its status. Enrolment is refused the same way, by
// the OMA (409, before the pairing code is spent) and by `vma pair` (before it writes
// anything, from the bundle's version).
//
// Free functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace mk::protocol {

// 2: pairing bundles carry oma_api_fingerprint; progress carries each disk's phase times,
//    bytes_resumed and restarted (passes that resume after an interruption), and the
//    job's ended_seconds_ago.
// 3: every request is signed with the VMA's token instead of carrying it, and every
//    answer is signed (request_auth.h).
// 4: enrolment carries the VMA's NBD client certificate request (x509 bundles) and its
//    answer the certificate the OMA signed (EnrolRequest.nbd_client_csr,
//    EnrolReply.nbd_client_cert); a replicate request's nbd.tls may be x509.
// 5: several OMA nodes (issue 18): pairing bundles carry the service's nodes, the VMA
//    takes POST /api/v1/service-nodes, and its health lists each node's tunnel.
// 6: progress can be long-polled (GET progress/{job_id}?after=R&wait_ms=N) and such an
//    answer carries the job's revision (messages.h): the VMA pushes changes instead of
//    being polled every second.
inline constexpr int kVersion = 6;
inline constexpr const char* kVersionHeader = "MigrateKit-Protocol";

// Which appliance is checking.
enum class Side { Oma, Vma };

class VersionMismatch : public mk::Error {
 public:
  VersionMismatch(const std::string& message, int ours, std::optional<int64_t> theirs)
      : mk::Error(message), ours_(ours), theirs_(theirs) {}
  int ours() const { return ours_; }
  std::optional<int64_t> theirs() const { return theirs_; }  // nullopt: none, or not a number

 private:
  int ours_;
  std::optional<int64_t> theirs_;
};

// What to tell the operator when `self` (speaking `ours`) meets a peer speaking
// `theirs` (nullopt: the peer sent no version).
std::string mismatch_message(Side self, int ours, std::optional<int64_t> theirs);

// Throws VersionMismatch unless the peer's version equals `ours`. `header` is the
// header's value as received (nullopt or "": absent).
void check_peer_header(Side self, const std::optional<std::string>& header, int ours = kVersion);
// The same for a "protocol_version" field (nullopt: absent).
void check_peer_version(Side self, std::optional<int64_t> theirs, int ours = kVersion);

}  // namespace mk::protocol

#include "common/endpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "common/error.h"

namespace mk {
namespace {

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

bool Endpoint::uses_tls() const { return starts_with(uri, "nbds://") || starts_with(uri, "nbds+unix://"); }

std::string Endpoint::describe() const { return role.empty() ? uri : role + " " + uri; }

void validate_endpoint(const Endpoint& e) {
  static const char* schemes[] = {"nbd://", "nbds://", "nbd+unix://", "nbds+unix://"};
  bool known = std::any_of(std::begin(schemes), std::end(schemes),
                           [&](const char* s) { return starts_with(e.uri, s); });
  if (!known) {
    throw UsageError(fmt::format(
        "{}: unsupported URI scheme (use nbd://, nbds://, nbd+unix:// or nbds+unix://)",
        e.describe()));
  }
  if (!e.uses_tls() && (!e.tls.psk_file.empty() || !e.tls.certificates_dir.empty())) {
    throw UsageError(fmt::format(
        "{}: TLS credentials given for a URI without TLS; use nbds:// or nbds+unix://",
        e.describe()));
  }
  if (!e.tls.psk_file.empty() && !e.tls.certificates_dir.empty()) {
    throw UsageError(fmt::format("{}: give either a TLS PSK file or a certificates directory, not both",
                                 e.describe()));
  }
  if (!e.tls.psk_file.empty()) first_psk_identity(e.tls.psk_file);  // readable, has an identity
}

std::string first_psk_identity(const std::string& psk_file) {
  std::ifstream in(psk_file);
  if (!in) throw UsageError(fmt::format("TLS PSK file {}: cannot open it", psk_file));
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon != std::string::npos && colon > 0) return line.substr(0, colon);
  }
  throw UsageError(fmt::format("TLS PSK file {}: no \"identity:key\" line found (make one with psktool)",
                               psk_file));
}

}  // namespace mk

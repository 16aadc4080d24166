// libFuzzer target: the OMA's configuration as it reads it back from disk and database:
// the record of a kept export server (DATA/export-server.json, read at every start and
// by `oma --stop-export-server`, which signals the PID it names) and the stored
// CloudStack settings (cloudstack::settings_from_json, the row PUT
// /api/v1/settings/cloudstack wrote). Input: a selector byte (which one), then the text.
// Checks: only mk::Error escapes; a record that is accepted names a PID that can only
// be one process (> 1), a port in range and a command line.
#include <unistd.h>

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cloudstack/settings.h"
#include "fuzz_support.h"
#include "oma/exports/nbdkit_server.h"

namespace {

std::string record_path() { return mk::oma::kept_server_record_path(mk::fuzz::private_temp_dir("mk-fuzz-config")); }

void kept_server_record(const std::string& text) {
  {
    std::ofstream out(record_path(), std::ios::binary | std::ios::trunc);
    out << text;
  }
  std::optional<mk::oma::KeptServerRecord> r;
  if (!mk::fuzz::expect_error([&] { r = mk::oma::read_kept_server_record(record_path()); })) return;
  if (!r) mk::fuzz::fail("an existing record read as none");
  if (r->pid <= 1) mk::fuzz::fail(fmt::format("a record naming pid {} was accepted", r->pid));
  if (r->port < 1 || r->port > 65535) mk::fuzz::fail(fmt::format("a record naming port {} was accepted", r->port));
  if (r->argv.empty()) mk::fuzz::fail("a record without a command line was accepted");
}

void cloudstack_settings(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return;  // the database holds what the OMA wrote: JSON
  auto open = [](const std::string& sealed) -> std::string {
    if (!sealed.starts_with("sealed:")) throw mk::Error("cannot open the sealed secret key");
    return sealed.substr(7);
  };
  mk::fuzz::expect_error([&] { (void)mk::cloudstack::settings_from_json(j, open); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mk::fuzz::Input in(data, size);
  if (in.selector % 2 == 0) {
    kept_server_record(in.text);
  } else {
    cloudstack_settings(in.text);
  }
  return 0;
}

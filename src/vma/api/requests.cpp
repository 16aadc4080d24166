#include "vma/api/requests.h"

#include <fmt/format.h>

#include <algorithm>
#include <regex>
#include <set>

#include "vma/files.h"

namespace mk::vma::api {
namespace {

using nlohmann::json;

const json& member(const json& o, const std::string& name, const std::string& field) {
  if (!o.contains(name)) throw BadRequest(field, fmt::format("'{}' is missing", field));
  return o.at(name);
}

std::string string_field(const json& o, const std::string& name, const std::string& field) {
  const json& v = member(o, name, field);
  if (!v.is_string()) throw BadRequest(field, fmt::format("'{}' must be a string", field));
  return v.get<std::string>();
}

int64_t int_field(const json& o, const std::string& name, const std::string& field, int64_t lo, int64_t hi) {
  const json& v = member(o, name, field);
  if (!v.is_number_integer()) throw BadRequest(field, fmt::format("'{}' must be an integer", field));
  int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) throw BadRequest(field, fmt::format("'{}' must be between {} and {}", field, lo, hi));
  return x;
}

std::string uuid_field(const json& o, const std::string& name, const std::string& field) {
  std::string s = string_field(o, name, field);
  if (!is_uuid(s)) throw BadRequest(field, fmt::format("'{}' must be a lowercase UUID (8-4-4-4-12)", field));
  return s;
}

std::string printable(const std::string& s) {
  std::string out;
  for (char c : s.substr(0, 60)) out += std::isprint(static_cast<unsigned char>(c)) ? c : '?';
  return out;
}

DiskState parse_disk(const json& d, size_t i, const std::string& vm_id, const std::string& kind) {
  std::string at = fmt::format("disks[{}]", i);
  if (!d.is_object()) throw BadRequest(at, fmt::format("'{}' must be an object", at));
  DiskState disk;
  disk.disk_key = string_field(d, "disk_key", at + ".disk_key");
  static const std::regex key("^[0-9]{1,9}$");
  if (!std::regex_match(disk.disk_key, key)) {
    throw BadRequest(at + ".disk_key", fmt::format("'{}.disk_key' must be 1 to 9 digits", at));
  }
  disk.unit = int_field(d, "unit", at + ".unit", 0, 255);
  disk.capacity_bytes = int_field(d, "capacity_bytes", at + ".capacity_bytes", 1, int64_t{1} << 50);
  disk.export_name = string_field(d, "export", at + ".export");
  std::string expected = fmt::format("migration-vm-{}-disk{}", vm_id, disk.unit);
  if (disk.export_name != expected) {
    throw BadRequest(at + ".export", fmt::format("'{}.export' is \"{}\" but must be \"{}\"", at,
                                                 printable(disk.export_name), expected));
  }
  const json& base = member(d, "change_id_base", at + ".change_id_base");
  if (base.is_string()) {
    disk.change_id_base = base.get<std::string>();
    if (disk.change_id_base->empty() || disk.change_id_base->size() > 200) {
      throw BadRequest(at + ".change_id_base", fmt::format("'{}.change_id_base' must be a change ID or null", at));
    }
  } else if (!base.is_null()) {
    throw BadRequest(at + ".change_id_base", fmt::format("'{}.change_id_base' must be a string or null", at));
  }
  if (kind == "full" && disk.change_id_base) {
    throw BadRequest(at + ".change_id_base",
                     fmt::format("'{}.change_id_base' contradicts kind \"full\": a full pass has none", at));
  }
  return disk;
}

}  // namespace

json parse_body(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw BadRequest("", "the request body must be a JSON object");
  return j;
}

JobState parse_replicate(const json& body) {
  JobState job;
  job.job_id = uuid_field(body, "job_id", "job_id");
  job.vm_id = uuid_field(body, "vm_id", "vm_id");
  job.kind = string_field(body, "kind", "kind");
  if (job.kind != "full" && job.kind != "incremental") {
    throw BadRequest("kind", "'kind' must be \"full\" or \"incremental\"");
  }
  const json& nbd = member(body, "nbd", "nbd");
  if (!nbd.is_object()) throw BadRequest("nbd", "'nbd' must be an object");
  job.nbd_host = string_field(nbd, "host", "nbd.host");
  static const std::regex host("^[A-Za-z0-9._:-]{1,253}$");
  if (!std::regex_match(job.nbd_host, host)) {
    throw BadRequest("nbd.host", "'nbd.host' must be a host name or an IP address");
  }
  job.nbd_port = static_cast<int>(int_field(nbd, "port", "nbd.port", 1, 65535));
  if (string_field(nbd, "tls", "nbd.tls") != "psk") {
    throw BadRequest("nbd.tls", "'nbd.tls' must be \"psk\": the VMA writes to the OMA only with TLS");
  }
  const json& disks = member(body, "disks", "disks");
  if (!disks.is_array() || disks.empty() || disks.size() > 256) {
    throw BadRequest("disks", "'disks' must be an array of 1 to 256 disks");
  }
  std::set<std::string> keys;
  std::set<int64_t> units;
  for (size_t i = 0; i < disks.size(); ++i) {
    DiskState d = parse_disk(disks[i], i, job.vm_id, job.kind);
    if (!keys.insert(d.disk_key).second) {
      throw BadRequest(fmt::format("disks[{}].disk_key", i), fmt::format("disk key {} appears twice", d.disk_key));
    }
    if (!units.insert(d.unit).second) {
      throw BadRequest(fmt::format("disks[{}].unit", i), fmt::format("unit {} appears twice", d.unit));
    }
    job.disks.push_back(std::move(d));
  }
  // An incremental pass may copy some disks in full (a disk grown since the last pass has
  // no base), but not all of them: that is a full pass.
  if (job.kind == "incremental" &&
      std::none_of(job.disks.begin(), job.disks.end(), [](const DiskState& d) { return d.change_id_base; })) {
    throw BadRequest("disks[0].change_id_base",
                     "'disks[0].change_id_base' contradicts kind \"incremental\": no disk has a base change ID");
  }
  return job;
}

PowerRequest parse_power(const json& body) {
  PowerRequest r;
  r.action = string_field(body, "action", "action");
  if (r.action != "shutdown" && r.action != "off" && r.action != "on") {
    throw BadRequest("action", "'action' must be \"shutdown\", \"off\" or \"on\"");
  }
  if (body.contains("timeout_seconds")) {
    r.timeout_seconds = static_cast<int>(int_field(body, "timeout_seconds", "timeout_seconds", 1, 86400));
  }
  return r;
}

void check_uuid_param(const std::string& value, const std::string& name) {
  if (!is_uuid(value)) {
    throw BadRequest(name, fmt::format("{} \"{}\" in the path is not a lowercase UUID", name, printable(value)));
  }
}

}  // namespace mk::vma::api

#include "engine/changed_areas.h"

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"

namespace mk::engine {
namespace {

uint64_t field(const nlohmann::json& item, const char* name, const std::string& where) {
  auto it = item.find(name);
  if (it == item.end()) throw UsageError(fmt::format("{}: missing \"{}\"", where, name));
  if (!it->is_number_integer()) {
    throw UsageError(fmt::format("{}: \"{}\" must be a whole number of bytes", where, name));
  }
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  int64_t v = it->get<int64_t>();
  if (v < 0) throw UsageError(fmt::format("{}: \"{}\" is negative ({})", where, name, v));
  return static_cast<uint64_t>(v);
}

}  // namespace

RangeList parse_changed_areas(const std::string& text, const std::string& source_name,
                              uint64_t disk_size) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // parse_error, and out_of_range for a number too large for a double ("1e999").
    throw UsageError(fmt::format("changed areas {}: not valid JSON ({})", source_name, e.what()));
  }
  if (!doc.is_array()) {
    throw UsageError(fmt::format(
        "changed areas {}: expected a JSON array of {{\"start\": N, \"length\": N}} objects",
        source_name));
  }
  RangeList areas;
  areas.reserve(doc.size());
  for (size_t i = 0; i < doc.size(); ++i) {
    const auto& item = doc[i];
    std::string where = fmt::format("changed areas {}, element {}", source_name, i);
    if (!item.is_object()) throw UsageError(where + ": expected an object");
    for (const auto& [key, value] : item.items()) {
      if (key != "start" && key != "length") {
        throw UsageError(fmt::format("{}: unknown field \"{}\"", where, key));
      }
    }
    uint64_t start = field(item, "start", where);
    uint64_t length = field(item, "length", where);
    if (length == 0) throw UsageError(where + ": \"length\" is 0");
    if (start >= disk_size || length > disk_size - start) {
      throw UsageError(fmt::format(
          "{}: area of {} bytes at offset {} lies past the end of the disk ({} bytes)", where,
          length, start, disk_size));
    }
    areas.push_back({start, length});
  }
  return normalize(std::move(areas));
}

RangeList load_changed_areas(const std::string& path, uint64_t disk_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError(fmt::format("changed areas {}: cannot open the file", path));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw UsageError(fmt::format("changed areas {}: read error", path));
  return parse_changed_areas(text.str(), path, disk_size);
}

}  // namespace mk::engine

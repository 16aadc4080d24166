#include "support/nbdkit_log.h"

#include <map>
#include <regex>
#include <sstream>
#include <utility>

#include "support/files.h"

namespace mk::test {

std::vector<NbdRequest> parse_nbdkit_log(const std::string& path) {
  // "connection=1 Write id=2 offset=0x0 count=0x8000 fua=0 ..." then, when it returns,
  // "connection=1 ...Write id=2 return=0" (or "return=-1 (Input/output error)").
  static const std::regex request(R"(connection=(\d+) (\w+) id=(\d+)(?: offset=0x([0-9a-f]+) count=0x([0-9a-f]+))?)");
  static const std::regex reply(R"(connection=(\d+) \.\.\.(\w+) id=(\d+) return=(-?\d+))");
  std::vector<NbdRequest> requests;
  std::map<std::pair<uint64_t, uint64_t>, size_t> index;  // (connection, id) -> position
  std::istringstream in(read_file(path));
  std::smatch m;
  for (std::string line; std::getline(in, line);) {
    if (std::regex_search(line, m, reply)) {
      auto it = index.find({std::stoull(m[1]), std::stoull(m[3])});
      if (it != index.end()) {
        requests[it->second].replied = true;
        requests[it->second].ok = m[4] == "0";
      }
    } else if (std::regex_search(line, m, request)) {
      NbdRequest r;
      r.connection = std::stoull(m[1]);
      r.type = m[2];
      r.id = std::stoull(m[3]);
      if (m[4].matched) r.offset = std::stoull(m[4], nullptr, 16);
      if (m[5].matched) r.count = std::stoull(m[5], nullptr, 16);
      index[{r.connection, r.id}] = requests.size();
      requests.push_back(std::move(r));
    }
  }
  return requests;
}

std::vector<NbdRequest> requests_of(const std::vector<NbdRequest>& all, const std::string& type) {
  std::vector<NbdRequest> out;
  for (const auto& r : all) if (r.type == type) out.push_back(r);
  return out;
}

bool has_failed_request(const std::string& path, const std::string& type) {
  for (const auto& r : parse_nbdkit_log(path)) {
    if (r.type == type && r.replied && !r.ok) return true;
  }
  return false;
}

uint64_t total_count(const std::vector<NbdRequest>& requests) {
  uint64_t n = 0;
  for (const auto& r : requests) n += r.count;
  return n;
}

}  // namespace mk::test

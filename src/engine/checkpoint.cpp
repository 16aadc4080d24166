#include "engine/checkpoint.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/files.h"

namespace mk::engine {
namespace {

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, const std::string& data, const std::string& path) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(fmt::format("checkpoint {}: write failed: {}", path, errno_text()));
    off += n;
  }
}

// One "start length" line: two decimal numbers within the disk, nothing else.
bool parse_range(const std::string& line, uint64_t disk_size, Range& out) {
  auto space = line.find(' ');
  if (space == std::string::npos) return false;
  auto number = [](const std::string& text, uint64_t& value) {
    if (text.empty() || text.size() > 20 || text.find_first_not_of("0123456789") != std::string::npos) return false;
    errno = 0;
    value = std::strtoull(text.c_str(), nullptr, 10);
    return errno == 0;
  };
  if (!number(line.substr(0, space), out.start) || !number(line.substr(space + 1), out.length)) return false;
  return out.length > 0 && out.start < disk_size && out.length <= disk_size - out.start;
}

}  // namespace

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string& path, const nlohmann::json& identity,
                                             uint64_t disk_size) {
  std::ifstream in(path);
  std::string header;
  RangeList done;
  if (in && std::getline(in, header) && !header.empty()) {
    nlohmann::json stored;
    try {
      stored = nlohmann::json::parse(header);
    } catch (const nlohmann::json::exception&) {  // parse_error, or out_of_range for "1e999"
      throw UsageError(fmt::format("checkpoint {}: not a migratekit checkpoint; remove it to start over", path));
    }
    if (stored != identity) {
      throw UsageError(fmt::format(
          "checkpoint {} belongs to a different copy (source data, target or options changed); "
          "remove it to start over",
          path));
    }
    std::string line;
    for (size_t number = 2; std::getline(in, line); ++number) {
      if (in.eof()) break;  // no newline: torn by a crash, ignore
      Range r;
      if (!parse_range(line, disk_size, r)) {
        throw UsageError(fmt::format("checkpoint {} is damaged at line {} (\"{}\"); remove it to start over",
                                     path, number, line.substr(0, 60)));
      }
      done.push_back(r);
    }
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) throw Error(fmt::format("checkpoint {}: cannot open: {}", path, errno_text()));
    // A torn tail would glue onto the next record; cut the file back to whole lines.
    std::string all;
    {
      std::ifstream again(path, std::ios::binary);
      std::ostringstream ss;
      ss << again.rdbuf();
      all = ss.str();
    }
    auto last_nl = all.rfind('\n');
    if (last_nl != std::string::npos && last_nl + 1 != all.size()) {
      if (ftruncate(fd, static_cast<off_t>(last_nl + 1)) != 0) {
        ::close(fd);
        throw Error(fmt::format("checkpoint {}: cannot repair torn tail: {}", path, errno_text()));
      }
    }
    std::unique_ptr<Checkpoint> cp(new Checkpoint(path, fd));
    cp->completed_ = normalize(std::move(done));
    return cp;
  }

  // New checkpoint: the header appears whole, or not at all.
  try {
    write_private_file(path, identity.dump() + "\n");
  } catch (const Error& e) {
    throw UsageError(fmt::format("checkpoint: {}", e.what()));
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("checkpoint {}: cannot open: {}", path, errno_text()));
  return std::unique_ptr<Checkpoint>(new Checkpoint(path, fd));
}

Checkpoint::~Checkpoint() {
  if (fd_ >= 0) ::close(fd_);
}

void Checkpoint::record(const RangeList& ranges) {
  if (ranges.empty()) return;
  std::string text;
  for (const Range& r : ranges) text += fmt::format("{} {}\n", r.start, r.length);
  std::lock_guard lock(mu_);
  write_all(fd_, text, path_);
  if (fdatasync(fd_) != 0) throw Error(fmt::format("checkpoint {}: fdatasync: {}", path_, errno_text()));
}

void Checkpoint::remove() {
  std::lock_guard lock(mu_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(path_.c_str());
}

}  // namespace mk::engine

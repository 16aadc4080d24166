// A durable record of the ranges a copy pass has completed, so that a rerun after a
// crash or kill -9 continues where it stopped.
//
// File format: a first line with a JSON header identifying the pass (plan digest, disk
// size, target, whether the target was fresh), then one "start length" line per range
// the target has confirmed durable (written and flushed). A torn last line from a
// crash is ignored. record() is thread-safe; each call appends and fdatasyncs.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "common/range.h"

namespace mk::engine {

class Checkpoint {
 public:
  // Opens `path`. A missing or empty file starts a new checkpoint with `identity`. An
  // existing file whose header differs from `identity` (it belongs to another pass), or
  // with a damaged range line or a range past `disk_size`, throws UsageError: trusting it
  // could leave part of the target uncopied. A file that cannot be created throws
  // UsageError; other I/O errors throw mk::Error.
  static std::unique_ptr<Checkpoint> open(const std::string& path, const nlohmann::json& identity,
                                          uint64_t disk_size);
  ~Checkpoint();

  // Ranges completed by earlier runs (normalised).
  const RangeList& completed() const { return completed_; }

  // Appends ranges that are now durable on the target. Thread-safe.
  void record(const RangeList& ranges);

  // Deletes the file after the pass succeeded.
  void remove();

  const std::string& path() const { return path_; }

 private:
  Checkpoint(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  std::string path_;
  int fd_;
  std::mutex mu_;
  RangeList completed_;
};

}  // namespace mk::engine

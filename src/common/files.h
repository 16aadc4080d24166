// Writing a file that others must see whole or not at all: keys, tokens, state records,
// configuration that a server re-reads.
//
// write_private_file() writes a temporary file in the same directory (created exclusively,
// mode 0600 until it is complete), writes everything, fsyncs it, renames it over the
// destination and fsyncs the directory, so that a reader sees the old or the new
// content, never a mixture, and the new content survives a crash once the call returns.
// A leftover temporary file (PATH.tmp-XXXXXX) after a crash never replaces anything.
// Free functions; thread-safe (concurrent writers of one path: the last rename wins).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

namespace mk {

struct PrivateFileOptions {
  mode_t mode = 0600;  // the final file's permission bits
  // The final file's owner (needs the privilege to chown): for a file that another
  // user's daemon reads, e.g. sshd reading authorized_keys as the tunnel user.
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
};

// Replaces `path` with `content` as described above. Throws mk::Error naming `path` (and
// the directory, when only its fsync failed: the new content is then in place but may
// not survive a crash) with the system's reason.
void write_private_file(const std::string& path, std::string_view content, const PrivateFileOptions& options = {});

// fsyncs directory `dir`, so that entries created, renamed or removed in it are durable.
// Throws mk::Error naming `dir`.
void fsync_directory(const std::string& dir);

// The directory part of `path` ("." for a bare name, "/" for a file in the root).
std::string parent_directory(const std::string& path);

}  // namespace mk

// File helpers for tests: disk images made of sparse files, bytes written at offsets,
// byte-for-byte comparison that names the first differing offset, SHA-256, and TLS PSK
// key files.
//
// Writes (create_sparse_file, write_at and what uses it) are also appended to the lab's
// CBT write journal "<path>.cbt-journal" when it exists: that is how the lab's CBT shim
// learns what changed without reading the disks (tests/lab/vcsim/cbt_shim.py).
//
// Free functions on paths chosen by the test (inside a TempDir). Bytes are carried in
// std::string (binary-safe). Every failure throws mk::Error naming the file. Thread-safe
// as long as two threads do not write the same file.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>

namespace mk::test {

// Creates (or truncates) `path` as a sparse file of `size` bytes: it reads as zeros and
// has no allocated blocks.
void create_sparse_file(const std::string& path, uint64_t size);

// Writes `bytes` at `offset` (the file grows if needed; nothing else changes).
void write_at(const std::string& path, uint64_t offset, const std::string& bytes);

// `length` pseudo-random bytes from `seed` (reproducible: same seed, same bytes).
// Random data does not compress and is never all zeros, so it defeats zero detection.
std::string random_bytes(uint64_t length, uint64_t seed);

// write_at(path, offset, random_bytes(length, seed)).
void write_random_at(const std::string& path, uint64_t offset, uint64_t length, uint64_t seed);

// Fills [offset, offset+length) with `byte`.
void fill_at(const std::string& path, uint64_t offset, uint64_t length, char byte);

std::string read_file(const std::string& path);
// read_file(path), or "" when it cannot be read (not written yet, or gone): for logs and
// files another process writes while the test waits.
std::string read_file_or_empty(const std::string& path);
// The permission bits of `path` (07777 masked: 0600 for a private key), or -1 when it
// cannot be stat'ed.
int file_mode(const std::string& path);
std::string read_at(const std::string& path, uint64_t offset, uint64_t length);
uint64_t file_size(const std::string& path);

// First offset where the two files differ within their common length; nullopt if the
// common part is identical (sizes are not compared: see files_identical). Ranges that
// are holes in both files are skipped (they read as zeros), so multi-GiB sparse images
// compare in milliseconds.
std::optional<uint64_t> first_difference(const std::string& a, const std::string& b);

// gtest assertion: same size and same bytes. On failure the message names both files,
// their sizes, the first differing offset and the bytes there.
::testing::AssertionResult files_identical(const std::string& a, const std::string& b);

// Lowercase hex SHA-256 of the whole file (OpenSSL EVP).
std::string sha256_file(const std::string& path);

// Writes a TLS PSK keys file "identity:<64 hex chars>" (a fresh random 256-bit key),
// mode 0600, as nbdkit --tls-psk and libnbd expect. Returns the path.
std::string make_psk_file(const std::string& path, const std::string& identity);

}  // namespace mk::test

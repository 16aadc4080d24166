// Helpers shared by the libFuzzer targets in this folder (see fuzz/README.md).
//
// The rule every target checks: a parser given any bytes either returns a value or
// throws mk::Error (or a subclass: UsageError, schema::FieldError, ...) whose message a
// human can act on. Anything else — another exception type escaping, a crash, a sanitizer
// report, a failed round trip — is a bug. expect_error() lets mk::Error through as the
// expected outcome; every other exception escapes and libFuzzer reports it as a crash.
// Header-only; each target is its own single-threaded process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdlib.h>
#include <string>
#include <string_view>

#include "common/error.h"

namespace mk::fuzz {

// Runs `f`; an mk::Error is the parser refusing the input (fine), anything else escapes.
template <typename F>
bool expect_error(F&& f) {
  try {
    f();
    return true;
  } catch (const mk::Error&) {
    return false;
  }
}

// A private directory for one target's files, made once per process under $TMPDIR (or
// /tmp) with `prefix` in its name; left behind for inspection.
inline const std::string& private_temp_dir(const char* prefix) {
  static const std::string dir = [prefix] {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
    if (!mkdtemp(templ.data())) {
      std::fprintf(stderr, "fuzz: cannot create a temporary directory %s\n", templ.c_str());
      std::abort();
    }
    return templ;
  }();
  return dir;
}

// Stops the run with a message: an invariant of the parser does not hold.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what.c_str());
  std::abort();
}

// Reads the input as: one selector byte (which variant of the parser to drive), then the
// text. Empty input: selector 0 and empty text.
struct Input {
  uint8_t selector = 0;
  std::string text;
  Input(const uint8_t* data, size_t size) {
    if (size > 0) {
      selector = data[0];
      text.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
    }
  }
};

}  // namespace mk::fuzz

// libFuzzer target: the configuration files (/etc/migratekit/oma.conf, vma.conf) as the
// OMA and the VMA read them at start (config::ConfigFile: TOML, then each setting
// checked against the command's option of the same name). Input: the file's text. The
// command here declares the kinds of options oma and vma declare (text, a number with a
// range, a flag, a list, a command-line action); none is required, so that whatever the
// file check accepts must also be taken by the command's own parse.
// Checks: only mk::Error (UsageError naming PATH:LINE) escapes; every setting read has
// a key and a line; settings the check accepted parse, with the command line winning.
#include <fmt/format.h>

#include <fstream>

#include "common/config_file.h"
#include "fuzz_support.h"

namespace {

struct Options {
  std::string data_dir, listen;
  int port = 8082;
  int poll_ms = 1000;
  bool insecure = false;
  std::vector<std::string> names;
  bool check = false;
};

void declare(CLI::App& app, Options& o) {
  app.add_option("--data-dir", o.data_dir, "state directory");
  app.add_option("--api-listen", o.listen, "address");
  app.add_option("--api-port", o.port, "port")->check(CLI::Range(0, 65535));
  app.add_option("--poll-interval-ms", o.poll_ms, "poll")->check(CLI::Range(10, 60000));
  app.add_flag("--insecure-http", o.insecure, "flag");
  app.add_option("--https-name", o.names, "names (repeatable)");
  app.add_flag("--check-config", o.check, "action")->configurable(false);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = mk::fuzz::private_temp_dir("mk-fuzz-conf") + "/oma.conf";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  std::optional<mk::config::ConfigFile> file;
  if (!mk::fuzz::expect_error([&] { file = mk::config::ConfigFile::read(path); })) return 0;
  for (const auto& s : file->settings()) {
    if (s.key.empty()) mk::fuzz::fail("a setting without a name was read");
    if (s.line < 1) mk::fuzz::fail(fmt::format("setting {} read at line {}", s.key, s.line));
  }
  CLI::App app{"fuzz"};
  Options o;
  declare(app, o);
  // The command line gives the port: a file's api-port must be left out.
  std::string a0 = "oma", a1 = "--api-port", a2 = "9000";
  char* argv[] = {a0.data(), a1.data(), a2.data(), nullptr};
  std::vector<std::string> args;
  if (!mk::fuzz::expect_error([&] { args = file->arguments_for(app, 3, argv); })) return 0;
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    mk::fuzz::fail(fmt::format("settings the file check accepted are refused by the parse: {}", e.what()));
  }
  if (o.port != 9000) mk::fuzz::fail(fmt::format("the file's api-port ({}) won over the command line's", o.port));
  return 0;
}

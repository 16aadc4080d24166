// ConfigFile: a command's settings read from a TOML file (/etc/migratekit/oma.conf,
// vma.conf) whose keys are the command's long option names: `api-port = 8082` is
// `--api-port 8082`. The options a command declares with CLI11 are therefore the one
// list of settings: a setting is checked by its option's own validators and converted
// into the same field of the same options struct, and an option given on the command
// line overrides the file's setting of the same name.
//
// Errors name the file, the line and the setting ("/etc/migratekit/oma.conf:7: api-port:
// ..."), as UsageError (exit status 2). Options marked configurable(false) (one-shot
// actions such as --check-config, --help) are refused in a file.
//
// A ConfigFile is a value: read it once, then use it from one thread.
#pragma once

#include <CLI/CLI.hpp>

#include <optional>
#include <string>
#include <vector>

namespace mk::config {

class ConfigFile {
 public:
  struct Setting {
    std::string key;                  // option long name without "--"
    std::vector<std::string> values;  // one per TOML array element, else one
    int line = 0;
  };

  // Reads and parses `path` (TOML). Throws UsageError naming PATH:LINE:COLUMN for a
  // syntax error, PATH:LINE: KEY for a value no option can take (a table, a date, an
  // array of arrays), and when the file cannot be read.
  static ConfigFile read(const std::string& path);

  // What a command does at the start: reads the file named by --config (or, when
  // --check-config is given without it, `check_default`) into `file`, and returns the
  // arguments for app.parse(std::vector<std::string>&): arguments_for() with a file, the
  // command line (reversed, as CLI11 wants) without one. Throws UsageError.
  static std::vector<std::string> command_line(CLI::App& app, int argc, char** argv, const std::string& check_default,
                                               std::optional<ConfigFile>& file);

  // The value of `--config FILE` / `--config=FILE` in argv[1..], or "" when absent.
  static std::string path_in(int argc, char** argv, const std::string& option = "--config");

  // The arguments for app.parse(std::vector<std::string>&) (CLI11 wants them in
  // reverse order, without the program name): the file's settings that the command line
  // does not give, then the command line (argv[1..]). Each of those settings is first
  // checked against its option (unknown, not configurable, rejected by a validator, not
  // convertible): the first failure throws UsageError "PATH:LINE: KEY: why".
  std::vector<std::string> arguments_for(CLI::App& app, int argc, char** argv) const;

  // `message` (an error about an option, starting with "--KEY") prefixed with
  // "PATH:LINE: " when that option's value came from this file; otherwise unchanged.
  std::string locate(const std::string& message) const;

  const std::string& path() const { return path_; }
  const std::vector<Setting>& settings() const { return settings_; }

 private:
  std::string path_;
  std::vector<Setting> settings_;
  mutable std::vector<std::string> applied_;  // keys arguments_for took from the file
};

}  // namespace mk::config

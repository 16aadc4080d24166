#include "common/config_file.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <fstream>

#include "common/error.h"

namespace mk::config {
namespace {

// A scalar as the command line would spell it; nullopt for tables, arrays, dates.
std::optional<std::string> scalar_text(const toml::node& v) {
  if (auto s = v.as_string()) return s->get();
  if (auto i = v.as_integer()) return std::to_string(i->get());
  if (auto b = v.as_boolean()) return b->get() ? "true" : "false";
  if (auto f = v.as_floating_point()) return fmt::format("{}", f->get());
  return std::nullopt;
}

// Is `key` (an option's long name) given on the command line, as --key, --key=V or
// one of its short names?
bool on_command_line(const CLI::Option& opt, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") break;
    if (a.rfind("--", 0) == 0) {
      if (opt.check_lname(a.substr(2, a.find('=') - 2))) return true;
    } else if (a.size() >= 2 && a[0] == '-') {
      if (opt.check_sname(a.substr(1, 1))) return true;
    }
  }
  return false;
}

// Runs `values` through the option's validators and conversion (what parsing would do),
// then forgets them: the real parse gives them again. Throws CLI::Error.
void check_values(CLI::Option& opt, const std::vector<std::string>& values) {
  opt.clear();
  for (const auto& v : values) opt.add_result(v);
  try {
    opt.run_callback();
  } catch (...) {
    opt.clear();
    throw;
  }
  opt.clear();
}

}  // namespace

ConfigFile ConfigFile::read(const std::string& path) {
  if (!std::ifstream(path)) throw UsageError(fmt::format("{}: cannot read the configuration file", path));
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw UsageError(fmt::format("{}:{}:{}: not valid TOML: {}", path, e.source().begin.line, e.source().begin.column,
                                 e.description()));
  }
  ConfigFile file;
  file.path_ = path;
  for (auto&& [key, value] : table) {
    Setting s{std::string(key.str()), {}, static_cast<int>(key.source().begin.line)};
    if (s.key.empty()) throw UsageError(fmt::format("{}:{}: a setting without a name (\"\" = ...)", path, s.line));
    if (auto array = value.as_array()) {
      for (auto&& element : *array) {
        auto text = scalar_text(element);
        if (!text) throw UsageError(fmt::format("{}:{}: {}: an array may hold strings, numbers or booleans only", path, s.line, s.key));
        s.values.push_back(*text);
      }
    } else if (auto text = scalar_text(value)) {
      s.values.push_back(*text);
    } else {
      throw UsageError(fmt::format("{}:{}: {}: expected a string, number, boolean or array; settings are flat "
                                   "`name = value` lines named like the command-line options (no [tables])",
                                   path, s.line, s.key));
    }
    file.settings_.push_back(std::move(s));
  }
  std::sort(file.settings_.begin(), file.settings_.end(), [](auto& a, auto& b) { return a.line < b.line; });
  return file;
}

std::vector<std::string> ConfigFile::command_line(CLI::App& app, int argc, char** argv,
                                                  const std::string& check_default, std::optional<ConfigFile>& file) {
  std::string path = path_in(argc, argv);
  bool checking = std::any_of(argv + 1, argv + argc, [](const char* a) { return std::string(a) == "--check-config"; });
  if (path.empty() && checking) path = check_default;
  if (!path.empty()) {
    file = read(path);
    return file->arguments_for(app, argc, argv);
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  std::reverse(args.begin(), args.end());
  return args;
}

std::string ConfigFile::path_in(int argc, char** argv, const std::string& option) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") break;
    if (a == option && i + 1 < argc) return argv[i + 1];
    if (a.rfind(option + "=", 0) == 0) return a.substr(option.size() + 1);
  }
  return "";
}

std::vector<std::string> ConfigFile::arguments_for(CLI::App& app, int argc, char** argv) const {
  std::vector<std::string> args;
  applied_.clear();
  for (const auto& s : settings_) {
    auto where = [&](const std::string& why) { return UsageError(fmt::format("{}:{}: {}: {}", path_, s.line, s.key, why)); };
    CLI::Option* opt = s.key.rfind('-', 0) == 0 ? nullptr : app.get_option_no_throw("--" + s.key);
    if (!opt) throw where("no such setting (settings are named like the long command-line options, see --help)");
    if (!opt->get_configurable()) throw where("a command-line action, not a setting for the configuration file");
    if (on_command_line(*opt, argc, argv)) continue;  // the command line overrides the file
    // CLI11 runs an option's callback on no value at all as if it had one (undefined
    // behaviour for a switch); and an empty list means nothing a missing setting does not.
    if (s.values.empty()) throw where("an empty list: leave the setting out to keep its default");
    // CLI11 reads "[...]" given to a list option as list syntax ("[]" even takes the
    // arguments after it): such a value would not reach the option as written.
    if (opt->get_expected_max() > 1)
      for (const auto& v : s.values)
        if (v.size() >= 2 && v.front() == '[' && v.back() == ']')
          throw where(fmt::format("\"{}\" would be read as a list; write the list in TOML: {} = [\"a\", \"b\"]", v, s.key));
    try {
      check_values(*opt, s.values);
    } catch (const CLI::Error& e) {
      std::string why = e.what();
      // CLI11 starts some messages with the option's name; the setting is named already.
      if (why.rfind("--" + s.key + ": ", 0) == 0) why = why.substr(s.key.size() + 4);
      throw where(why);
    }
    for (const auto& v : s.values) {
      if (v.empty() && opt->get_expected_max() != 0) {
        // CLI11 reads "--key=" as "--key" without a value and then takes the next
        // argument (a command-line option) as its value: an empty value travels alone
        // (not for a switch, which takes no separate value: "--fast=" is on).
        args.push_back("--" + s.key);
        args.emplace_back();
      } else {
        args.push_back(fmt::format("--{}={}", s.key, v));
      }
    }
    applied_.push_back(s.key);
  }
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  std::reverse(args.begin(), args.end());
  return args;
}

std::string ConfigFile::locate(const std::string& message) const {
  for (const auto& s : settings_) {
    std::string name = "--" + s.key;
    // "--key" followed by the end or a separator, not by more of a longer name.
    char next = message.size() > name.size() ? message[name.size()] : ' ';
    bool named = message.rfind(name, 0) == 0 && !std::isalnum(static_cast<unsigned char>(next)) && next != '-';
    if (named && std::find(applied_.begin(), applied_.end(), s.key) != applied_.end())
      return fmt::format("{}:{}: {}", path_, s.line, message);
  }
  return message;
}

}  // namespace mk::config

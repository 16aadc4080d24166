// Configuration files (common/config_file.h) on a small CLI11 command, then through the
// real `oma` and `vma run` binaries: errors name file, line and setting, the command
// line overrides the file, --check-config, and the readiness notification a Type=notify
// unit waits for.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <netinet/in.h>
#include <signal.h>

#include <filesystem>
#include <fstream>

#include "common/config_file.h"
#include "common/error.h"
#include "common/subprocess.h"
#include "oma/db/database.h"
#include "oma/db/migrations.h"
#include "support/files.h"
#include "support/temp_dir.h"

namespace mk::config {
namespace {

using mk::test::TempDir;

std::string write(const TempDir& dir, const std::string& name, const std::string& text) {
  std::string path = dir.file(name);
  std::ofstream(path) << text;
  return path;
}

// The message of the UsageError `f` throws ("" when it throws none).
template <typename F>
std::string usage_error(F f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

struct Options {
  int port = 1;
  std::string name;
  bool fast = false;
  std::vector<std::string> tags;
};

// A command like oma's: a ranged number, a string, a flag, a repeatable option, an action.
struct Command {
  CLI::App app{"test"};
  Options o;
  bool action = false;
  Command() {
    app.add_option("--port", o.port)->check(CLI::Range(1, 65535));
    app.add_option("--name", o.name);
    app.add_flag("-f,--fast", o.fast);
    app.add_option("--tag", o.tags);
    app.add_flag("--action", action)->configurable(false);
  }
  void parse(const ConfigFile& file, std::vector<std::string> argv) {
    argv.insert(argv.begin(), "test");
    std::vector<char*> p;
    for (auto& a : argv) p.push_back(a.data());
    auto args = file.arguments_for(app, static_cast<int>(p.size()), p.data());
    app.parse(args);
  }
};

TEST(ConfigFile, SettingsFillTheOptionsAndTheCommandLineOverrides) {
  TempDir dir("mk-conf");
  auto path = write(dir, "a.conf", "# comment\nport = 8082\nname = \"first\"\nfast = true\ntag = [\"a\", \"b\"]\n");
  auto file = ConfigFile::read(path);
  Command c;
  c.parse(file, {"--name", "second", "--tag=c"});
  EXPECT_EQ(c.o.port, 8082);
  EXPECT_EQ(c.o.name, "second");
  EXPECT_TRUE(c.o.fast);
  EXPECT_EQ(c.o.tags, std::vector<std::string>{"c"});
  Command d;
  d.parse(file, {"-f"});
  EXPECT_EQ(d.o.tags, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(d.o.name, "first");
}

TEST(ConfigFile, FalseFlagStaysOff) {
  TempDir dir("mk-conf");
  Command c;
  c.parse(ConfigFile::read(write(dir, "a.conf", "fast = false\n")), {});
  EXPECT_FALSE(c.o.fast);
}

// Found by the config_file fuzz target: an empty value in the file ("--tag=" for CLI11)
// took the command line's next argument as its value, so "--port 9000" was lost.
TEST(ConfigFile, AnEmptyValueInTheFileTakesNothingFromTheCommandLine) {
  TempDir dir("mk-conf");
  Command c;
  c.parse(ConfigFile::read(write(dir, "a.conf", "tag = [\"\"]\nname = \"\"\n")), {"--port", "9000"});
  EXPECT_EQ(c.o.port, 9000);
  EXPECT_EQ(c.o.tags, std::vector<std::string>{""});
  EXPECT_EQ(c.o.name, "");
}

// Found by the config_file fuzz target (UBSan): CLI11 read a switch's first value out of
// an empty list.
TEST(ConfigFile, AnEmptyListIsRefusedWithItsLine) {
  TempDir dir("mk-conf");
  for (std::string key : {"fast", "tag", "name"}) {
    auto path = write(dir, "a.conf", "\n" + key + " = []\n");
    Command c;
    EXPECT_EQ(usage_error([&] { c.parse(ConfigFile::read(path), {}); }),
              path + ":2: " + key + ": an empty list: leave the setting out to keep its default");
  }
}

// Found by the config_file fuzz target: CLI11 reads "[...]" given to a list option as its
// own list syntax, and "[]" took the command line's next arguments with it.
TEST(ConfigFile, AListOptionRefusesAValueInBrackets) {
  TempDir dir("mk-conf");
  auto path = write(dir, "a.conf", "name = \"[x]\"\ntag = [\"a\", \"[]\"]\n");
  Command c;
  EXPECT_EQ(usage_error([&] { c.parse(ConfigFile::read(path), {"--port", "9000"}); }),
            path + ":2: tag: \"[]\" would be read as a list; write the list in TOML: tag = [\"a\", \"b\"]");
  Command d;
  d.parse(ConfigFile::read(write(dir, "b.conf", "name = \"[x]\"\n")), {"--port", "9000"});
  EXPECT_EQ(d.o.name, "[x]");  // a single-value option takes it as written
  EXPECT_EQ(d.o.port, 9000);
}

// Found by the config_file fuzz target: TOML allows a quoted empty key.
TEST(ConfigFile, ASettingWithoutANameIsRefusedWithItsLine) {
  TempDir dir("mk-conf");
  auto path = write(dir, "a.conf", "port = 1\n\"\" = \"x\"\n");
  EXPECT_EQ(usage_error([&] { ConfigFile::read(path); }), path + ":2: a setting without a name (\"\" = ...)");
}

TEST(ConfigFile, ErrorsNameFileLineAndSetting) {
  TempDir dir("mk-conf");
  auto check = [&](const std::string& text, const std::string& expected) {
    auto path = write(dir, "bad.conf", text);
    std::string e = usage_error([&] {
      Command c;
      c.parse(ConfigFile::read(path), {});
    });
    EXPECT_EQ(e.rfind(path + expected, 0), 0u) << "got: " << e;
  };
  check("name = \"x\"\nport = 70000\n", ":2: port: ");
  check("name = \"x\"\n\nport = \"many\"\n", ":3: port: ");
  check("port = 1\nbogus = 2\n", ":2: bogus: no such setting");
  check("action = true\n", ":1: action: a command-line action");
  check("port = 1\n[section]\nname = 2\n", ":2: section: expected a string, number, boolean or array");
  check("port = 1\nname = \n", ":2:");  // not TOML: line and column
  check("tag = [[1]]\n", ":1: tag: an array may hold");
}

TEST(ConfigFile, CommandLineValueIsNotCheckedAgainstTheFile) {
  TempDir dir("mk-conf");
  Command c;
  c.parse(ConfigFile::read(write(dir, "a.conf", "port = 70000\n")), {"--port", "9"});
  EXPECT_EQ(c.o.port, 9);
}

TEST(ConfigFile, MissingFileIsAUsageError) {
  EXPECT_NE(usage_error([] { ConfigFile::read("/nonexistent/oma.conf"); }).find("/nonexistent/oma.conf: cannot read"),
            std::string::npos);
}

TEST(ConfigFile, LocateNamesTheLineOfSettingsTakenFromTheFile) {
  TempDir dir("mk-conf");
  auto path = write(dir, "a.conf", "name = \"x\"\nport = 5\n");
  auto file = ConfigFile::read(path);
  Command c;
  c.parse(file, {"--name", "y"});
  EXPECT_EQ(file.locate("--port 5: refused"), path + ":2: --port 5: refused");
  EXPECT_EQ(file.locate("--name y: refused"), "--name y: refused");  // from the command line
  EXPECT_EQ(file.locate("--portable: other"), "--portable: other");
}

// --- The real binaries --------------------------------------------------------------

struct Result {
  int status;
  std::string out, err;
};

Result run(const TempDir& dir, std::vector<std::string> argv) {
  std::string err_path = dir.file("stderr");
  std::filesystem::remove(err_path);
  Result r;
  r.status = run_capture(argv, r.out, err_path);
  r.err = mk::test::read_file(err_path);
  return r;
}

TEST(OmaConfig, CheckConfigAcceptsAValidFile) {
  TempDir dir("mk-conf");
  auto path = write(dir, "oma.conf", "data-dir = \"" + dir.file("data") + "\"\napi-port = 8082\nverbose = true\n");
  Result r = run(dir, {OMA_BIN, "--check-config", "--config", path});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("the configuration is valid (" + path), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir.file("data"))) << "--check-config must not create state";
}

TEST(OmaConfig, CheckConfigNamesFileLineAndSetting) {
  TempDir dir("mk-conf");
  auto path = write(dir, "oma.conf", "data-dir = \"/x\"\n# progress\npoll-interval-ms = 5\n");
  Result r = run(dir, {OMA_BIN, "--check-config", "--config", path});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find(path + ":3: poll-interval-ms: "), std::string::npos) << r.err;
  // The command line overrides the file's value.
  r = run(dir, {OMA_BIN, "--check-config", "--config", path, "--poll-interval-ms", "100"});
  EXPECT_EQ(r.status, 0) << r.err;
  // A check the OMA makes after parsing (the values pairing bundles carry).
  path = write(dir, "oma2.conf", "data-dir = \"/x\"\nssh-host = \"-oProxyCommand=x\"\n");
  r = run(dir, {OMA_BIN, "--check-config", "--config", path});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find(path + ":2: --ssh-host "), std::string::npos) << r.err;
  // A required setting missing from both.
  path = write(dir, "oma3.conf", "api-port = 8082\n");
  r = run(dir, {OMA_BIN, "--check-config", "--config", path});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--data-dir"), std::string::npos) << r.err;
  r = run(dir, {OMA_BIN, "--check-config", "--config", path, "--data-dir", dir.file("d")});
  EXPECT_EQ(r.status, 0) << r.err;
}

// nbd-server verifies no NBD client and serves every export to all: never by accident.
TEST(OmaConfig, TheUnauthenticatedNbdServerBackendNeedsItsExplicitOption) {
  TempDir dir("mk-conf");
  auto path = write(dir, "oma.conf", "data-dir = \"/x\"\nexport-backend = \"nbd-server\"\n");
  Result r = run(dir, {OMA_BIN, "--check-config", "--config", path});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--allow-unisolated-exports"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("nbdkit backend"), std::string::npos) << r.err;
  r = run(dir, {OMA_BIN, "--check-config", "--config", path, "--allow-unisolated-exports"});
  EXPECT_EQ(r.status, 0) << r.err;
}

TEST(VmaConfig, CheckConfigNamesFileLineAndSetting) {
  TempDir dir("mk-conf");
  std::string base = "state-dir = \"/x\"\nvcenter = \"https://vc/sdk\"\nvcenter-user = \"u\"\nvcenter-password-file = \"/p\"\n";
  auto good = write(dir, "vma.conf", base + "max-vms = 8\nread-rate-limit = \"100M\"\n");
  Result r = run(dir, {VMA_BIN, "run", "--check-config", "--config", good});
  EXPECT_EQ(r.status, 0) << r.err;
  auto bad = write(dir, "vma-bad.conf", base + "max-vms = 0\n");
  r = run(dir, {VMA_BIN, "run", "--check-config", "--config", bad});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find(bad + ":5: max-vms: "), std::string::npos) << r.err;
  r = run(dir, {VMA_BIN, "run", "--check-config", "--config", bad, "--max-vms", "2"});
  EXPECT_EQ(r.status, 0) << r.err;
}

// The lab path (flat files instead of VDDK) is not in the product: the installed `vma`
// keeps --lab-flat-datastore out of --help (and so of its man page) and refuses it from
// the command line and from a configuration file, saying why; `vma-lab`, the test build,
// shows it as LAB ONLY and accepts it.
TEST(VmaConfig, ProductRefusesTheLabFlatDatastore) {
  TempDir dir("mk-conf");
  std::string base = "state-dir = \"/x\"\nvcenter = \"https://vc/sdk\"\nvcenter-user = \"u\"\nvcenter-password-file = \"/p\"\n";
  auto plain = write(dir, "vma.conf", base);
  auto lab = write(dir, "vma-lab.conf", base + "lab-flat-datastore = [\"ds1=/mnt/ds1\"]\n");
  const std::vector<std::string> option = {"--lab-flat-datastore", "ds1=/mnt/ds1"};

  Result help = run(dir, {VMA_BIN, "run", "--help"});
  EXPECT_EQ(help.status, 0) << help.err;
  EXPECT_NE(help.out.find("--vddk-libdir"), std::string::npos) << help.out;
  EXPECT_EQ(help.out.find("flat"), std::string::npos) << help.out;
  EXPECT_EQ(help.out.find("LAB"), std::string::npos) << help.out;

  std::vector<std::string> argv = {VMA_BIN, "run", "--check-config", "--config", plain};
  argv.insert(argv.end(), option.begin(), option.end());
  Result r = run(dir, argv);
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.err.find("--lab-flat-datastore is a lab path"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("built without lab paths"), std::string::npos) << r.err;
  r = run(dir, {VMA_BIN, "run", "--check-config", "--config", lab});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.err.find(lab + ":5: --lab-flat-datastore is a lab path"), std::string::npos) << r.err;

  Result lab_help = run(dir, {VMA_LAB_BIN, "run", "--help"});
  EXPECT_NE(lab_help.out.find("--lab-flat-datastore"), std::string::npos) << lab_help.out;
  EXPECT_NE(lab_help.out.find("LAB ONLY"), std::string::npos) << lab_help.out;
  argv[0] = VMA_LAB_BIN;
  r = run(dir, argv);
  EXPECT_EQ(r.status, 0) << r.err;
  r = run(dir, {VMA_LAB_BIN, "run", "--check-config", "--config", lab});
  EXPECT_EQ(r.status, 0) << r.err;
}

// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
  int fd = -1;
  explicit NotifySocket(const std::string& path) {
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw Error("cannot bind " + path);
  }
  ~NotifySocket() { ::close(fd); }
  // The next datagram, or "" after `timeout_ms`.
  std::string next(int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return "";
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, n) : "";
  }
};

// oma.conf for an OMA on loopback, on ports free at run time, without the GUI.
std::string service_conf(const TempDir& dir, const std::string& data) {
  return write(dir, "oma.conf",
               "data-dir = \"" + data + "\"\napi-listen = \"127.0.0.1\"\napi-port = 0\ngui-port = -1\n"
               "nbd-listen = \"127.0.0.1\"\nnbd-port = 0\n");
}

TEST(OmaConfig, ServiceSettingsFromTheFileAndReadyOnceTheApiListens) {
  TempDir dir("mk-conf");
  std::string data = dir.file("data");
  auto path = service_conf(dir, data);
  NotifySocket notify(dir.file("notify"));
  SpawnOptions o;
  o.env["NOTIFY_SOCKET"] = dir.file("notify");
  o.stdout_path = o.stderr_path = dir.file("oma.log");
  auto oma = Subprocess::spawn({OMA_BIN, "--config", path}, o);
  std::string message;
  for (int i = 0; i < 120 && message.empty() && oma.running(); ++i) message = notify.next(1000);
  ASSERT_NE(message.find("READY=1"), std::string::npos) << mk::test::read_file(dir.file("oma.log"));
  // Ready means the API listens: its port is written and takes connections.
  int port = std::stoi(mk::test::read_file(data + "/api.port"));
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ::close(fd);
  EXPECT_NE(message.find("STATUS=API on port " + std::to_string(port)), std::string::npos);
  oma.signal(SIGTERM);
  EXPECT_EQ(notify.next(30000), "STOPPING=1");
  EXPECT_EQ(oma.wait(), 0);
}

// Upgrades: the OMA migrates its database at start; a database a newer OMA wrote is
// refused (exit status 1, naming both versions) and left as it is, so that going back
// to an older package never damages it.
TEST(OmaUpgrade, RefusesADatabaseWrittenByANewerOma) {
  TempDir dir("mk-conf");
  std::string data = dir.file("data");
  auto path = service_conf(dir, data);
  {
    std::filesystem::create_directories(data);
    auto db = oma::db::open_database("sqlite:" + data + "/oma.db");
    oma::db::migrate(*db);
    db->exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from a newer OMA', 0)",
             {int64_t{oma::db::migrations().back().version + 1}});
  }
  SpawnOptions o;
  o.stdout_path = o.stderr_path = dir.file("oma.log");
  auto oma = Subprocess::spawn({OMA_BIN, "--config", path}, o);
  EXPECT_EQ(oma.wait(), 1);
  std::string log = mk::test::read_file(dir.file("oma.log"));
  EXPECT_NE(log.find(fmt::format("has schema version {} but this OMA knows only up to {}",
                                 oma::db::migrations().back().version + 1, oma::db::migrations().back().version)),
            std::string::npos)
      << log;
  auto db = oma::db::open_database("sqlite:" + data + "/oma.db");
  EXPECT_EQ(oma::db::schema_version(*db), oma::db::migrations().back().version + 1);
  EXPECT_FALSE(std::filesystem::exists(data + "/api.port"));
}

}  // namespace
}  // namespace mk::config

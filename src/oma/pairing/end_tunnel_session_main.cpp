// oma-end-tunnel-session: the tunnel-session helper (oma/pairing/tunnel_session_helper.h).
// Started by systemd for one connection to migratekit-oma-end-tunnel.socket (Accept=yes,
// the connection on stdin and stdout), as root with only CAP_KILL and CAP_SYS_PTRACE:
// reads the OMA's request, ends the sshd session of the tunnel user that holds the
// requested loopback port (and nothing else), answers and exits. Its log goes to stderr
// (the journal): every request, its asker and its outcome.
//
//   oma-end-tunnel-session --tunnel-user migratekit [--client-user oma] [--grace-ms 5000]
//
// Exit status: 0 when it answered (whatever the outcome), 2 for a usage error.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <pwd.h>
#include <signal.h>

#include <cstdio>

#include "common/error.h"
#include "oma/pairing/tunnel_session_helper.h"

namespace {

uid_t uid_of(const std::string& user, const char* option) {
  errno = 0;
  passwd* pw = ::getpwnam(user.c_str());
  if (!pw)
    throw mk::UsageError(fmt::format("{} {}: no such user (the package makes it: reinstall migratekit-oma)", option,
                                     user));
  return pw->pw_uid;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"oma-end-tunnel-session: ends the sshd session holding a revoked VMA's tunnel port, for an OMA "
               "that runs unprivileged (one request on stdin, the answer on stdout)"};
  std::string tunnel_user, client_user;
  int grace_ms = 5000;
  app.add_option("--tunnel-user", tunnel_user, "The SSH user VMAs log in as: only its sshd sessions are ended")
      ->required();
  app.add_option("--client-user", client_user, "The user the OMA runs as, who may ask (root always may)");
  app.add_option("--grace-ms", grace_ms, "Milliseconds between SIGTERM and SIGKILL (default 5000)")
      ->check(CLI::Range(0, 60000));
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  try {
    mk::oma::HelperOptions o;
    o.tunnel_uid = uid_of(tunnel_user, "--tunnel-user");
    if (o.tunnel_uid == 0) throw mk::UsageError("--tunnel-user may not be root: the helper never ends root's sessions");
    if (!client_user.empty()) o.client_uid = uid_of(client_user, "--client-user");
    o.grace = std::chrono::milliseconds(grace_ms);
    mk::oma::serve_end_tunnel_request(0, 1, o);
    return 0;
  } catch (const mk::UsageError& e) {
    std::fprintf(stderr, "oma-end-tunnel-session: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "oma-end-tunnel-session: %s\n", e.what());
    return 1;
  }
}

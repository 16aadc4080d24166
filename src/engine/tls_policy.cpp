#include "engine/tls_policy.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace mk::engine {
namespace {

constexpr const char* kGuard = "MIGRATEKIT_TLS_POLICY_APPLIED";
constexpr const char* kPriorityFile =
    "[overrides]\n"
    "tls-disabled-cipher = CHACHA20-POLY1305\n";

bool wants_tls(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "nbds://", 7) == 0 || std::strncmp(argv[i], "nbds+unix://", 12) == 0) return true;
  }
  return false;
}

}  // namespace

void apply_tls_cipher_policy(int argc, char** argv, bool tls_always) {
  if (std::getenv(kGuard) || std::getenv("GNUTLS_SYSTEM_PRIORITY_FILE")) return;
  const char* choice = std::getenv("MIGRATEKIT_TLS_CIPHERS");
  if (choice && std::strcmp(choice, "system") == 0) return;
  if (!tls_always && !wants_tls(argc, argv)) return;

  int fd = memfd_create("migratekit-gnutls-priority", 0);  // inherited across exec
  if (fd < 0) return;
  size_t len = std::strlen(kPriorityFile);
  if (write(fd, kPriorityFile, len) != static_cast<ssize_t>(len)) {
    close(fd);
    return;
  }
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  setenv("GNUTLS_SYSTEM_PRIORITY_FILE", path.c_str(), 1);
  setenv(kGuard, "1", 1);
  execv("/proc/self/exe", argv);
  // exec failed: carry on with the defaults.
  unsetenv("GNUTLS_SYSTEM_PRIORITY_FILE");
  close(fd);
}

}  // namespace mk::engine

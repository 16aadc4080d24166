// Writes the seed corpus of the fuzz targets whose inputs follow a schema (the protocol
// messages, the pairing documents, the REST API's requests): one file per message type
// or route, made of the schema's examples (schema::example), so that the seeds follow
// the code when a schema changes. The other targets' seeds are written by hand.
//
//   build-fuzz/fuzz/fuzz_make_seeds fuzz/corpus       (protocol and pairing seeds)
//   build-fuzz/fuzz/fuzz_make_seeds_api fuzz/corpus   (the same and the API's; links the OMA)
//
// The first byte of a protocol or pairing seed is the selector of its type (see the
// targets): a printable character whose value modulo the number of types is the index.
#include <filesystem>
#include <fstream>
#include <regex>

#include "common/log.h"
#include "fuzz_support.h"
#include "protocol/enrolment.h"
#include "protocol/messages.h"
#ifdef MK_SEEDS_WITH_API
#include "oma_world.h"
#endif

namespace {

namespace fs = std::filesystem;

void write(const fs::path& dir, const std::string& name, const std::string& content) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << content;
}

// A printable selector character that picks type `index` of `count`.
char selector(size_t index, size_t count) {
  for (int c = '0'; c <= 'z'; ++c) {
    if (static_cast<size_t>(c) % count == index) return static_cast<char>(c);
  }
  mk::fuzz::fail("no printable selector");
}

void typed_seeds(const fs::path& dir, const std::vector<std::pair<std::string, const mk::schema::Schema*>>& types) {
  for (size_t i = 0; i < types.size(); ++i) {
    if (!types[i].second) continue;
    write(dir, types[i].first + ".seed",
          std::string(1, selector(i, types.size())) + mk::schema::example(*types[i].second).dump());
  }
}

#ifdef MK_SEEDS_WITH_API
// "/api/v1/vms/{vm_id}" with each parameter replaced by its example.
std::string example_path(const mk::oma::api::Route& r) {
  std::string path = r.path;
  for (const auto& p : r.params) {
    std::string value = p.example.is_string() ? p.example.get<std::string>()
                        : p.example.is_null() ? "42a1b2c3-d4e5-4f60-8a7b-8c9d0e1f2a3b"
                                              : p.example.dump();
    path = std::regex_replace(path, std::regex("\\{" + p.name + "\\}"), value);
  }
  return path;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds CORPUS_DIR\n");
    return 2;
  }
  mk::log::set_level(mk::log::Level::Off);
  fs::path out = argv[1];
  namespace ps = mk::protocol::schemas;
  // The order of the types in fuzz/protocol_messages.cpp and fuzz/pairing_bundle.cpp.
  typed_seeds(out / "protocol_messages",
              {{"replicate_request", &ps::replicate_request()}, {"replicate_accepted", &ps::replicate_accepted()},
               {"disk_progress", &ps::disk_progress()},         {"job_progress", &ps::job_progress()},
               {"stop_reply", &ps::stop_reply()},               {"cleanup_reply", &ps::cleanup_reply()},
               {"power_request", &ps::power_request()},         {"power_reply", &ps::power_reply()},
               {"discovered_vm", &ps::discovered_vm()},         {"discovery", &ps::discovery()},
               {"preflight_finding", &ps::preflight_finding()}, {"preflight_reply", &ps::preflight_reply()},
               {"health", &ps::health()},                       {"empty_request", &ps::empty_request()},
               {"error_reply", &ps::error_reply()}});
  typed_seeds(out / "pairing_bundle", {{"pairing_bundle", &ps::pairing_bundle()},
                                       {"enrol_request", &ps::enrol_request()},
                                       {"enrol_reply", &ps::enrol_reply()},
                                       {"public_key", nullptr}});
  write(out / "pairing_bundle", "public_key.seed",
        std::string(1, selector(3, 4)) +
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl vma@site");
#ifdef MK_SEEDS_WITH_API
  for (const auto& r : mk::fuzz::world().router.routes()) {
    if (r.stream) continue;
    std::string request = r.method + " " + example_path(r) + "\n";
    if (r.body) request += mk::schema::example(*r.body).dump();
    write(out / "api_request", r.operation_id + ".seed", request);
  }
#endif
  return 0;
}

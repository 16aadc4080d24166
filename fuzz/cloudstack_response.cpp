// libFuzzer target: what the OMA makes of CloudStack's answers (src/cloudstack). An
// in-process HTTP server on 127.0.0.1 answers the real Client's requests with the
// fuzzer's answers, in order, so that whole flows run as in production: volume lookups,
// paged lists, asynchronous jobs, the settings check, the target preflight.
//
// Input: a selector byte (which flow), then the answers separated by blank lines
// ("\n\n"). An answer may start with "!NNN " to be sent with HTTP status NNN (default
// 200). When the answers run out, the server answers a CloudStack error (530), so every
// flow ends. Checks: only mk::Error escapes.
#include <httplib.h>

#include <mutex>
#include <thread>

#include "cloudstack/client.h"
#include "cloudstack/preflight.h"
#include "cloudstack/settings.h"
#include "cloudstack/vm_builder.h"
#include "cloudstack/volumes.h"
#include "common/log.h"
#include "fuzz_support.h"

namespace {

using namespace mk::cloudstack;

constexpr const char* kVolumeId = "6f0a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b";
constexpr const char* kVmUuid = "42a1b2c3-d4e5-4f60-8a7b-8c9d0e1f2a3b";
constexpr const char* kOmaVmId = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";

// The answers of one input, served in order by the server thread.
struct Answers {
  std::mutex mu;
  std::vector<std::pair<int, std::string>> queue;
  size_t next = 0;
};

Answers& answers() {
  static Answers a;
  return a;
}

int server_port() {
  static int port = [] {
    static httplib::Server server;
    auto reply = [](const httplib::Request&, httplib::Response& res) {
      Answers& a = answers();
      std::lock_guard lock(a.mu);
      if (a.next < a.queue.size()) {
        auto& [status, body] = a.queue[a.next++];
        res.status = status;
        res.set_content(body, "application/json");
      } else {
        res.status = 530;
        res.set_content(R"({"errorresponse":{"errorcode":530,"errortext":"no more answers"}})", "application/json");
      }
    };
    server.Get("/client/api", reply);
    server.Post("/client/api", reply);
    int p = server.bind_to_any_port("127.0.0.1");
    if (p <= 0) mk::fuzz::fail("cannot listen on 127.0.0.1");
    // Bound and listening already: connections queue until the loop accepts them.
    std::thread([] { server.listen_after_bind(); }).detach();
    return p;
  }();
  return port;
}

void load_answers(const std::string& text) {
  Answers& a = answers();
  std::lock_guard lock(a.mu);
  a.queue.clear();
  a.next = 0;
  size_t pos = 0;
  while (pos <= text.size() && a.queue.size() < 64) {
    size_t end = text.find("\n\n", pos);
    std::string chunk = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    int status = 200;
    if (chunk.size() >= 5 && chunk[0] == '!' && chunk[4] == ' ' && std::isdigit((unsigned char)chunk[1]) &&
        std::isdigit((unsigned char)chunk[2]) && std::isdigit((unsigned char)chunk[3])) {
      status = std::stoi(chunk.substr(1, 3));
      if (status < 200) status = 200;  // 1xx would leave the client waiting for more
      chunk = chunk.substr(5);
    }
    a.queue.emplace_back(status, chunk);
    if (end == std::string::npos) break;
    pos = end + 2;
  }
}

Endpoint endpoint() {
  return {fmt::format("http://127.0.0.1:{}/client/api", server_port()), "fuzz-api-key", "fuzz-secret-key"};
}

ClientOptions options() {
  ClientOptions o;
  o.allow_insecure_http = true;
  o.http_timeout = std::chrono::seconds(5);
  o.poll_initial = std::chrono::milliseconds(1);
  o.poll_max = std::chrono::milliseconds(1);
  o.job_timeout = std::chrono::milliseconds(50);
  o.page_size = 2;
  return o;
}

VolumesConfig volumes_config() {
  VolumesConfig c;
  c.oma_id = "fuzz-oma";
  c.oma_vm_id = kOmaVmId;
  c.zone_id = "zone-1";
  c.disk_offering_id = "offering-1";
  c.by_id_dir = "/nonexistent-fuzz-by-id";
  c.device_timeout = std::chrono::milliseconds(0);
  return c;
}

TargetSettings target_settings() {
  TargetSettings t;
  t.zone_id = "zone-1";
  t.service_offering_id = "service-1";
  t.template_id = "template-1";
  t.networks["VM Network"] = NetworkMapping{"net-1", true};
  return t;
}

SourceVm source_vm() {
  SourceVm vm;
  vm.vm_uuid = kVmUuid;
  vm.name = "web-01";
  vm.cpus = 2;
  vm.memory_mib = 2048;
  vm.disks.push_back({DiskRef{kVmUuid, "2000", 1ull << 30}, 0, true, kVolumeId});
  vm.disks.push_back({DiskRef{kVmUuid, "2001", 3ull << 30}, 1, false, kVolumeId});
  return vm;
}

void run_flow(uint8_t selector) {
  Client client(endpoint(), options());
  CloudStackVolumes volumes(client, volumes_config());
  DiskRef disk{kVmUuid, "2000", 5ull << 30};
  switch (selector % 10) {
    case 0: volumes.get(kVolumeId); break;
    case 1: volumes.owned_by_vm(kVmUuid); break;
    case 2: volumes.create(disk); break;
    case 3: volumes.grow(kVolumeId, disk, 9ull << 30); break;
    case 4: volumes.attach_to_oma(kVolumeId, disk); break;
    case 5: {
      Settings s;
      s.api_url = endpoint().api_url;
      s.api_key = "fuzz-api-key";
      s.secret_key = "fuzz-secret-key";
      s.zone_id = "zone-1";
      s.disk_offering_id = "offering-1";
      s.service_offering_id = "service-1";
      s.template_id = "template-1";
      s.network_ids = {"net-1", "net-2"};
      s.oma_mac = "02:00:00:00:00:01";
      validate_settings(s, options());
      break;
    }
    case 6: {
      CloudLimits limits = read_limits(client, kOmaVmId);
      check_target(client, limits, target_settings(), source_vm(), kOmaVmId);
      break;
    }
    case 7: check_oma_vm(client, kOmaVmId); break;
    case 8: {
      VmBuilder builder(client, volumes, target_settings());
      builder.check(source_vm());
      builder.free_host_name(source_vm());
      break;
    }
    case 9: client.list("listVirtualMachines", "virtualmachine"); break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mk::log::set_level(mk::log::Level::Off);
  server_port();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mk::fuzz::Input in(data, size);
  load_answers(in.text);
  mk::fuzz::expect_error([&] { run_flow(in.selector); });
  return 0;
}

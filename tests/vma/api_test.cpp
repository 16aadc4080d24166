// The VMA's API against vcsim: discovery with disks and NICs, health, signed requests
// (and signed answers) on every route, the protocol version on every request and answer (an OMA of another
// version is refused naming both versions, in both directions), malformed requests
// answered 400 naming the field, power operations for cutover, and removal of our
// snapshots (on request and at start).
#include <httplib.h>

#include <ctime>

#include "protocol/request_auth.h"
#include "vma_fixture.h"

namespace mk::vma::test {
namespace {

using nlohmann::json;
using protocol::PowerAction;
using protocol::PowerState;

class VmaApi : public VmaFixture {
 protected:
  void SetUp() override {
    VmaFixture::SetUp();
    start_vma();
  }

  // A raw request signed with the token (if any) and the protocol version header (if any).
  // `query` follows the path, unsigned (as the OMA sends a long poll's).
  httplib::Result call(const std::string& method, const std::string& path, const std::string& body,
                       const std::string& token,
                       std::optional<std::string> version = std::to_string(protocol::kVersion),
                       const std::string& query = "") {
    httplib::Client c("127.0.0.1", vma->port());
    c.set_read_timeout(std::chrono::seconds(60));
    httplib::Headers h;
    if (!token.empty()) {
      h.emplace("Authorization", protocol::sign_request(token, method, path, body,
                                                        static_cast<int64_t>(std::time(nullptr)), protocol::new_nonce()));
    }
    if (version) h.emplace(protocol::kVersionHeader, *version);
    std::string target = query.empty() ? path : path + "?" + query;
    return method == "GET" ? c.Get(target.c_str(), h) : c.Post(target.c_str(), h, body, "application/json");
  }
  struct Answer {
    int status = 0;
    std::string error, field;  // of an ErrorReply
  };
  Answer post(const std::string& path, const std::string& body) { return request("POST", path, body); }
  Answer request(const std::string& method, const std::string& path, const std::string& body) {
    auto r = call(method, path, body, kToken);
    if (!r) return {0, httplib::to_string(r.error()), ""};
    json j = json::parse(r->body, nullptr, false);
    if (!j.is_object()) return {r->status, r->body, ""};
    return {r->status, j.value("error", r->body), j.value("field", "")};
  }

  static json replicate_body(const std::string& vm_id) {
    return {{"job_id", "0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70"},
            {"vm_id", vm_id},
            {"kind", "full"},
            {"nbd", {{"host", "127.0.0.1"}, {"port", 10809}, {"tls", "psk"}}},
            {"disks", json::array({{{"disk_key", "204"}, {"unit", 0}, {"capacity_bytes", 1048576},
                                    {"export", "migration-vm-" + vm_id + "-disk0"}, {"change_id_base", nullptr}}})}};
  }
};

TEST_F(VmaApi, DiscoverShowsTheLabVmsWithDisksAndNics) {
  auto vm0 = prepare_vm("DC0/vm/DC0_H0_VM0", 2048, 1, 1);
  protocol::Discovery d = client->discover();
  EXPECT_EQ(d.vcenter, lab.url().substr(8, lab.url().find("/sdk") - 8));
  std::set<std::string> names;
  for (const auto& v : d.vms) {
    names.insert(v.name);
    EXPECT_EQ(v.datacenter, "DC0") << v.name;
    EXPECT_FALSE(v.disks.empty()) << v.name;
    EXPECT_FALSE(v.nics.empty()) << v.name;
    for (const auto& n : v.nics) EXPECT_EQ(n.mac.size(), 17u) << v.name << " NIC " << n.key << ": " << n.mac;
    EXPECT_GT(v.cpus, 0);
    EXPECT_GT(v.memory_mb, 0);
    if (v.vm_id != vm0.instance_uuid) continue;
    EXPECT_EQ(v.name, "DC0_H0_VM0");
    ASSERT_EQ(v.disks.size(), 2u);
    EXPECT_EQ(v.disks[0].disk_key, protocol::DiskKey(vm0.disks[0].key));
    EXPECT_EQ(v.disks[0].unit, 0);
    EXPECT_EQ(v.disks[1].unit, 1);
    EXPECT_EQ(v.disks[0].capacity_bytes, 1048576);
    EXPECT_EQ(v.disks[1].capacity_bytes, 2048 * 1024);
    EXPECT_FALSE(v.disks[1].label.empty());
    EXPECT_EQ(v.disks[1].label.find('/'), std::string::npos) << "labels are display names, not paths";
  }
  EXPECT_EQ(names, (std::set<std::string>{"DC0_H0_VM0", "DC0_H0_VM1", "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"}));
}

// The boot disk is unit 0, which the OMA builds the VM's root disk from: an NVMe boot
// disk beside the SCSI one, then the boot order pointing back at the SCSI disk.
TEST_F(VmaApi, DiscoveryPutsTheBootDiskFirst) {
  auto vm = vm_at("DC0/vm/DC0_H0_VM0");
  int scsi_disk = vm.disks[0].key;
  int nvme = mk::test::add_lab_controller(*session, vm, "VirtualNVMEController");
  vm = mk::test::add_lab_disk(*session, vm, nvme, "LocalDS_0", 1024 * 1024, "boot");
  auto units = [&] {
    std::map<int64_t, std::string> out;
    for (const auto& v : client->discover().vms) {
      if (v.vm_id != vm.instance_uuid) continue;
      for (const auto& d : v.disks) out[d.unit] = d.disk_key.str();
    }
    return out;
  };
  auto first = units();
  ASSERT_EQ(first.size(), 2u);
  EXPECT_NE(first[0], std::to_string(scsi_disk)) << "the NVMe disk boots before the SCSI one";
  mk::test::set_lab_boot_order(*session, vm, {scsi_disk});
  EXPECT_EQ(units()[0], std::to_string(scsi_disk));
}

// A VM that a pass would refuse carries its findings in discovery (so that the OMA can
// mark it) and in its preflight route, each naming the disk; the others carry none.
TEST_F(VmaApi, DiscoveryAndPreflightNameWhatWouldRefuseAPass) {
  auto vm = vm_at("DC0/vm/DC0_H0_VM0");
  vm = mk::test::add_lab_disk(*session, vm, mk::test::first_disk_controller(vm), "LocalDS_0", 1024 * 1024, "indep",
                              {.disk_mode = "independent_persistent"});
  int indep = vm.disks.back().key;
  vsphere::create_snapshot(*session, vm, "before-upgrade", "the owner's");
  auto get = [&](const std::string& path) {
    auto r = call("GET", path, "", kToken);
    EXPECT_TRUE(r);
    EXPECT_EQ(r->status, 200) << path << ": " << r->body;
    return nlohmann::json::parse(r->body);
  };
  std::map<std::string, std::set<std::string>> codes;  // vm -> codes
  auto discovered = get("/api/v1/discover");
  for (const auto& v : discovered["vms"]) {
    auto& c = codes[v["vm_id"]];
    for (const auto& f : v["findings"]) {
      c.insert(f["code"].get<std::string>());
      if (f["code"] == "independent-disk") {
        EXPECT_EQ(f["disk_key"], std::to_string(indep)) << f.dump();
      } else if (f["code"] == "existing-snapshots") {
        EXPECT_TRUE(f["disk_key"].is_null()) << f.dump();
      }
    }
  }
  EXPECT_EQ(codes[vm.instance_uuid], (std::set<std::string>{"independent-disk", "existing-snapshots"}))
      << discovered.dump();
  EXPECT_TRUE(codes[vm_at("DC0/vm/DC0_H0_VM1").instance_uuid].empty());

  auto one = get("/api/v1/preflight/" + vm.instance_uuid);
  ASSERT_EQ(one["findings"].size(), 2u) << one.dump();
  for (const auto& f : one["findings"]) {
    EXPECT_NE(f["text"].get<std::string>().find("VM DC0_H0_VM0"), std::string::npos) << f.dump();
    EXPECT_FALSE(f["remedy"].get<std::string>().empty());
  }
  auto missing = call("GET", "/api/v1/preflight/0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70", "", kToken);
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  auto bad = call("GET", "/api/v1/preflight/not-a-uuid", "", kToken);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
}

// One VM read without listing the inventory (what each pass of the OMA needs): the same
// as discovery shows it, datacenter (through its parents, a resource pool's VM too),
// disks in unit order and findings included.
TEST_F(VmaApi, DescribeShowsOneVmAsDiscoveryDoes) {
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 2048, 1, 1);
  vsphere::create_snapshot(*session, vm, "before-upgrade", "the owner's");
  std::map<std::string, protocol::DiscoveredVm> discovered;
  for (auto& v : client->discover().vms) discovered[v.vm_id] = v;
  for (const char* path : {"DC0/vm/DC0_H0_VM0", "DC0/vm/DC0_C0_RP0_VM0"}) {
    SCOPED_TRACE(path);
    std::string id = vm_at(path).instance_uuid;
    protocol::DiscoveredVm one = client->describe_vm(id);
    EXPECT_EQ(protocol::encode(one), protocol::encode(discovered.at(id)));
    EXPECT_EQ(one.datacenter, "DC0");
  }
  protocol::DiscoveredVm one = client->describe_vm(vm.instance_uuid);
  ASSERT_EQ(one.disks.size(), 2u);
  EXPECT_EQ(one.disks[1].capacity_bytes, 2048 * 1024);
  ASSERT_EQ(one.findings.size(), 1u);
  EXPECT_EQ(one.findings[0].code, "existing-snapshots");
  EXPECT_EQ(one.firmware, "bios");  // vcsim's VMs are BIOS VMs
  EXPECT_FALSE(one.secure_boot);
  auto missing = call("GET", "/api/v1/vms/0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70", "", kToken);
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404) << missing->body;
  auto bad = call("GET", "/api/v1/vms/not-a-uuid", "", kToken);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400) << bad->body;
}

TEST_F(VmaApi, HealthReportsVcenterAndNoTunnel) {
  protocol::Health h = client->health();
  EXPECT_TRUE(h.vcenter.reachable) << h.vcenter.error.value_or("");
  EXPECT_EQ(h.tunnel.state, protocol::TunnelState::Down);
  EXPECT_EQ(h.tunnel.error.value_or(""), "no tunnel configured");
  EXPECT_EQ(h.status, protocol::HealthStatus::Degraded);
  EXPECT_EQ(h.protocol_version, protocol::kVersion);
  EXPECT_TRUE(protocol::is_uuid(h.vma_instance));
}

TEST_F(VmaApi, EveryRouteNeedsTheToken) {
  std::string vm = vm_at("DC0/vm/DC0_H0_VM0").instance_uuid;
  std::vector<std::pair<std::string, std::string>> routes = {
      {"GET", "/api/v1/discover"},
      {"GET", "/api/v1/health"},
      {"GET", "/api/v1/progress/0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70"},
      {"POST", "/api/v1/replicate"},
      {"POST", "/api/v1/stop/0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70"},
      {"POST", "/api/v1/cleanup/" + vm},
      {"POST", "/api/v1/power/" + vm},
      {"GET", "/api/v1/preflight/" + vm},
      {"GET", "/api/v1/vms/" + vm},
      {"GET", "/api/v1/nothing-here"}};
  for (const auto& [method, path] : routes) {
    for (std::string token : {std::string(), std::string("wrong-token"), std::string(kToken) + "x"}) {
      std::string body = path.find("replicate") != std::string::npos ? replicate_body(vm).dump()
                         : path.find("power") != std::string::npos   ? R"({"action":"off"})"
                                                                     : "{}";
      auto r = call(method, path, body, token);
      ASSERT_TRUE(r) << method << " " << path;
      EXPECT_EQ(r->status, 401) << method << " " << path << " with token '" << token << "'";
      EXPECT_NE(r->body.find("token"), std::string::npos) << r->body;
      EXPECT_EQ(r->get_header_value(protocol::kVersionHeader), std::to_string(protocol::kVersion));
    }
  }
  // Nothing happened: the VM is still on, and a wrong token is not logged.
  EXPECT_EQ(vsphere::power_state(*session, vm_at("DC0/vm/DC0_H0_VM0").ref), "poweredOn");
  EXPECT_EQ(mk::test::read_file(vma->log_path()).find("wrong-token"), std::string::npos);
  EXPECT_EQ(mk::test::read_file(vma->log_path()).find(kToken), std::string::npos);
  // With the token, the same client gets through.
  auto ok = call("GET", "/api/v1/health", "", kToken);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

// Signed requests only (protocol/request_auth.h): the token itself as a bearer token, a
// replayed request, a body other than the signed one and a time far from the VMA's clock
// are all refused with 401 before anything runs; every answer to a signed request is
// signed for that request.
TEST_F(VmaApi, OnlySignedRequestsAreTakenAndEveryAnswerIsSigned) {
  httplib::Client c("127.0.0.1", vma->port());
  const std::string version = std::to_string(protocol::kVersion);
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  auto get_health = [&](const std::string& authorization) {
    return c.Get("/api/v1/health", {{"Authorization", authorization}, {protocol::kVersionHeader, version}});
  };
  auto bearer = get_health("Bearer " + std::string(kToken));
  ASSERT_TRUE(bearer);
  EXPECT_EQ(bearer->status, 401);
  EXPECT_NE(bearer->body.find("not signed"), std::string::npos) << bearer->body;

  const std::string nonce = protocol::new_nonce();
  const std::string signed_header = protocol::sign_request(kToken, "GET", "/api/v1/health", "", now, nonce);
  auto ok = get_health(signed_header);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_TRUE(protocol::answer_is_signed(kToken, nonce, 200, ok->body, ok->get_header_value(protocol::kAnswerMacHeader)));
  auto replay = get_health(signed_header);
  ASSERT_TRUE(replay);
  EXPECT_EQ(replay->status, 401);
  EXPECT_NE(replay->body.find("replayed"), std::string::npos) << replay->body;

  auto stale = get_health(protocol::sign_request(kToken, "GET", "/api/v1/health", "", now - 3600, protocol::new_nonce()));
  ASSERT_TRUE(stale);
  EXPECT_EQ(stale->status, 401);
  EXPECT_NE(stale->body.find("clock"), std::string::npos) << stale->body;

  // A stop signed for one body and sent with another: refused, nothing stopped.
  const std::string path = "/api/v1/stop/0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70";
  const std::string n2 = protocol::new_nonce();
  auto swapped = c.Post(path, {{"Authorization", protocol::sign_request(kToken, "POST", path, "{}", now, n2)},
                               {protocol::kVersionHeader, version}},
                        R"({ })", "application/json");
  ASSERT_TRUE(swapped);
  EXPECT_EQ(swapped->status, 401);
  EXPECT_NE(swapped->body.find("not the one it was signed with"), std::string::npos) << swapped->body;
  // Its refusal is signed: the OMA can tell it comes from this VMA.
  EXPECT_TRUE(protocol::answer_is_signed(kToken, n2, 401, swapped->body,
                                         swapped->get_header_value(protocol::kAnswerMacHeader)));
}

TEST_F(VmaApi, MalformedRequestsAreRefusedNamingTheField) {
  std::string vm = vm_at("DC0/vm/DC0_H0_VM0").instance_uuid;
  auto expect_400 = [&](const std::string& path, const std::string& body, const std::string& field,
                        const std::string& mention = "") {
    Answer a = request(path.starts_with("/api/v1/progress") ? "GET" : "POST", path, body);
    EXPECT_EQ(a.status, 400) << path << " " << body;
    EXPECT_EQ(a.field, field) << path << " " << body << ": " << a.error;
    EXPECT_TRUE(a.error.starts_with(field + ": ")) << a.error;
    EXPECT_NE(a.error.find(mention), std::string::npos) << "error \"" << a.error << "\" should mention " << mention;
  };
  expect_400("/api/v1/replicate", "not json", "body", "not valid JSON");
  expect_400("/api/v1/replicate", "[1,2]", "body", "JSON object");
  auto with = [&](const std::function<void(json&)>& change) {
    json b = replicate_body(vm);
    change(b);
    return b.dump();
  };
  expect_400("/api/v1/replicate", with([](json& b) { b.erase("job_id"); }), "job_id", "is required");
  expect_400("/api/v1/replicate", with([](json& b) { b["job_id"] = "../../etc"; }), "job_id", "lowercase UUID");
  expect_400("/api/v1/replicate", with([](json& b) { b["vm_id"] = 42; }), "vm_id", "must be a string");
  expect_400("/api/v1/replicate", with([](json& b) { b["kind"] = "partial"; }), "kind");
  expect_400("/api/v1/replicate", with([](json& b) { b["surplus"] = 1; }), "surplus", "unknown field");
  expect_400("/api/v1/replicate", with([](json& b) { b["nbd"]["tls"] = "none"; }), "nbd.tls");
  expect_400("/api/v1/replicate", with([](json& b) { b["nbd"]["port"] = 70000; }), "nbd.port");
  expect_400("/api/v1/replicate", with([](json& b) { b["nbd"]["host"] = "oma;rm -rf"; }), "nbd.host");
  expect_400("/api/v1/replicate", with([](json& b) { b["disks"] = json::array(); }), "disks");
  expect_400("/api/v1/replicate", with([](json& b) { b["disks"][0]["export"] = "../../dev/sda"; }),
             "disks[0].export");
  expect_400("/api/v1/replicate", with([](json& b) { b["disks"][0]["disk_key"] = "20a"; }), "disks[0].disk_key");
  expect_400("/api/v1/replicate", with([](json& b) { b["disks"][0]["capacity_bytes"] = -1; }),
             "disks[0].capacity_bytes");
  expect_400("/api/v1/replicate", with([](json& b) { b["disks"][0]["change_id_base"] = "52 3c/4"; }),
             "disks[0].change_id_base", "contradicts kind");
  expect_400("/api/v1/replicate", with([](json& b) { b["kind"] = "incremental"; }), "disks[0].change_id_base",
             "contradicts kind");
  expect_400("/api/v1/replicate", with([](json& b) { b["disks"].push_back(b["disks"][0]); }), "disks[1].disk_key",
             "appears twice");
  expect_400("/api/v1/progress/not-a-uuid", "", "job_id");
  expect_400("/api/v1/stop/NOT-A-UUID", "{}", "job_id");
  expect_400("/api/v1/stop/0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70", R"({"now":true})", "now", "unknown field");
  expect_400("/api/v1/cleanup/x", "{}", "vm_id");
  expect_400("/api/v1/power/" + vm, R"({"action":"reboot"})", "action");
  expect_400("/api/v1/power/" + vm, R"({"action":"off","timeout_seconds":"soon"})", "timeout_seconds");
  // None of them started anything.
  auto r = call("GET", "/api/v1/progress/0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70", "", kToken);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(our_snapshots(vm_at("DC0/vm/DC0_H0_VM0")), 0);
  // Unknown VMs and jobs are 404 with what is missing.
  Answer a = post("/api/v1/power/4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0000", R"({"action":"off"})");
  EXPECT_EQ(a.status, 404);
  EXPECT_NE(a.error.find("no VM with instance UUID 4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0000"), std::string::npos)
      << a.error;
  EXPECT_EQ(post("/api/v1/stop/0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70", "{}").status, 404);
}

// A long poll of a job's progress: answered at once without a revision of the caller's,
// then on each change, and at the bound once nothing changes; the revision comes only
// with a long poll's answer; a bad query is 400 naming its field. (No time is measured:
// a wait that never ended would hang the test until CTest's timeout.)
TEST_F(VmaApi, ProgressCanBeLongPolledAndItsAnswerCarriesTheRevision) {
  std::string vm = vm_at("DC0/vm/DC0_H0_VM0").instance_uuid;
  const std::string job = "0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70";
  json body = replicate_body(vm);
  body["nbd"]["port"] = mk::test::free_tcp_port();  // nobody listens: the copy fails, the job ends
  ASSERT_EQ(post("/api/v1/replicate", body.dump()).status, 202);
  protocol::JobProgress p = client->wait_progress(job, {std::nullopt, protocol::kMaxProgressWaitMs}, nullptr);
  ASSERT_TRUE(p.revision);
  int changes = 0;
  while (p.status == protocol::VmaJobStatus::Queued || p.status == protocol::VmaJobStatus::Running) {
    protocol::JobProgress next = client->wait_progress(job, {p.revision, protocol::kMaxProgressWaitMs}, nullptr);
    ASSERT_TRUE(next.revision);
    if (*next.revision != *p.revision) ++changes;
    p = next;
  }
  EXPECT_GT(changes, 0) << "the job's end came as a new revision";
  EXPECT_EQ(client->wait_progress(job, {p.revision, 20}, nullptr).revision, p.revision)
      << "an ended job does not change: answered at the bound with the same revision";
  EXPECT_EQ(client->wait_progress(job, {*p.revision + 1000, protocol::kMaxProgressWaitMs}, nullptr).revision,
            p.revision)
      << "a revision of an earlier run of the VMA is answered at once";
  EXPECT_FALSE(client->progress(job).revision) << "a plain progress call's answer is as before";

  for (const auto& [query, field] : std::vector<std::pair<std::string, std::string>>{
           {"wait_ms=soon", "wait_ms"}, {"wait_ms=10001", "wait_ms"}, {"after=-1&wait_ms=5", "after"}}) {
    auto r = call("GET", "/api/v1/progress/" + job, "", kToken, std::to_string(protocol::kVersion), query);
    ASSERT_TRUE(r) << query;
    EXPECT_EQ(r->status, 400) << query << ": " << r->body;
    EXPECT_EQ(json::parse(r->body).value("field", ""), field) << query;
  }
}

// The OMA speaks a newer protocol than this VMA: the VMA refuses every request (426,
// naming both versions: upgrade the VMA), and the OMA's client refuses the answer the
// same way. Nothing is started.
TEST_F(VmaApi, ANewerOmaIsRefusedAndSaysToUpgradeTheVma) {
  std::string vm = vm_at("DC0/vm/DC0_H0_VM0").instance_uuid;
  const int newer = protocol::kVersion + 1;
  auto r = call("POST", "/api/v1/replicate", replicate_body(vm).dump(), kToken, std::to_string(newer));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 426);
  EXPECT_EQ(r->get_header_value(protocol::kVersionHeader), std::to_string(protocol::kVersion));
  EXPECT_EQ(r->get_header_value("Upgrade"), fmt::format("MigrateKit-Protocol/{}", protocol::kVersion));
  auto refusal = protocol::decode_text<protocol::ErrorReply>(r->body);
  EXPECT_EQ(refusal.field.value_or(""), protocol::kVersionHeader);
  EXPECT_NE(refusal.error.find(fmt::format("the OMA speaks protocol version {} and this VMA speaks version {}", newer,
                                           protocol::kVersion)),
            std::string::npos)
      << refusal.error;
  EXPECT_NE(refusal.error.find("upgrade the VMA"), std::string::npos) << refusal.error;

  oma::HttpVmaClient client_of_newer_oma(vma->url(), std::chrono::seconds(30), kToken, newer);
  std::vector<std::function<void()>> calls = {[&] { client_of_newer_oma.health(); },
                                              [&] { client_of_newer_oma.discover(); },
                                              [&] { client_of_newer_oma.power(vm, PowerAction::Off, 30); }};
  for (const auto& call_it : calls) {
    try {
      call_it();
      ADD_FAILURE() << "a VMA of another protocol version was accepted";
    } catch (const protocol::VersionMismatch& e) {
      std::string m = e.what();
      EXPECT_EQ(e.ours(), newer);
      EXPECT_EQ(e.theirs().value_or(-1), protocol::kVersion);
      EXPECT_NE(m.find(fmt::format("the VMA speaks protocol version {} and this OMA speaks version {}",
                                   protocol::kVersion, newer)),
                std::string::npos)
          << m;
      EXPECT_NE(m.find("upgrade the VMA"), std::string::npos) << m;
    }
  }
  EXPECT_EQ(vsphere::power_state(*session, vm_at("DC0/vm/DC0_H0_VM0").ref), "poweredOn");
  EXPECT_EQ(call("GET", "/api/v1/progress/0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70", "", kToken)->status, 404);
}

// A replicate call for a job the VMA knows (an OMA that restarted before it recorded the
// answer sends it again): accepted again with the same instance and nothing started (one
// job, the copy already running is the one the OMA follows); for another VM, refused with
// 409. The OMA tests' fake VMA (tests/oma/fake_vma.cpp) answers the same way.
TEST_F(VmaApi, AReplicateCallForAJobItKnowsIsAcceptedAgainAndStartsNothing) {
  std::string vm = vm_at("DC0/vm/DC0_H0_VM0").instance_uuid;
  std::string other = vm_at("DC0/vm/DC0_H0_VM1").instance_uuid;
  json body = replicate_body(vm);
  auto first = call("POST", "/api/v1/replicate", body.dump(), kToken);
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 202) << first->body;
  auto accepted = protocol::decode_text<protocol::ReplicateAccepted>(first->body);
  auto again = call("POST", "/api/v1/replicate", body.dump(), kToken);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 202) << again->body;
  auto second = protocol::decode_text<protocol::ReplicateAccepted>(again->body);
  EXPECT_EQ(second.job_id, accepted.job_id);
  EXPECT_EQ(second.vma_instance, accepted.vma_instance);
  json elsewhere = replicate_body(other);
  Answer refused = post("/api/v1/replicate", elsewhere.dump());
  EXPECT_EQ(refused.status, 409);
  EXPECT_NE(refused.error.find("is already known for VM " + vm), std::string::npos) << refused.error;
  EXPECT_EQ(post("/api/v1/stop/" + body["job_id"].get<std::string>(), "{}").status, 200);
  // One job was accepted, once.
  std::string log = mk::test::read_file(vma->log_path());
  // The runner's "job J (VM V, full pass, N disks) accepted".
  const std::string line = "job " + accepted.job_id + " (VM " + vm + ", full pass";
  size_t accepted_lines = 0;
  for (size_t at = log.find(line); at != std::string::npos; at = log.find(line, at + 1)) ++accepted_lines;
  EXPECT_EQ(accepted_lines, 1u) << log;
}

// The VMA speaks a newer protocol than the OMA (or the OMA sends none, as releases
// before versioning did): both refuse, and both say to upgrade the OMA.
TEST_F(VmaApi, AnOlderOmaIsRefusedAndSaysToUpgradeTheOma) {
  const int older = protocol::kVersion - 1;
  oma::HttpVmaClient client_of_older_oma(vma->url(), std::chrono::seconds(30), kToken, older);
  try {
    client_of_older_oma.health();
    ADD_FAILURE() << "a VMA of another protocol version was accepted";
  } catch (const protocol::VersionMismatch& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(fmt::format("the VMA speaks protocol version {} and this OMA speaks version {}",
                                 protocol::kVersion, older)),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("upgrade the OMA"), std::string::npos) << m;
  }
  auto r = call("GET", "/api/v1/health", "", kToken, std::to_string(older));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 426);
  EXPECT_NE(r->body.find("upgrade the OMA"), std::string::npos) << r->body;
  r = call("GET", "/api/v1/discover", "", kToken, std::nullopt);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 426);
  auto refusal = protocol::decode_text<protocol::ErrorReply>(r->body);
  EXPECT_NE(refusal.error.find("the OMA sent no protocol version"), std::string::npos) << refusal.error;
  EXPECT_NE(refusal.error.find(fmt::format("this VMA speaks version {}", protocol::kVersion)), std::string::npos)
      << refusal.error;
  EXPECT_NE(refusal.error.find("upgrade the OMA"), std::string::npos) << refusal.error;
  EXPECT_NE(mk::test::read_file(vma->log_path()).find("upgrade the OMA"), std::string::npos)
      << "the VMA logs the refusal";
}

TEST_F(VmaApi, PowerShutdownOffAndOnAgainstVcsim) {
  auto vm = vm_at("DC0/vm/DC0_H0_VM1");
  ASSERT_EQ(vm.power_state, "poweredOn");
  protocol::PowerReply r = client->power(vm.instance_uuid, PowerAction::Shutdown, 30);
  EXPECT_EQ(r.power_state, PowerState::PoweredOff);
  EXPECT_EQ(vsphere::power_state(*session, vm.ref), "poweredOff");
  r = client->power(vm.instance_uuid, PowerAction::On, 30);
  EXPECT_EQ(r.power_state, PowerState::PoweredOn);
  EXPECT_FALSE(r.forced);
  EXPECT_EQ(vsphere::power_state(*session, vm.ref), "poweredOn");
  r = client->power(vm.instance_uuid, PowerAction::Off, 30);
  EXPECT_EQ(r.power_state, PowerState::PoweredOff);
  EXPECT_EQ(vsphere::power_state(*session, vm.ref), "poweredOff");
  // Asking for the state the VM is in changes nothing and succeeds.
  r = client->power(vm.instance_uuid, PowerAction::Off, 30);
  EXPECT_EQ(r.power_state, PowerState::PoweredOff);
  r = client->power(vm.instance_uuid, PowerAction::Shutdown, 30);
  EXPECT_EQ(r.power_state, PowerState::PoweredOff);
  EXPECT_FALSE(r.forced);
  EXPECT_EQ(client->power(vm.instance_uuid, PowerAction::On, 30).power_state, PowerState::PoweredOn);
}

TEST_F(VmaApi, CleanupRemovesOnlyOurSnapshotsAndStartupRemovesThemAll) {
  auto vm0 = vm_at("DC0/vm/DC0_H0_VM0");
  auto vm1 = vm_at("DC0/vm/DC0_H0_VM1");
  // This VMA's identity on its snapshots, kept in its state directory across restarts.
  std::string owner = mk::test::read_file(dir.file("vma/state/snapshot-owner"));
  owner = "migratekit-owner=" + owner.substr(0, owner.find('\n')) + ";";
  vsphere::create_snapshot(*session, vm0, "migratekit-20260101T000000Z", "left by a crash; " + owner);
  vsphere::create_snapshot(*session, vm0, "operator-backup", "not ours");
  vsphere::create_snapshot(*session, vm1, "migratekit-20260101T000001Z", "left by a crash; " + owner);
  // Another VMA's pass on the same vCenter: never ours to remove.
  vsphere::create_snapshot(*session, vm1, "migratekit-20260101T000009Z", "a pass; migratekit-owner=vma-other;");
  EXPECT_EQ(client->cleanup(vm0.instance_uuid), 1);
  EXPECT_EQ(our_snapshots(vm0), 0);
  ASSERT_EQ(vsphere::list_snapshots(*session, vm0.ref).size(), 1u);
  EXPECT_EQ(vsphere::list_snapshots(*session, vm0.ref)[0].name, "operator-backup");
  EXPECT_EQ(client->cleanup(vm0.instance_uuid), 0);

  // A restart removes the leftovers on every VM before it answers.
  vsphere::create_snapshot(*session, vm0, "migratekit-20260101T000002Z", "left by a crash; " + owner);
  vma->kill9();
  vma->restart();
  EXPECT_EQ(our_snapshots(vm0), 0);
  EXPECT_EQ(our_snapshots(vm1), 1);
  EXPECT_EQ(vsphere::list_snapshots(*session, vm1.ref)[0].name, "migratekit-20260101T000009Z");
  EXPECT_EQ(vsphere::list_snapshots(*session, vm0.ref).size(), 1u);
  EXPECT_NE(mk::test::read_file(vma->log_path()).find("2 leftover snapshot(s) of an earlier run removed"),
            std::string::npos);
}

TEST(VmaRun, RefusesToStartWithoutAToken) {
  mk::test::TempDir dir{"mk-vma-run"};
  mk::test::write_at(dir.file("pw"), 0, "secret\n");
  SpawnOptions so;
  so.stdout_path = so.stderr_path = dir.file("log");
  auto p = Subprocess::spawn({VMA_BIN, "run", "--state-dir", dir.file("state"), "--vcenter", "https://127.0.0.1:1/sdk",
                              "--vcenter-user", "u", "--vcenter-password-file", dir.file("pw"), "--listen",
                              "127.0.0.1:0"},
                             so);
  EXPECT_EQ(p.wait(), 2);
  std::string log = mk::test::read_file(dir.file("log"));
  EXPECT_NE(log.find(dir.file("state") + "/api.token"), std::string::npos) << log;
  EXPECT_NE(log.find("vma pair"), std::string::npos) << log;
  EXPECT_FALSE(std::filesystem::exists(dir.file("state/api.port")));
}

TEST(VmaRun, StartsWithoutVcenterAndSaysSoInHealth) {
  mk::test::TempDir dir{"mk-vma-run"};
  mk::test::write_at(dir.file("pw"), 0, "secret\n");
  mk::test::write_at(dir.file("token"), 0, std::string(kToken) + "\n");
  mk::test::make_psk_file(dir.file("psk"), "oma");
  int nobody = mk::test::free_tcp_port();  // nothing listens there
  SpawnOptions so;
  so.stdout_path = so.stderr_path = dir.file("log");
  auto p = Subprocess::spawn({VMA_BIN, "run", "--state-dir", dir.file("state"), "--vcenter",
                              fmt::format("https://127.0.0.1:{}/sdk", nobody), "--vcenter-user", "u",
                              "--vcenter-password-file", dir.file("pw"), "--listen", "127.0.0.1:0", "--token-file",
                              dir.file("token"), "--nbd-psk-file", dir.file("psk")},
                             so);
  for (int i = 0; i < 3000 && !std::filesystem::exists(dir.file("state/api.port")) && p.running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(std::filesystem::exists(dir.file("state/api.port"))) << mk::test::read_file(dir.file("log"));
  int port = std::stoi(mk::test::read_file(dir.file("state/api.port")));
  oma::HttpVmaClient client(fmt::format("http://127.0.0.1:{}", port), std::chrono::seconds(30), kToken);
  protocol::Health h = client.health();
  EXPECT_EQ(h.status, protocol::HealthStatus::Degraded);
  EXPECT_FALSE(h.vcenter.reachable);
  EXPECT_NE(h.vcenter.error.value_or("").find(fmt::format("127.0.0.1:{}", nobody)), std::string::npos)
      << h.vcenter.error.value_or("");
  try {
    client.discover();
    ADD_FAILURE() << "discovery without vCenter succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 502"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot be reached"), std::string::npos) << e.what();
  }
  EXPECT_NE(mk::test::read_file(dir.file("log")).find("trying again"), std::string::npos);
  p.stop();
}

TEST(VmaRun, RefusesBadArguments) {
  mk::test::TempDir dir{"mk-vma-run"};
  for (std::vector<std::string> extra : {std::vector<std::string>{"--listen", "127.0.0.1"},
                                         {"--listen", "127.0.0.1:99999"},
                                         {"--lab-flat-datastore", "LocalDS_0"},
                                         {"--max-vms", "0"}}) {
    std::vector<std::string> argv = {VMA_BIN, "run", "--state-dir", dir.file("state"), "--vcenter",
                                     "https://127.0.0.1:1/sdk", "--vcenter-user", "u", "--vcenter-password-file",
                                     dir.file("pw")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    SpawnOptions so;
    so.stdout_path = so.stderr_path = dir.file("log");
    so.append = false;
    auto p = Subprocess::spawn(argv, so);
    EXPECT_EQ(p.wait(), 2) << extra[0] << " " << extra[1];
    EXPECT_NE(mk::test::read_file(dir.file("log")).find(extra[0]), std::string::npos)
        << mk::test::read_file(dir.file("log"));
  }
}

}  // namespace
}  // namespace mk::vma::test

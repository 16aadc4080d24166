// Guest conversion at cutover, through the whole OMA (oma --convert-guests): the strict
// fake VMA copies the source disks for real (migratekit over NBD), the OMA inspects the
// volumes before touching the source and converts them with virt-v2v-in-place after the
// final pass. With the local volume backend (the one-disk lab guest), and with the
// cloudstack backend against the simulator (the two-disk lab guest: /var on its second
// disk, mounted by UUID), whose volumes are then booted as the VM CloudStack built
// attaches them. The boot check before cutover (POST /api/v1/vms/{id}/boot-check,
// through `migratekit boot-check`) converts and boots overlays of the replica and leaves
// the replica as the pass left it.
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>
#include <map>
#include <thread>

#include "common/units.h"
#include "fake_vma.h"
#include "guest/boot_check.h"
#include "oma/app.h"
#include "oma_service.h"
#include "sim_server.h"
#include "support/files.h"
#include "support/migratekit_runner.h"
#include "support/nbdkit_server.h"
#include "support/temp_dir.h"

namespace mk::oma {
namespace {

using nlohmann::json;

class GuestCutover : public ::testing::Test {
 protected:
  // A one-disk VM whose disk is `image` (served read-only to the fake VMA's copies).
  void start(const std::string& image) {
    ::setenv("TMPDIR", dir.path().c_str(), 1);
    std::filesystem::create_directories(dir.file("data"));
    vma = std::make_unique<test::FakeVma>(mk::test::make_psk_file(dir.file("data/nbd-psk.keys"), "oma"));
    OmaConfig c = test::test_config(dir.file("data"), vma->url());
    c.volume_backend = "local";
    c.cutover.power_poll = std::chrono::milliseconds(5);
    c.cutover.convert_guests = true;
    c.cutover.conversion_log_dir = dir.file("data/logs");
    oma = std::make_unique<Oma>(c);
    oma->start();
    api = std::make_unique<test::ApiClient>(oma->api_port(), test::read_admin_token(dir.file("data")));
    ASSERT_EQ(api->put("/api/v1/settings/inspection.after_pass", json{{"value", "true"}}.dump()).status, 200);
    source = std::make_unique<mk::test::NbdkitServer>(mk::test::NbdkitOptions{.args = {"file=" + image}, .read_only = true});
    vma->set_source("2000", source->uri());
    json body = {{"vm_id", vm_id}, {"name", "lab-guest"}, {"vcenter", "vcsim.test"}, {"datacenter", "DC0"},
                 {"cpus", 1}, {"memory_mb", 1024},
                 {"disks", {{{"key", "2000"}, {"unit", 0}, {"capacity_bytes", mk::test::file_size(image)}}}},
                 {"nics", json::array()}};
    auto r = api->post("/api/v1/vms", body.dump());
    ASSERT_EQ(r.status, 201) << r.raw;
    vma->add_source_vm(vm_id, "lab-guest", true);
  }

  json run_job(const std::string& path, const json& body, std::chrono::seconds deadline) {
    auto r = api->post(path, body.dump());
    EXPECT_TRUE(r.status == 201 || r.status == 202) << path << ": " << r.raw;
    if (!r.body.is_object() || !r.body.contains("job_id")) return r.body;
    return test::wait_for_job(*api, r.body["job_id"], test::job_ended, deadline);
  }
  const json* step(const json& job, const std::string& name) {
    const json* found = nullptr;
    for (const auto& s : job["steps"]) if (s["name"] == name) found = &s;
    return found;
  }
  std::string volume_path() {
    auto volumes = oma->repos().storage.list_volumes();
    return volumes.empty() ? "" : volumes.front().device_path;
  }
  std::string vm_status() { return api->get("/api/v1/vms/" + vm_id).body["status"]; }
  // This OMA converts guests and inspects after passes, so a full pass is followed by an
  // inspection (real virt-inspector, read-only) that holds the VM: wait for it and return
  // what it stored.
  json inspection_after_full_pass() {
    std::string job;
    for (int i = 0; i < 1500 && job.empty(); ++i) {  // started on the pass's thread once it ended
      const json jobs = api->get("/api/v1/jobs?vm_id=" + vm_id).body["jobs"];  // kept: not a temporary's member
      for (const auto& j : jobs)
        if (j["kind"] == "inspection") job = j["job_id"];
      if (job.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_FALSE(job.empty()) << "no inspection after the full pass";
    if (job.empty()) return json::object();
    json ended = test::wait_for_job(*api, job, test::job_ended, std::chrono::seconds(600));
    EXPECT_EQ(ended["status"], "completed") << ended.dump(2);
    auto r = api->get("/api/v1/vms/" + vm_id + "/inspection");
    EXPECT_EQ(r.status, 200) << r.raw;
    EXPECT_EQ(r.body.value("job_id", ""), job);
    EXPECT_EQ(r.body.value("started_by", ""), "after_pass");
    return r.body;
  }

  void TearDown() override {
    if (vma) {
      EXPECT_TRUE(vma->violations().empty()) << vma->violations()[0];
    }
    api.reset();
    oma.reset();
    vma.reset();
  }

  mk::test::TempDir dir{"mk-guest-cutover"};
  std::unique_ptr<test::FakeVma> vma;
  std::unique_ptr<Oma> oma;
  std::unique_ptr<test::ApiClient> api;
  std::unique_ptr<mk::test::NbdkitServer> source;
  const std::string vm_id = test::test_vm_uuid(0x12);
};

TEST_F(GuestCutover, DiskWithoutAnOsIsRefusedBeforeTheSourceIsTouched) {
  const std::string image = dir.file("random.img");
  mk::test::write_random_at(image, 0, 32 * MiB, 3);
  start(image);
  ASSERT_EQ(run_job("/api/v1/jobs", {{"vm_id", vm_id}, {"kind", "full"}}, std::chrono::seconds(300))["status"],
            "completed");
  // Known long before the cutover: stored as not convertible, with the reason.
  const json inspected = inspection_after_full_pass();
  EXPECT_EQ(inspected.value("os_found", true), false) << inspected.dump(2);
  EXPECT_EQ(inspected.value("convertible", true), false) << inspected.dump(2);
  EXPECT_NE(inspected.value("reason", "").find("no operating system"), std::string::npos) << inspected.dump(2);
  EXPECT_EQ(api->get("/api/v1/vms").body["vms"][0]["guest"]["convertible"], false);
  const std::string before = mk::test::sha256_file(volume_path());
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 30}}, std::chrono::seconds(1200));
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  EXPECT_NE(job["error"].get<std::string>().find("no operating system"), std::string::npos) << job["error"];
  const json* inspection = step(job, "guest-inspection");
  ASSERT_NE(inspection, nullptr) << job.dump(2);
  EXPECT_EQ((*inspection)["status"], "failed");
  EXPECT_EQ(step(job, "final-pass"), nullptr) << "the cutover went on after a refusal";
  EXPECT_TRUE(vma->powered_on(vm_id));
  EXPECT_TRUE(vma->power_calls().empty());
  EXPECT_EQ(vm_status(), "replicated");
  EXPECT_EQ(mk::test::sha256_file(volume_path()), before);
  EXPECT_EQ(api->get("/api/v1/vms/" + vm_id + "/inspection").body["started_by"], "cutover");
}

TEST_F(GuestCutover, VmwareLikeGuestIsConvertedAtCutoverAndThenBootsOnVirtio) {
  start(MK_LAB_GUEST_IMAGE);
  ASSERT_EQ(run_job("/api/v1/jobs", {{"vm_id", vm_id}, {"kind", "full"}}, std::chrono::seconds(900))["status"],
            "completed");
  const json inspected = inspection_after_full_pass();
  EXPECT_EQ(inspected.value("distro", ""), "debian") << inspected.dump(2);
  EXPECT_EQ(inspected.value("convertible", false), true) << inspected.dump(2);
  EXPECT_EQ(inspected.value("boot_disk_key", ""), "2000") << inspected.dump(2);
  EXPECT_EQ(inspected.value("firmware", ""), "bios") << inspected.dump(2);
  std::cout << "inspection after the full pass: " << inspected.value("seconds", 0.0) << " s\n";
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 30}}, std::chrono::seconds(2400));
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  const json* conversion = step(job, "guest-conversion");
  ASSERT_NE(conversion, nullptr) << job.dump(2);
  EXPECT_EQ((*conversion)["status"], "completed");
  EXPECT_EQ(vm_status(), "cut_over");
  // The final disk, as CloudStack's KVM would attach it, with no further conversion.
  mk::guest::BootCheckOptions options;
  options.convert = false;
  options.limit = std::chrono::seconds(300);
  const auto r = mk::guest::boot_check({{volume_path(), "raw"}}, options);
  EXPECT_TRUE(r.booted) << r.reason << "\n" << r.console_tail;
  std::cout << "cutover job: " << job["steps"].dump() << "\n";
}

// The one real boot check of `make test-guest` (a conversion costs about 90 s of CPU under
// TCG): the lab's VMware-like guest, replicated into the OMA, is checked through the CLI
// and the API; it boots after conversion, with a picture of its console, and the
// replica is byte-identical afterwards.
TEST_F(GuestCutover, BootCheckThroughTheApiBootsTheLabGuestAndNeverChangesTheReplica) {
  start(MK_LAB_GUEST_IMAGE);
  ASSERT_EQ(run_job("/api/v1/jobs", {{"vm_id", vm_id}, {"kind", "full"}}, std::chrono::seconds(900))["status"],
            "completed");
  EXPECT_EQ(inspection_after_full_pass().value("distro", ""), "debian");
  const std::string replica = volume_path();
  const std::string before = mk::test::sha256_file(replica);
  const std::string picture = dir.file("screen.png");
  auto cli = mk::test::run_migratekit({"boot-check", vm_id, "--screenshot", picture, "--interval-ms", "2000", "--api",
                                       "http://127.0.0.1:" + std::to_string(oma->api_port()), "--token-file",
                                       dir.file("data/admin.token")},
                                      std::chrono::seconds(2400));
  EXPECT_EQ(cli.exit_code, 0) << cli.out << cli.err;
  EXPECT_NE(cli.out.find("booted:      yes"), std::string::npos) << cli.out;

  auto r = api->get("/api/v1/vms/" + vm_id + "/boot-check");
  ASSERT_EQ(r.status, 200) << r.raw;
  const json& check = r.body;
  EXPECT_EQ(check["booted"], true) << check["reason"] << "\n" << check["console_tail"].get<std::string>();
  EXPECT_EQ(check["converted"], true);
  EXPECT_EQ(check["evidence"]["target_reached"], true) << check.dump(2);
  EXPECT_FALSE(check["console_tail"].get<std::string>().empty());
  EXPECT_EQ(check["screenshot_format"], "png");
  ASSERT_TRUE(check["screenshot_base64"].is_string());
  const std::string png = mk::test::read_file(picture);
  EXPECT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_GT(check["conversion_seconds"].get<double>(), 0);
  {  // for people: what the GUI shows (build/test-artifacts/guest/)
    std::error_code ec;
    std::filesystem::create_directories(MK_GUEST_ARTIFACTS, ec);
    std::filesystem::copy_file(picture, std::string(MK_GUEST_ARTIFACTS) + "/boot-check-console.png",
                               std::filesystem::copy_options::overwrite_existing, ec);
  }

  EXPECT_EQ(mk::test::sha256_file(replica), before) << "the boot check changed the replica";
  EXPECT_EQ(vm_status(), "replicated");
  // This OMA converts at cutover: the prediction names the conversion's part.
  json listed = api->get("/api/v1/vms").body["vms"][0];
  EXPECT_EQ(listed["predicted_conversion_seconds"], check["conversion_seconds"]);
  // Nothing left behind: no overlay, no qemu.
  std::size_t left = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("data/boot-checks"))) {
    ++left;
    ADD_FAILURE() << "left behind: " << e.path();
  }
  EXPECT_EQ(left, 0u);
  std::cout << "boot check figures: inspection " << check["inspection_seconds"] << " s, conversion "
            << check["conversion_seconds"] << " s, boot " << check["boot_seconds"] << " s (" << check["accel"]
            << "), screenshot " << png.size() << " bytes\n";
}

// The two-disk guest through the cloudstack backend: replicated into simulator volumes
// attached to the OMA's VM, converted there at cutover (both disks together), the VM
// built to match (Debian 12's OS type, BIOS, the root disk as device 0); its volumes,
// in CloudStack's device order and booted as they are, reach the default target, which
// needs /var from the second disk (its fstab entry has no nofail).
class GuestCloudStackCutover : public ::testing::Test {
 protected:
  void TearDown() override {
    if (vma) {
      EXPECT_TRUE(vma->violations().empty()) << vma->violations()[0];
    }
    api.reset();
    oma.reset();
    vma.reset();
  }
  mk::cloudstack::test::SimServer sim;
  mk::test::TempDir dir{"mk-guest-cs-cutover"};
  std::unique_ptr<test::FakeVma> vma;
  std::unique_ptr<Oma> oma;
  std::unique_ptr<test::ApiClient> api;
  std::vector<std::unique_ptr<mk::test::NbdkitServer>> sources;
  const std::string vm_id = test::test_vm_uuid(0x13);
};

TEST_F(GuestCloudStackCutover, TwoDiskGuestIsConvertedOnTheOmaAndBootsWithItsSecondFilesystem) {
  namespace seed = mk::cloudstack::test::seed;
  ::setenv("TMPDIR", dir.path().c_str(), 1);
  const std::vector<std::string> images = {std::string(MK_LAB_TWO_DISK_PREFIX) + "-disk0.raw",
                                           std::string(MK_LAB_TWO_DISK_PREFIX) + "-disk1.raw"};
  for (const auto& i : images) ASSERT_TRUE(std::filesystem::exists(i)) << i << ": run through ctest (guest_two_disk)";
  std::filesystem::create_directories(dir.file("data"));
  vma = std::make_unique<test::FakeVma>(mk::test::make_psk_file(dir.file("data/nbd-psk.keys"), "oma"));
  OmaConfig c = test::test_config(dir.file("data"), vma->url());
  c.volume_backend = "cloudstack";
  c.cloudstack.by_id_dir = sim.by_id_dir();
  c.cloudstack.device_timeout = std::chrono::seconds(10);
  c.cloudstack.client = mk::cloudstack::test::SimServer::fast_client_options();
  c.cutover.power_poll = std::chrono::milliseconds(5);
  c.cutover.convert_guests = true;
  c.cutover.conversion_log_dir = dir.file("data/logs");
  oma = std::make_unique<Oma>(c);
  oma->start();
  api = std::make_unique<test::ApiClient>(oma->api_port(), test::read_admin_token(dir.file("data")));
  ASSERT_EQ(api->put("/api/v1/settings/cloudstack", sim.oma_settings().dump()).status, 200);
  json mappings = {{"mappings", {{{"source_network", "VM Network"}, {"target_network_id", seed::prod_network},
                                  {"keep_mac", true}}}}};
  ASSERT_EQ(api->put("/api/v1/network-mappings", mappings.dump()).status, 200);
  json disks = json::array();
  for (int unit = 0; unit < 2; ++unit) {
    const std::string key = std::to_string(2000 + unit);
    sources.push_back(std::make_unique<mk::test::NbdkitServer>(
        mk::test::NbdkitOptions{.args = {"file=" + images[unit]}, .read_only = true}));
    vma->set_source(key, sources.back()->uri());
    disks.push_back({{"key", key}, {"unit", unit}, {"capacity_bytes", mk::test::file_size(images[unit])}});
  }
  json body = {{"vm_id", vm_id}, {"name", "lab-two-disk"}, {"vcenter", "vcsim.test"}, {"datacenter", "DC0"},
               {"cpus", 1}, {"memory_mb", 1024}, {"disks", disks},
               {"nics", {{{"mac", "00:50:56:aa:bb:13"}, {"network", "VM Network"}}}}};
  ASSERT_EQ(api->post("/api/v1/vms", body.dump()).status, 201);
  vma->add_source_vm(vm_id, "lab-two-disk", true);

  auto run_job = [&](const std::string& path, const json& b, std::chrono::seconds deadline) {
    auto r = api->post(path, b.dump());
    EXPECT_TRUE(r.status == 201 || r.status == 202) << path << ": " << r.raw;
    return test::wait_for_job(*api, r.body["job_id"], test::job_ended, deadline);
  };
  ASSERT_EQ(run_job("/api/v1/jobs", {{"vm_id", vm_id}, {"kind", "full"}}, std::chrono::seconds(900))["status"],
            "completed");
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 30}},
                     std::chrono::seconds(2400));
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  std::map<std::string, json> steps;
  for (const auto& st : job["steps"]) steps[st["name"]] = st;
  EXPECT_NE(steps["guest-inspection"]["message"].get<std::string>().find("debian 12"), std::string::npos)
      << steps["guest-inspection"];
  EXPECT_EQ(steps["guest-conversion"]["status"], "completed") << steps["guest-conversion"];
  EXPECT_NE(steps["deploy-vm"]["message"].get<std::string>().find("Debian GNU/Linux 12 (64-bit)"), std::string::npos)
      << steps["deploy-vm"];
  std::cout << "cutover steps: " << job["steps"].dump() << "\n";

  // The VM CloudStack built: its volumes by device id, as KVM attaches them.
  const json st = sim.state();
  json built;
  for (const auto& v : st["virtualmachines"]) if (v["id"] != sim.oma_vm_id()) built = v;
  EXPECT_EQ(built["guestosid"], seed::os_debian_12);
  EXPECT_EQ(built["boottype"], "BIOS");
  std::map<int, std::string> by_device;
  for (const auto& v : st["volumes"]) {
    if (v.value("virtualmachineid", "") == built["id"]) by_device[v["deviceid"]] = v["id"];
  }
  ASSERT_EQ(by_device.size(), 2u) << st["volumes"].dump(2);
  ASSERT_EQ(by_device.begin()->first, 0);
  std::vector<mk::guest::DiskImage> attached;
  for (const auto& [device, id] : by_device) attached.push_back({sim.dir() + "/state/volumes/" + id + ".img", "raw"});
  mk::guest::BootCheckOptions options;
  options.convert = false;
  options.limit = std::chrono::seconds(300);
  const auto r = mk::guest::boot_check(attached, options);
  EXPECT_TRUE(r.booted) << r.reason << "\n" << r.console_tail;
  // The console may hold bytes that are not UTF-8 (firmware and boot loader output).
  std::cout << "boot of the built VM's volumes: "
            << mk::guest::to_json(r).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

}  // namespace
}  // namespace mk::oma

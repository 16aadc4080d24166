// CloudStackVolumes against the simulator: creation with ownership tags, attach and the
// by-id device (with real data behind it), detach, delete, and refusals of volumes that
// are not ours.
#include "cloudstack/volumes.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "cloudstack/preflight.h"
#include "sim_server.h"
#include "support/files.h"
#include "common/units.h"

namespace mk::cloudstack {
namespace {

using test::SimServer;
namespace seed = test::seed;
namespace fs = std::filesystem;


class VolumesTest : public ::testing::Test {
 protected:
  VolumesConfig config(const std::string& oma_id = "oma-1") { return sim.volumes_config(oma_id); }
  Json find_volume(const std::string& id) {
    const Json state = sim.state();  // the loop must not iterate into a temporary
    for (const auto& v : state["volumes"]) {
      if (v["id"] == id) return v;
    }
    return nullptr;
  }
  SimServer sim;
  Client client{sim.endpoint(), SimServer::fast_client_options()};
  CloudStackVolumes volumes{client, config()};
  DiskRef disk{"4216a8c2-1b2e-4d6f-9c3e-5a7b9d1e2f30", "2000", 3 * GiB / 2};
};

TEST_F(VolumesTest, NamingSizeAndDeviceLink) {
  EXPECT_EQ(CloudStackVolumes::size_gib(GiB), 1u);
  EXPECT_EQ(CloudStackVolumes::size_gib(GiB + 1), 2u);
  EXPECT_EQ(CloudStackVolumes::size_gib(1), 1u);
  EXPECT_EQ(CloudStackVolumes::volume_name(disk), "mk-4216a8c2-1b2e-4d6f-9c3e-5a7b9d1e2f30-disk-2000");
  EXPECT_EQ(CloudStackVolumes::device_link_name("8F2C41A0-77d3-4e0b-a1c4-0f6e2d9b5c11"),
            "virtio-8f2c41a077d34e0ba1c4");
  EXPECT_THROW(CloudStackVolumes::device_link_name("../../etc/passwd"), UsageError);
  EXPECT_THROW(CloudStackVolumes::volume_name({"vm/..", "2000", 1}), UsageError);
}

TEST_F(VolumesTest, CreateRecordsOwnershipAndRoundsSizeUp) {
  Volume v = volumes.create(disk);
  Json stored = find_volume(v.id);
  ASSERT_FALSE(stored.is_null());
  EXPECT_EQ(stored["size"], 2 * GiB);
  EXPECT_EQ(stored["name"], CloudStackVolumes::volume_name(disk));
  std::map<std::string, std::string> tags;
  for (const auto& t : stored["tags"]) tags[t["key"]] = t["value"];
  EXPECT_EQ(tags[kTagOma], "oma-1");
  EXPECT_EQ(tags[kTagVm], disk.vm_uuid);
  EXPECT_EQ(tags[kTagDisk], "2000");
  EXPECT_EQ(volumes.require_owned(v.id, disk).id, v.id);
  ASSERT_EQ(volumes.owned_by_vm(disk.vm_uuid).size(), 1u);
}

TEST_F(VolumesTest, AttachFindsTheDeviceByIdAndDataIsReal) {
  Volume v = volumes.create(disk);
  std::string device = volumes.attach_to_oma(v.id, disk);
  EXPECT_EQ(device, sim.by_id_dir() + "/" + CloudStackVolumes::device_link_name(v.id));
  mk::test::write_at(device, 1 << 20, "written through the by-id device");
  // The simulator's volume file holds the data.
  EXPECT_EQ(mk::test::read_at(sim.dir() + "/state/volumes/" + v.id + ".img", 1 << 20, 7),
            "written");
  Json stored = find_volume(v.id);
  EXPECT_EQ(stored["virtualmachineid"], sim.oma_vm_id());
  // Attaching again is a no-op that finds the same device.
  EXPECT_EQ(volumes.attach_to_oma(v.id, disk), device);

  volumes.detach(v.id, disk);
  EXPECT_FALSE(fs::exists(device));
  EXPECT_FALSE(find_volume(v.id).contains("virtualmachineid"));
  volumes.detach(v.id, disk);  // already detached: nothing to do
  volumes.remove(v.id, disk);
  EXPECT_TRUE(find_volume(v.id).is_null());
}

TEST_F(VolumesTest, DeviceThatNeverAppearsTimesOutNamingVolumeAndPath) {
  Volume v = volumes.create(disk);
  VolumesConfig c = config();
  c.by_id_dir = sim.dir();  // the simulator never links there
  c.device_timeout = std::chrono::milliseconds(300);
  CloudStackVolumes elsewhere(client, c);
  try {
    elsewhere.attach_to_oma(v.id, disk);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(v.id), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(CloudStackVolumes::device_link_name(v.id)),
              std::string::npos);
  }
}

TEST_F(VolumesTest, RefusesVolumesOfAnotherOmaVmOrDisk) {
  Volume v = volumes.create(disk);
  CloudStackVolumes other_oma(client, config("oma-2"));
  EXPECT_THROW(other_oma.remove(v.id, disk), Error);
  EXPECT_THROW(other_oma.detach(v.id, disk), Error);
  EXPECT_THROW(volumes.remove(v.id, {disk.vm_uuid, "2001", disk.capacity_bytes}), Error);
  EXPECT_THROW(volumes.remove(v.id, {"another-vm", "2000", disk.capacity_bytes}), Error);
  // A volume made by hand with our naming but no ownership tags is not ours either.
  Json made = client.call_async("createVolume", {{"name", CloudStackVolumes::volume_name(disk)},
                                                 {"zoneid", seed::zone},
                                                 {"diskofferingid", seed::custom_disk_offering},
                                                 {"size", "1"}});
  std::string foreign = made["volume"]["id"];
  try {
    volumes.remove(foreign, disk);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("refusing"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(find_volume(v.id).is_null());
  EXPECT_FALSE(find_volume(foreign).is_null());
  // No delete request was ever sent.
  const Json state = sim.state();
  for (const auto& call : state["calls"]) EXPECT_NE(call["command"], "deleteVolume");
}

TEST_F(VolumesTest, AttachedVolumeIsNotDeletedAndAttachElsewhereIsRefusedByCloudStack) {
  Volume v = volumes.create(disk);
  volumes.attach_to_oma(v.id, disk);
  EXPECT_THROW(volumes.remove(v.id, disk), Error);
  Json vm = client.call_async("deployVirtualMachine",
                              {{"serviceofferingid", seed::fixed_service_offering},
                               {"templateid", seed::ready_template},
                               {"zoneid", seed::zone},
                               {"networkids", seed::prod_network},
                               {"startvm", "false"}});
  try {
    volumes.attach_to_vm(v.id, disk, vm["virtualmachine"]["id"], std::nullopt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already attached"), std::string::npos) << e.what();
  }
  EXPECT_EQ(find_volume(v.id)["virtualmachineid"], sim.oma_vm_id());
}

TEST_F(VolumesTest, FailuresMidWayLeaveNothingBehind) {
  // Tagging fails: the new volume is deleted again, so no unprovable volume is left.
  sim.fail({{"command", "createTags"}, {"how", "job"}, {"errortext", "tag service down"}});
  try {
    volumes.create(disk);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tag service down"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find(disk.vm_uuid), std::string::npos);
  }
  EXPECT_TRUE(sim.state()["volumes"].empty());

  // The attach job fails: the error names the volume and CloudStack's text; no link.
  Volume v = volumes.create(disk);
  sim.fail({{"command", "attachVolume"}, {"how", "job"}, {"errortext", "hypervisor said no"}});
  try {
    volumes.attach_to_oma(v.id, disk);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hypervisor said no"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find(v.id), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(sim.by_id_dir() + "/" + CloudStackVolumes::device_link_name(v.id)));
  // And it works on the next try.
  EXPECT_NO_THROW(volumes.attach_to_oma(v.id, disk));
}

// The simulator refuses what CloudStack refuses, so the client code cannot get away with
// what a real cloud would reject.
TEST_F(VolumesTest, SimulatorRefusesWhatCloudStackRefuses) {
  Volume v = volumes.create(disk);
  volumes.attach_to_oma(v.id, disk);
  auto expect_refused = [&](const std::string& command, Params p, const std::string& text) {
    try {
      if (command == "deleteVolume") {
        client.call(command, p);
      } else {
        client.call_async(command, p);
      }
      ADD_FAILURE() << command << " was accepted";
    } catch (const ApiError& e) {
      EXPECT_EQ(e.errorcode(), 431) << e.what();
      EXPECT_NE(e.errortext().find(text), std::string::npos) << e.what();
    }
  };
  // Deleting an attached volume.
  expect_refused("deleteVolume", {{"id", v.id}}, "not attached");
  // A second root disk: a stopped VM that still has its template root.
  Json vm = client.call_async("deployVirtualMachine",
                              {{"serviceofferingid", seed::fixed_service_offering},
                               {"templateid", seed::ready_template},
                               {"zoneid", seed::zone},
                               {"networkids", seed::prod_network},
                               {"startvm", "false"}});
  std::string vm_id = vm["virtualmachine"]["id"];
  volumes.detach(v.id, disk);
  expect_refused("attachVolume", {{"id", v.id}, {"virtualmachineid", vm_id}, {"deviceid", "0"}},
                 "already has a root volume");
  // Starting a VM whose root disk was removed: "no root volume found".
  Json roots = client.call("listVolumes", {{"virtualmachineid", vm_id}, {"type", "ROOT"}});
  std::string root = roots["volume"][0]["id"];
  client.call_async("detachVolume", {{"id", root}});
  try {
    client.call_async("startVirtualMachine", {{"id", vm_id}});
    ADD_FAILURE() << "a VM without a root disk started";
  } catch (const ApiError& e) {
    EXPECT_NE(e.errortext().find("no root volume"), std::string::npos) << e.what();
  }
  // An unknown id.
  expect_refused("detachVolume", {{"id", "00000000-0000-4000-8000-000000000000"}}, "Invalid parameter id");
}

// A volume of a disk offering is Allocated until its first attach; only then may it be
// snapshotted. Growing works either way; a volume is never shrunk.
TEST_F(VolumesTest, AllocatedUntilFirstAttachAndGrownNeverShrunk) {
  Volume v = volumes.create(disk);
  EXPECT_EQ(v.state, "Allocated");
  try {
    client.call_async("createSnapshot", {{"volumeid", v.id}});
    ADD_FAILURE() << "an Allocated volume was snapshotted";
  } catch (const ApiError& e) {
    EXPECT_NE(e.errortext().find("not in Ready state"), std::string::npos) << e.what();
  }
  std::string device = volumes.attach_to_oma(v.id, disk);
  EXPECT_EQ(volumes.get(v.id).state, "Ready");
  mk::test::write_at(device, 4096, "before-growth");
  Volume grown = volumes.grow(v.id, disk, 5 * GiB);
  EXPECT_EQ(grown.size_bytes, 5 * GiB);
  EXPECT_EQ(fs::file_size(fs::canonical(device)), 5 * GiB);
  EXPECT_EQ(mk::test::read_at(device, 4096, 13), "before-growth");
  EXPECT_EQ(volumes.grow(v.id, disk, 3 * GiB).size_bytes, 5 * GiB);  // not shrunk
  int resizes = 0;
  const Json st = sim.state();
  for (const auto& c : st["calls"]) resizes += c["command"] == "resizeVolume";
  EXPECT_EQ(resizes, 1);
}

// An OMA whose first disk is on virtio-scsi sees its data disks as
// scsi-0QEMU_QEMU_HARDDISK_<serial>, not virtio-<serial>.
TEST(VolumesOnScsi, TheDeviceIsFoundUnderItsScsiName) {
  test::SimOptions o;
  o.disk_bus = "scsi";
  SimServer sim(o);
  Client client(sim.endpoint(), SimServer::fast_client_options());
  CloudStackVolumes volumes(client, sim.volumes_config());
  DiskRef disk{"4216a8c2-1b2e-4d6f-9c3e-5a7b9d1e2f30", "2000", GiB};
  Volume v = volumes.create(disk);
  std::string device = volumes.attach_to_oma(v.id, disk);
  EXPECT_EQ(fs::path(device).filename().string(), CloudStackVolumes::device_link_names(v.id)[1]);
  EXPECT_TRUE(fs::path(device).filename().string().starts_with("scsi-0QEMU_QEMU_HARDDISK_"));
  EXPECT_EQ(CloudStackVolumes::device_link_names("8F2C41A0-77d3-4e0b-a1c4-0f6e2d9b5c11")[1],
            "scsi-0QEMU_QEMU_HARDDISK_8f2c41a077d34e0ba1c4");
}

// The limits a cloud applies on default settings, which the preflight reads.
TEST(VolumesLimits, DataVolumeCapSizeCapAndAnOmaVmWithSnapshots) {
  test::SimOptions o;
  o.max_data_volumes = 2;
  o.custom_disk_max_gb = 4;
  SimServer sim(o);
  Client client(sim.endpoint(), SimServer::fast_client_options());
  CloudStackVolumes volumes(client, sim.volumes_config());
  std::string vm = "4216a8c2-1b2e-4d6f-9c3e-5a7b9d1e2f30";
  try {
    volumes.create({vm, "2009", 5 * GiB});
    ADD_FAILURE() << "a volume over custom.diskoffering.size.max was created";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of allowed range. Max: 4"), std::string::npos) << e.what();
  }
  for (int i = 0; i < 2; ++i) {
    DiskRef d{vm, std::to_string(2000 + i), GiB};
    volumes.attach_to_oma(volumes.create(d).id, d);
  }
  DiskRef third{vm, "2002", GiB};
  Volume v = volumes.create(third);
  try {
    volumes.attach_to_oma(v.id, third);
    ADD_FAILURE() << "a third data volume was attached to a VM that holds two";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("maximum number of data disks (2)"), std::string::npos) << e.what();
  }
}

// Two OMA VMs (one per OMA node), KVM's default cap of 32 data volumes: the cap is per VM,
// as CloudStack applies it. The cap is what listHypervisorCapabilities answers for each;
// the 33rd volume is refused on the full VM with CloudStack's error and is not attached,
// and the other VM takes it (its device in that VM's by-id directory only).
TEST(VolumesLimits, TwoOmaVmsEachHoldTheirOwn32DataVolumes) {
  test::SimOptions o;
  o.extra_oma_vms = 1;
  o.job_delay_seconds = 0;
  SimServer sim(o);
  Client client(sim.endpoint(), SimServer::fast_client_options());
  for (int n : {1, 2}) {
    CloudLimits l = read_limits(client, sim.oma_vm_id(n));
    EXPECT_EQ(l.hypervisor, "KVM") << "OMA VM " << n;
    EXPECT_EQ(l.max_data_volumes, 32) << "OMA VM " << n;
    EXPECT_TRUE(l.max_data_volumes_known) << "OMA VM " << n;
  }
  CloudStackVolumes first(client, sim.volumes_config("oma-1", 1));
  CloudStackVolumes second(client, sim.volumes_config("oma-1", 2));
  std::string vm = "4216a8c2-1b2e-4d6f-9c3e-5a7b9d1e2f30";
  for (int i = 0; i < 32; ++i) {
    DiskRef d{vm, std::to_string(2000 + i), GiB};
    first.attach_to_oma(first.create(d).id, d);
  }
  EXPECT_EQ(attached_data_volumes(client, sim.oma_vm_id(1)), 32);
  DiskRef extra{"52b1f0e4-6c3a-4d2e-8f90-1a2b3c4d5e6f", "2000", GiB};
  Volume v = first.create(extra);
  try {
    first.attach_to_oma(v.id, extra);
    ADD_FAILURE() << "a 33rd data volume was attached to a KVM VM that holds 32";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("The specified VM already has the maximum number of data disks (32) "
                                         "attached. Please specify another VM."),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(attached_data_volumes(client, sim.oma_vm_id(1)), 32);
  std::string device = second.attach_to_oma(v.id, extra);
  EXPECT_EQ(fs::path(device).parent_path(), fs::path(sim.by_id_dir(2)));
  EXPECT_FALSE(fs::exists(fs::path(sim.by_id_dir(1)) / fs::path(device).filename()));
  EXPECT_EQ(attached_data_volumes(client, sim.oma_vm_id(2)), 1);
}

TEST(VolumesLimits, AnOmaVmWithVmSnapshotsOrBackupsTakesNoVolume) {
  for (bool backup : {false, true}) {
    test::SimOptions o;
    o.oma_vm_snapshot = !backup;
    if (backup) o.oma_backup_offering = "bo000000-0000-4000-8000-000000000001";
    SimServer sim(o);
    Client client(sim.endpoint(), SimServer::fast_client_options());
    CloudStackVolumes volumes(client, sim.volumes_config());
    DiskRef d{"4216a8c2-1b2e-4d6f-9c3e-5a7b9d1e2f30", "2000", GiB};
    Volume v = volumes.create(d);
    try {
      volumes.attach_to_oma(v.id, d);
      ADD_FAILURE() << "attached to an OMA VM with " << (backup ? "backups" : "VM snapshots");
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(backup ? "any backups" : "VM snapshots"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace mk::cloudstack

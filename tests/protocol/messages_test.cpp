// The VMA API's messages: each one round-trips through encode/decode, every field is
// checked (a refusal names it by its JSON path), and the rules between fields hold.
#include "protocol/messages.h"

#include <gtest/gtest.h>

#include <set>

#include "message_checks.h"

namespace mk::protocol {
namespace {

using nlohmann::json;
using test::expect_every_field_checked;
using test::refused_field;

const std::string kVm = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d";
const std::string kJob = "0b8f3a52-1d4e-4c6a-9f1b-2e3d4c5b6a70";
const std::string kInstance = "5e0c7a4b-3f2d-4e1a-9b8c-7d6e5f4a3b2c";

template <typename T>
test::Decoder decoder() {
  return [](const json& j) { decode<T>(j); };
}

ReplicateRequest replicate(PassKind kind) {
  ReplicateRequest r{kJob, kVm, kind, {"10.0.0.5", 10809, NbdTls::Psk}, {}};
  for (int unit : {0, 1}) {
    std::optional<std::string> base;
    if (kind == PassKind::Incremental) base = "52 3c 1f/" + std::to_string(unit + 4);
    r.disks.push_back({DiskKey(2000 + unit), unit, 10737418240, export_name(kVm, unit), base});
  }
  return r;
}

JobProgress progress() {
  JobProgress p{kJob, kInstance, VmaJobStatus::Running, std::nullopt, {}, {3072, 4096, 1.5e6}};
  p.disks.push_back(
      {DiskKey(2000), DiskStatus::Completed, DiskPhase::Done, 2048, 2048, 1e6, 0, "52 3c/5", std::nullopt});
  p.disks.push_back(
      {DiskKey(2001), DiskStatus::Copying, DiskPhase::Copying, 1024, 2048, 5e5, 2.5, std::nullopt, std::nullopt});
  p.disks.push_back({DiskKey(2002), DiskStatus::Failed, DiskPhase::Failed, 0, 0, 0, 0, std::nullopt,
                     "disk 2002 of VM x: copy failed"});
  p.disks[0].bytes_resumed = 1024;
  p.disks[0].restarted = "the pass's snapshot 5-snapshot-12 is gone: the disk started over on a new snapshot";
  p.disks[0].phases = {{PassPhase::Snapshot, 1.25}, {PassPhase::ChangeQuery, 0.5}, {PassPhase::ReaderStart, 0.125},
                       {PassPhase::Planning, 0.0},  {PassPhase::Copying, 7.5},     {PassPhase::Flushing, 0.25}};
  p.disks[1].phases = {{PassPhase::Snapshot, 1.25}, {PassPhase::ChangeQuery, 0.5}};
  return p;
}

Discovery discovery() {
  DiscoveredVm vm{kVm, "web01", "DC0", PowerState::PoweredOn, "ubuntu64Guest", 2, 4096, {}, {}, {}, "efi", true};
  vm.disks.push_back({DiskKey(2000), 0, "Hard disk 1", 10737418240});
  vm.nics.push_back({"4000", "00:50:56:aa:bb:cc", "VM Network"});
  vm.nics.push_back({"4001", "", "VM Network"});  // no MAC assigned yet
  vm.findings.push_back({"independent-disk", DiskKey(2001), "the disk is independent", "make it dependent",
                         "VM web01 disk Hard disk 2: the disk is independent; make it dependent"});
  vm.findings.push_back({"existing-snapshots", std::nullopt, "it has 1 snapshot", "delete it",
                         "VM web01: it has 1 snapshot; delete it"});
  return {"vc.example", {vm}};
}

Health health() {
  return {kVersion,
          HealthStatus::Degraded,
          kInstance,
          {true, std::nullopt},
          {TunnelState::Down, 1700000000, "host key mismatch"}};
}

TEST(Messages, ReplicateRoundTripsForBothKinds) {
  for (PassKind kind : {PassKind::Full, PassKind::Incremental}) {
    ReplicateRequest in = replicate(kind);
    json j = encode(in);
    EXPECT_EQ(j["disks"][1]["disk_key"], "2001");  // a string on the wire
    EXPECT_EQ(j["disks"][1]["export"], "migration-vm-" + kVm + "-disk1");
    ReplicateRequest out = decode<ReplicateRequest>(j);
    EXPECT_EQ(encode(out), j);
    EXPECT_EQ(out.disks[1].disk_key, DiskKey(2001));
    EXPECT_EQ(out.kind, kind);
    EXPECT_EQ(out.disks[0].change_id_base.has_value(), kind == PassKind::Incremental);
  }
  ReplicateAccepted a{kJob, kInstance};
  EXPECT_EQ(encode(decode<ReplicateAccepted>(encode(a))), encode(a));
}

TEST(Messages, ReplicateChecksEveryField) {
  expect_every_field_checked(decoder<ReplicateRequest>(), encode(replicate(PassKind::Full)));
  expect_every_field_checked(decoder<ReplicateRequest>(), encode(replicate(PassKind::Incremental)));
  expect_every_field_checked(decoder<ReplicateAccepted>(), encode(ReplicateAccepted{kJob, kInstance}));
}

TEST(Messages, ReplicateRefusesValuesOutsideTheRules) {
  auto refused = [](const std::function<void(json&)>& change) {
    json j = encode(replicate(PassKind::Full));
    change(j);
    return refused_field(decoder<ReplicateRequest>(), j);
  };
  EXPECT_EQ(refused([](json& j) { j["job_id"] = "../../etc"; }), "job_id");
  EXPECT_EQ(refused([](json& j) { j["vm_id"] = "4210A4C2-6B57-4D4B-9D8E-0C1F2A3B4C5D"; }), "vm_id");
  EXPECT_EQ(refused([](json& j) { j["kind"] = "partial"; }), "kind");
  EXPECT_EQ(refused([](json& j) { j["nbd"]["tls"] = "none"; }), "nbd.tls");
  EXPECT_EQ(refused([](json& j) { j["nbd"]["port"] = 70000; }), "nbd.port");
  EXPECT_EQ(refused([](json& j) { j["nbd"]["host"] = "oma;rm -rf"; }), "nbd.host");
  EXPECT_EQ(refused([](json& j) { j["disks"] = json::array(); }), "disks");
  EXPECT_EQ(refused([](json& j) { j["disks"][0]["export"] = "../../dev/sda"; }), "disks[0].export");
  EXPECT_EQ(refused([](json& j) { j["disks"][0]["export"] = j["disks"][1]["export"]; }), "disks[0].export");
  EXPECT_EQ(refused([](json& j) { j["disks"][0]["disk_key"] = "20a"; }), "disks[0].disk_key");
  EXPECT_EQ(refused([](json& j) { j["disks"][0]["capacity_bytes"] = -1; }), "disks[0].capacity_bytes");
  EXPECT_EQ(refused([](json& j) { j["disks"][1]["change_id_base"] = "52 3c/4"; }), "disks[1].change_id_base");
  EXPECT_EQ(refused([](json& j) { j["kind"] = "incremental"; }), "disks[0].change_id_base");
  EXPECT_EQ(refused([](json& j) { j["disks"][1]["disk_key"] = "2000"; }), "disks[1].disk_key");
  EXPECT_EQ(refused([](json& j) {
              j["disks"][1]["unit"] = 0;
              j["disks"][1]["export"] = j["disks"][0]["export"];
            }),
            "disks[1].unit");
  EXPECT_EQ(refused([](json& j) { j["disks"][0]["unit"] = 256; }), "disks[0].unit");
  // The message says what is wrong, not only where.
  json j = encode(replicate(PassKind::Full));
  j["kind"] = "incremental";
  try {
    decode<ReplicateRequest>(j);
    FAIL();
  } catch (const schema::FieldError& e) {
    EXPECT_NE(std::string(e.what()).find("contradicts kind \"incremental\""), std::string::npos) << e.what();
  }
}

TEST(Messages, EncodeRefusesWhatThePeerWouldRefuse) {
  ReplicateRequest r = replicate(PassKind::Full);
  r.disks[1].export_name = export_name(kVm, 7);
  try {
    encode(r);
    FAIL();
  } catch (const schema::FieldError& e) {
    EXPECT_EQ(e.field(), "disks[1].export");
  }
  r = replicate(PassKind::Full);
  r.disks.clear();
  EXPECT_THROW(encode(r), schema::FieldError);
}

TEST(Messages, ProgressRoundTripsAndChecksEveryField) {
  json j = encode(progress());
  EXPECT_EQ(encode(decode<JobProgress>(j)), j);
  JobProgress p = decode<JobProgress>(j);
  EXPECT_EQ(p.disks[0].status, DiskStatus::Completed);
  EXPECT_EQ(p.disks[0].change_id.value_or(""), "52 3c/5");
  EXPECT_EQ(p.disks[2].error.value_or(""), "disk 2002 of VM x: copy failed");
  EXPECT_EQ(p.total.bytes_done, 3072);
  // Added in version 2 (resume): a record of an earlier VMA may lack them.
  std::set<std::string> optional;
  for (int i = 0; i < 3; ++i) {
    optional.insert("disks[" + std::to_string(i) + "].bytes_resumed");
    optional.insert("disks[" + std::to_string(i) + "].restarted");
  }
  expect_every_field_checked(decoder<JobProgress>(), j, optional);
}

TEST(Messages, OneDisksProgressRoundTripsAndKeepsTheSameRules) {
  for (const auto& d : progress().disks) {
    json j = encode(d);
    EXPECT_EQ(encode(decode<DiskProgress>(j)), j);
    expect_every_field_checked(decoder<DiskProgress>(), j, {"bytes_resumed", "restarted"});
  }
  DiskProgress completed = progress().disks[0];
  completed.change_id.reset();
  EXPECT_THROW(encode(completed), schema::FieldError);
  json j = encode(progress().disks[2]);
  j["error"] = nullptr;
  EXPECT_EQ(refused_field(decoder<DiskProgress>(), j), "error");
}

TEST(Messages, ProgressKeepsChangeIdsForCompletedDisksOnly) {
  auto refused = [](const std::function<void(json&)>& change) {
    json j = encode(progress());
    change(j);
    return refused_field(decoder<JobProgress>(), j);
  };
  EXPECT_EQ(refused([](json& j) { j["disks"][0]["change_id"] = nullptr; }), "disks[0].change_id");
  EXPECT_EQ(refused([](json& j) { j["disks"][1]["change_id"] = "52 3c/6"; }), "disks[1].change_id");
  EXPECT_EQ(refused([](json& j) { j["disks"][0]["change_id"] = ""; }), "disks[0].change_id");
  EXPECT_EQ(refused([](json& j) { j["disks"][2]["error"] = nullptr; }), "disks[2].error");
  EXPECT_EQ(refused([](json& j) { j["disks"][1]["disk_key"] = "2000"; }), "disks[1].disk_key");
  EXPECT_EQ(refused([](json& j) { j["disks"][1]["status"] = "done"; }), "disks[1].status");
  EXPECT_EQ(refused([](json& j) { j["disks"][1]["phase"] = "completed"; }), "disks[1].phase");
  EXPECT_EQ(refused([](json& j) { j["status"] = "cancelled"; }), "status");
}

TEST(Messages, PhaseTimesComeInPassOrderEachOnceAndAreNotNegative) {
  JobProgress ended = progress();
  ended.ended_seconds_ago = 0.5;
  JobProgress back = decode<JobProgress>(encode(ended));
  EXPECT_EQ(back.disks[0].phases, progress().disks[0].phases);
  EXPECT_EQ(back.ended_seconds_ago.value_or(-1), 0.5);
  EXPECT_FALSE(decode<JobProgress>(encode(progress())).ended_seconds_ago);
  auto refused = [](const std::function<void(json&)>& change) {
    json j = encode(progress());
    change(j);
    return refused_field(decoder<JobProgress>(), j);
  };
  EXPECT_EQ(refused([](json& j) { std::swap(j["disks"][0]["phases"][0], j["disks"][0]["phases"][1]); }),
            "disks[0].phases[1].phase");
  EXPECT_EQ(refused([](json& j) { j["disks"][1]["phases"][1]["phase"] = "snapshot"; }), "disks[1].phases[1].phase");
  EXPECT_EQ(refused([](json& j) { j["disks"][0]["phases"][4]["seconds"] = -0.5; }), "disks[0].phases[4].seconds");
  EXPECT_EQ(refused([](json& j) { j["disks"][0]["phases"][0]["phase"] = "lunch"; }), "disks[0].phases[0].phase");
  EXPECT_EQ(refused([](json& j) { j["ended_seconds_ago"] = -1; }), "ended_seconds_ago");
  DiskProgress backwards = progress().disks[0];
  std::swap(backwards.phases[2], backwards.phases[3]);
  EXPECT_THROW(encode(backwards), schema::FieldError);  // a sender never sends what its peer refuses
}

TEST(Messages, ARevisionIsSentOnlyWithALongPollsAnswerAndIsANonNegativeInteger) {
  JobProgress held = progress();
  held.revision = 7;
  json j = encode(held);
  EXPECT_EQ(j["revision"], 7);
  EXPECT_EQ(decode<JobProgress>(j).revision.value_or(-1), 7);
  expect_every_field_checked(decoder<JobProgress>(), j,
                             {"revision", "disks[0].bytes_resumed", "disks[0].restarted", "disks[1].bytes_resumed",
                              "disks[1].restarted", "disks[2].bytes_resumed", "disks[2].restarted"});
  json plain = encode(progress());
  EXPECT_FALSE(plain.contains("revision"));  // not a long poll: the answer is as before
  EXPECT_FALSE(decode<JobProgress>(plain).revision);
  j["revision"] = -1;
  EXPECT_EQ(refused_field(decoder<JobProgress>(), j), "revision");
  j["revision"] = "7";
  EXPECT_EQ(refused_field(decoder<JobProgress>(), j), "revision");
}

TEST(Messages, ALongPollsQueryRoundTripsAndItsWaitIsBounded) {
  EXPECT_EQ(progress_query({std::nullopt, 5000}), "wait_ms=5000");
  EXPECT_EQ(progress_query({12, 0}), "after=12&wait_ms=0");
  ProgressWait w = parse_progress_wait(std::string("12"), "5000");
  EXPECT_EQ(w.after.value_or(-1), 12);
  EXPECT_EQ(w.wait_ms, 5000);
  EXPECT_FALSE(parse_progress_wait(std::nullopt, "0").after);
  auto refused = [](const std::optional<std::string>& after, const std::string& wait) -> std::string {
    try {
      parse_progress_wait(after, wait);
    } catch (const schema::FieldError& e) {
      return e.field();
    }
    return "";
  };
  EXPECT_EQ(refused(std::nullopt, std::to_string(kMaxProgressWaitMs + 1)), "wait_ms");
  EXPECT_EQ(refused(std::nullopt, "-1"), "wait_ms");
  EXPECT_EQ(refused(std::nullopt, ""), "wait_ms");
  EXPECT_EQ(refused(std::nullopt, "10s"), "wait_ms");
  EXPECT_EQ(refused(std::string("x"), "100"), "after");
  EXPECT_EQ(refused(std::string("-3"), "100"), "after");
  EXPECT_EQ(refused(std::nullopt, std::to_string(kMaxProgressWaitMs)), "");
}

TEST(Messages, ErrorTextIsMadePrintableBeforeItIsSent) {
  JobProgress p = progress();
  p.disks[2].error = "vSphere said:\nfault\tNoPermission";
  p.error = std::string(5000, 'x');
  json j = encode(p);
  EXPECT_EQ(j["disks"][2]["error"], "vSphere said: fault NoPermission");
  EXPECT_EQ(j["error"].get<std::string>().size(), kMaxTextBytes);
  ErrorReply e{"line one\nline two", "disks[0].export"};
  EXPECT_EQ(decode<ErrorReply>(encode(e)).error, "line one line two");
  EXPECT_EQ(decode<ErrorReply>(encode(e)).field.value_or(""), "disks[0].export");
  EXPECT_FALSE(decode<ErrorReply>(encode(ErrorReply{"no field", std::nullopt})).field);
}

TEST(Messages, StopCleanupAndPowerRoundTripAndCheckEveryField) {
  expect_every_field_checked(decoder<StopReply>(), encode(StopReply{kJob, true}));
  expect_every_field_checked(decoder<CleanupReply>(), encode(CleanupReply{kVm, 2}));
  EXPECT_EQ(decode<CleanupReply>(encode(CleanupReply{kVm, 2})).snapshots_removed, 2);
  PowerRequest pr{PowerAction::Off, 30};
  EXPECT_EQ(decode<PowerRequest>(encode(pr)).action, PowerAction::Off);
  expect_every_field_checked(decoder<PowerRequest>(), encode(pr), {"timeout_seconds"});
  EXPECT_EQ(decode<PowerRequest>(json{{"action", "on"}}).timeout_seconds, 300);
  EXPECT_EQ(refused_field(decoder<PowerRequest>(), {{"action", "off"}, {"timeout_seconds", 0}}), "timeout_seconds");
  EXPECT_EQ(refused_field(decoder<PowerRequest>(), {{"action", "reboot"}}), "action");
  PowerReply reply{kVm, PowerState::PoweredOff, true};
  EXPECT_TRUE(decode<PowerReply>(encode(reply)).forced);
  expect_every_field_checked(decoder<PowerReply>(), encode(reply));
  // A power operation ends on or off, never suspended.
  EXPECT_THROW(encode(PowerReply{kVm, PowerState::Suspended, false}), schema::FieldError);
}

TEST(Messages, DiscoveryRoundTripsAndChecksEveryField) {
  json j = encode(discovery());
  EXPECT_EQ(encode(decode<Discovery>(j)), j);
  Discovery d = decode<Discovery>(j);
  EXPECT_EQ(d.vms[0].disks[0].disk_key, DiskKey(2000));
  EXPECT_EQ(d.vms[0].power_state, PowerState::PoweredOn);
  EXPECT_EQ(d.vms[0].findings[0].disk_key, DiskKey(2001));
  EXPECT_FALSE(d.vms[0].findings[1].disk_key);
  EXPECT_EQ(d.vms[0].firmware, "efi");
  EXPECT_TRUE(d.vms[0].secure_boot);
  expect_every_field_checked(decoder<Discovery>(), j, {"vms[0].findings", "vms[0].firmware", "vms[0].secure_boot"});
  expect_every_field_checked(decoder<DiscoveredVm>(), encode(discovery().vms[0]), {"findings", "firmware", "secure_boot"});
  j["vms"][0]["firmware"] = "uefi";  // vSphere says "efi"
  EXPECT_EQ(refused_field(decoder<Discovery>(), j), "vms[0].firmware");
  j = encode(discovery());
  j["vms"][0]["nics"][0]["mac"] = "00-50-56-aa-bb-cc";
  EXPECT_EQ(refused_field(decoder<Discovery>(), j), "vms[0].nics[0].mac");
  j = encode(discovery());
  j["vms"][0]["findings"][0]["disk_key"] = "02001";
  EXPECT_EQ(refused_field(decoder<Discovery>(), j), "vms[0].findings[0].disk_key");
}

// An older VMA sends no findings: nothing known.
TEST(Messages, ADiscoveredVmWithoutFindingsHasNone) {
  json j = encode(discovery().vms[0]);
  j.erase("findings");
  EXPECT_TRUE(decode<DiscoveredVm>(j).findings.empty());
}

// An older VMA says nothing of the firmware: not known (the disks decide), no secure boot.
TEST(Messages, ADiscoveredVmWithoutFirmwareHasNoneKnown) {
  json j = encode(discovery().vms[0]);
  j.erase("firmware");
  j.erase("secure_boot");
  DiscoveredVm vm = decode<DiscoveredVm>(j);
  EXPECT_EQ(vm.firmware, "");
  EXPECT_FALSE(vm.secure_boot);
  EXPECT_FALSE(encode(vm).contains("firmware"));
}

TEST(Messages, PreflightReplyRoundTripsAndChecksEveryField) {
  PreflightReply in{kVm, discovery().vms[0].findings};
  json j = encode(in);
  EXPECT_EQ(j["findings"][0]["disk_key"], "2001");  // a string on the wire
  EXPECT_TRUE(j["findings"][1]["disk_key"].is_null());
  EXPECT_EQ(encode(decode<PreflightReply>(j)), j);
  expect_every_field_checked(decoder<PreflightReply>(), j);
  expect_every_field_checked(decoder<PreflightFinding>(), encode(in.findings[0]));
  j["findings"][0]["code"] = "";
  EXPECT_EQ(refused_field(decoder<PreflightReply>(), j), "findings[0].code");
}

// An incremental pass may copy a disk grown since the last pass in full (no base), but
// not every disk: that is a full pass.
TEST(Messages, AnIncrementalPassNeedsABaseOnOneDiskAtLeast) {
  json j = encode(replicate(PassKind::Incremental));
  j["disks"][1]["change_id_base"] = nullptr;
  EXPECT_FALSE(decode<ReplicateRequest>(j).disks[1].change_id_base);
  j["disks"][0]["change_id_base"] = nullptr;
  EXPECT_EQ(refused_field(decoder<ReplicateRequest>(), j), "disks[0].change_id_base");
}

TEST(Messages, HealthRoundTripsAndChecksEveryField) {
  json j = encode(health());
  EXPECT_EQ(j["protocol_version"], kVersion);
  EXPECT_EQ(encode(decode<Health>(j)), j);
  EXPECT_EQ(decode<Health>(j).tunnel.state, TunnelState::Down);
  expect_every_field_checked(decoder<Health>(), j);
  expect_every_field_checked(decoder<ErrorReply>(), encode(ErrorReply{"x", "f"}), {"field"});
}

TEST(Messages, DecodeTextRefusesWhatIsNotAJsonObject) {
  EXPECT_EQ(refused_field([](const json&) { decode_text<Health>("not json", "answer"); }, {}), "answer");
  EXPECT_EQ(refused_field([](const json&) { decode_text<Health>("[1]"); }, {}), "body");
}

ServiceNodes service_nodes() {
  const std::string key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv3i1Xg0cO2zV9yv6mJ0d8m1Q3m6p5K1n2Y3r4s5t6u";
  return {{{"oma-a", "oma-a.example", 22, key, "127.0.0.1", "10.0.0.5", 10809},
           {"oma-b", "10.0.0.6", 443, key + " root@oma-b", "127.0.0.2", "10.0.0.6", 10810}}};
}

TEST(Messages, ServiceNodesRoundTripAndCheckEveryField) {
  json j = encode(service_nodes());
  EXPECT_EQ(decode<ServiceNodes>(j).nodes, service_nodes().nodes);
  EXPECT_EQ(encode(decode<ServiceNodes>(j)), j);
  expect_every_field_checked(decoder<ServiceNodes>(), j);
  // The list names each node once, and at least one: the VMA would hold no tunnel.
  json twice = j;
  twice["nodes"][1]["node_id"] = "oma-a";
  EXPECT_EQ(refused_field(decoder<ServiceNodes>(), twice), "nodes[1].node_id");
  EXPECT_EQ(refused_field(decoder<ServiceNodes>(), json{{"nodes", json::array()}}), "nodes");
  // What ssh reads from it: a loopback address, a node id, a key line, a host.
  for (const char* bad : {"10.0.0.1", "127.0.0.256", "127.0.0.1 ", "localhost", "127.0.0.1:22"}) {
    json k = j;
    k["nodes"][0]["tunnel_address"] = bad;
    EXPECT_EQ(refused_field(decoder<ServiceNodes>(), k), "nodes[0].tunnel_address") << bad;
  }
  for (const char* bad : {"-oProxyCommand=x", "", "OMA-A", "a/b"}) {
    json k = j;
    k["nodes"][0]["node_id"] = bad;
    EXPECT_EQ(refused_field(decoder<ServiceNodes>(), k), "nodes[0].node_id") << bad;
  }
  for (const char* bad : {"ssh-ed25519", "ssh-ed25519 AA!A", "foo AAAA"}) {
    json k = j;
    k["nodes"][0]["ssh_host_key"] = bad;
    EXPECT_EQ(refused_field(decoder<ServiceNodes>(), k), "nodes[0].ssh_host_key") << bad;
  }
  json host = j;
  host["nodes"][0]["ssh_host"] = "-oProxyCommand=x";
  EXPECT_EQ(refused_field(decoder<ServiceNodes>(), host), "nodes[0].ssh_host");
}

TEST(Messages, HealthListsEachNodesTunnel) {
  Health h = health();
  h.tunnels = {{"oma-a", "10.0.0.5", 22, {TunnelState::Up, 1764673200, std::nullopt}},
               {"oma-b", "10.0.0.6", 22, {TunnelState::Down, 1764673201, std::string("refused")}}};
  json j = encode(h);
  Health back = decode<Health>(j);
  ASSERT_EQ(back.tunnels.size(), 2u);
  EXPECT_EQ(back.tunnels[1].node_id, "oma-b");
  EXPECT_EQ(back.tunnels[1].tunnel.error, "refused");
  expect_every_field_checked(decoder<Health>(), j);
  ServiceNodesReply reply{h.tunnels};
  EXPECT_EQ(encode(decode<ServiceNodesReply>(encode(reply))), encode(reply));
  expect_every_field_checked(decoder<ServiceNodesReply>(), encode(reply));
}

TEST(Messages, SchemasAreNamedForTheOpenApiDocument) {
  for (const schema::Schema* s : {&schemas::replicate_request(), &schemas::job_progress(), &schemas::discovery(),
                                  &schemas::health(), &schemas::power_request(), &schemas::error_reply()}) {
    EXPECT_FALSE(s->name.empty());
    json o = schema::to_openapi(*s);
    EXPECT_EQ(o["additionalProperties"], false) << s->name;
  }
  json o = schema::to_openapi(schemas::job_progress());
  EXPECT_EQ(o["properties"]["disks"]["items"]["properties"]["status"]["enum"],
            json({"pending", "copying", "completed", "failed"}));
}

}  // namespace
}  // namespace mk::protocol

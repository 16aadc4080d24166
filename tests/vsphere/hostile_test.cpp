// The SOAP client against a hostile server (hostile_server.py): truncated, huge, non-SOAP
// and ill-typed answers, HTTP errors, odd faults, and QueryChangedDiskAreas answers that
// do not advance or point outside the disk. Each must be a clear mk::Error, no crash.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/subprocess.h"
#include "support/net.h"
#include "support/temp_dir.h"
#include "vsphere/inventory.h"
#include "vsphere/session.h"
#include "vsphere/vm_ops.h"

namespace mk::vsphere {
namespace {

const std::string kEnvelope =
    "<?xml version=\"1.0\"?><soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" "
    "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body>{}</soapenv:Body></soapenv:Envelope>";

const std::string kServiceContent =
    "<RetrieveServiceContentResponse xmlns=\"urn:vim25\"><returnval>"
    "<rootFolder type=\"Folder\">group-d1</rootFolder><propertyCollector type=\"PropertyCollector\">pc</propertyCollector>"
    "<viewManager type=\"ViewManager\">vm</viewManager><searchIndex type=\"SearchIndex\">si</searchIndex>"
    "<sessionManager type=\"SessionManager\">sm</sessionManager><about><apiType>VirtualCenter</apiType>"
    "<apiVersion>7.0</apiVersion></about></returnval></RetrieveServiceContentResponse>";

class Hostile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string out;
    ASSERT_EQ(mk::run_capture({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                               dir.file("key.pem"), "-out", dir.file("cert.pem"), "-days", "1", "-subj", "/CN=hostile"},
                              out),
              0);
    port = test::free_tcp_port();
    SpawnOptions so;
    so.stdout_path = so.stderr_path = dir.file("server.log");
    server = Subprocess::spawn({"python3", HOSTILE_SERVER, "--port", std::to_string(port), "--cert",
                                dir.file("cert.pem"), "--key", dir.file("key.pem"), "--dir", dir.path()},
                               so);
    test::wait_for_tcp_port(port, {"hostile server", dir.file("server.log"), &server});
    answer("RetrieveServiceContent", fmt::format(fmt::runtime(kEnvelope), kServiceContent));
    answer("Login", fmt::format(fmt::runtime(kEnvelope), "<LoginResponse xmlns=\"urn:vim25\"><returnval/></LoginResponse>"));
    answer("Logout", fmt::format(fmt::runtime(kEnvelope), "<LogoutResponse xmlns=\"urn:vim25\"/>"));
    std::ofstream(dir.file("pw")) << "secret\n";
    std::filesystem::permissions(dir.file("pw"), std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }
  void TearDown() override { server.stop(); }

  void answer(const std::string& method, const std::string& body, int status = 200, uint64_t repeat = 0,
              uint64_t claim_extra = 0) {
    std::string escaped;  // a JSON string: the bodies here hold no control characters
    for (char c : body) {
      if (c == '"' || c == '\\') escaped += '\\';
      escaped += c;
    }
    std::ofstream(dir.file(method + ".json"))
        << fmt::format("{{\"status\": {}, \"body\": \"{}\", \"repeat\": {}, \"claim_extra\": {}}}", status, escaped,
                       repeat, claim_extra);
  }

  std::string url() const { return fmt::format("https://127.0.0.1:{}/sdk", port); }
  TlsPolicy insecure() const { return {TlsPolicy::Mode::Insecure, "", ""}; }

  std::string error_of(const std::string& method) {
    SoapClient c(url(), insecure(), std::chrono::seconds(30));
    try {
      c.call(method, "<_this type=\"X\">x</_this>");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  std::unique_ptr<Session> session() {
    ConnectOptions o;
    o.url = url();
    o.user = "u";
    o.password_file = dir.file("pw");
    o.tls = insecure();
    o.keepalive = std::chrono::seconds(0);
    return Session::connect(o);
  }

  test::TempDir dir{"mk-hostile"};
  int port = 0;
  Subprocess server;
};

TEST_F(Hostile, TruncatedAnswer) {
  answer("CurrentTime", "<?xml version=\"1.0\"?><soapenv:Envelope xmlns:soapenv=", 200, 0, 5000);
  std::string m = error_of("CurrentTime");
  EXPECT_NE(m.find("CurrentTime"), std::string::npos) << m;
  answer("CurrentTime", "<?xml version=\"1.0\"?><soapenv:Envelope xmlns:soapenv=\"x\"><soapenv:Bo");
  m = error_of("CurrentTime");
  EXPECT_NE(m.find("malformed XML"), std::string::npos) << m;
}

TEST_F(Hostile, HugeAnswerIsCutOff) {
  answer("CurrentTime", "<a>", 200, xml::kMaxDocumentBytes + 1000);
  std::string m = error_of("CurrentTime");
  EXPECT_NE(m.find("exceeds"), std::string::npos) << m;
}

TEST_F(Hostile, NotSoapAndHttpErrors) {
  answer("CurrentTime", "<html><body>Service Unavailable</body></html>", 503);
  EXPECT_NE(error_of("CurrentTime").find("HTTP status 503"), std::string::npos);
  answer("CurrentTime", "<root xmlns=\"urn:vim25\"/>");
  EXPECT_NE(error_of("CurrentTime").find("not a SOAP envelope"), std::string::npos);
  answer("CurrentTime", "");
  EXPECT_NE(error_of("CurrentTime").find("empty document"), std::string::npos);
}

TEST_F(Hostile, FaultsWithoutDetailAndWithForeignPrefixes) {
  SoapClient c(url(), insecure());
  try {
    c.call("NoSuchMethod", "");
    FAIL();
  } catch (const SoapFault& f) {
    EXPECT_EQ(f.type(), "SystemError");
    EXPECT_NE(f.fault_message().find("no canned answer"), std::string::npos);
  }
  answer("CurrentTime",
         "<?xml version=\"1.0\"?><e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope/\" "
         "xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:v=\"urn:vim25\"><e:Body><e:Fault>"
         "<faultcode>e:Server</faultcode><faultstring>session is gone</faultstring><detail>"
         "<v:NotAuthenticatedFault i:type=\"v:NotAuthenticated\"/></detail></e:Fault></e:Body></e:Envelope>",
         500);
  try {
    c.call("CurrentTime", "");
    FAIL();
  } catch (const SoapFault& f) {
    EXPECT_EQ(f.type(), "NotAuthenticated");
  }
}

TEST_F(Hostile, IllTypedInventoryNamesTheVm) {
  auto s = session();
  answer("RetrievePropertiesEx",
         fmt::format(fmt::runtime(kEnvelope),
                     "<RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><objects>"
                     "<obj type=\"VirtualMachine\">vm-7</obj><propSet><name>name</name><val>web01</val></propSet>"
                     "<propSet><name>config.hardware.numCPU</name><val>many</val></propSet>"
                     "</objects></returnval></RetrievePropertiesExResponse>"));
  try {
    describe_vm(*s, Moref{"VirtualMachine", "vm-7"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vm-7 numCPU: expected an integer"), std::string::npos) << e.what();
  }
}

std::string qcda(const std::string& inner) {
  return fmt::format(fmt::runtime(kEnvelope),
                     "<QueryChangedDiskAreasResponse xmlns=\"urn:vim25\"><returnval>" + inner +
                         "</returnval></QueryChangedDiskAreasResponse>");
}

TEST_F(Hostile, ChangedAreasThatDoNotAdvanceOrLeaveTheDiskAreRefused) {
  auto s = session();
  Moref vm{"VirtualMachine", "vm-7"}, snap{"VirtualMachineSnapshot", "snapshot-1"};
  auto err = [&] {
    try {
      query_changed_disk_areas(*s, vm, snap, 2000, 1 << 20, "*");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  answer("QueryChangedDiskAreas", qcda("<startOffset>0</startOffset><length>0</length>"));
  EXPECT_NE(err().find("does not continue from offset 0"), std::string::npos);
  answer("QueryChangedDiskAreas", qcda("<startOffset>0</startOffset><length>1048576</length>"
                                       "<changedArea><start>1048000</start><length>4096</length></changedArea>"));
  EXPECT_NE(err().find("outside the disk"), std::string::npos);
  answer("QueryChangedDiskAreas", qcda("<startOffset>zero</startOffset><length>1</length>"));
  EXPECT_NE(err().find("expected an integer"), std::string::npos);
  answer("QueryChangedDiskAreas", qcda("<length>1</length>"));
  EXPECT_NE(err().find("no <startOffset>"), std::string::npos);
  // A well-formed single answer covering the disk is accepted.
  answer("QueryChangedDiskAreas", qcda("<startOffset>0</startOffset><length>1048576</length>"
                                       "<changedArea><start>4096</start><length>4096</length></changedArea>"
                                       "<changedArea><start>8192</start><length>4096</length></changedArea>"));
  EXPECT_EQ(query_changed_disk_areas(*s, vm, snap, 2000, 1 << 20, "*"), (RangeList{{4096, 8192}}));
}

std::string properties(const std::string& props) {
  return fmt::format(fmt::runtime(kEnvelope),
                     "<RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval><objects>"
                     "<obj type=\"VirtualMachine\">vm-7</obj>" + props +
                         "</objects></returnval></RetrievePropertiesExResponse>");
}

std::string prop(const std::string& name, const std::string& value, const std::string& type = "xsd:string") {
  return fmt::format("<propSet><name>{}</name><val xsi:type=\"{}\">{}</val></propSet>", name, type, value);
}

std::string task_answer(const std::string& method) {
  return fmt::format(fmt::runtime(kEnvelope), fmt::format("<{}Response xmlns=\"urn:vim25\"><returnval type=\"Task\">"
                                                          "task-9</returnval></{}Response>",
                                                          method, method));
}

TEST_F(Hostile, GuestThatDoesNotShutDownIsPoweredOff) {
  auto s = session();
  VmInfo vm;
  vm.ref = {"VirtualMachine", "vm-7"};
  vm.name = "stubborn";
  // The VM stays on whatever happens; every task succeeds at once.
  answer("RetrievePropertiesEx", properties(prop("runtime.powerState", "poweredOn") + prop("info.state", "success")));
  answer("ShutdownGuest", fmt::format(fmt::runtime(kEnvelope), "<ShutdownGuestResponse xmlns=\"urn:vim25\"/>"));
  answer("PowerOffVM_Task", task_answer("PowerOffVM_Task"));
  EXPECT_FALSE(shutdown_guest(*s, vm, std::chrono::seconds(1), std::chrono::milliseconds(50)));
  std::string log = test::log_tail(dir.file("server.log"), 1 << 20);
  EXPECT_LT(log.find("method ShutdownGuest"), log.find("method PowerOffVM_Task")) << log;

  // No VMware Tools: the guest cannot be asked, the VM is powered off at once.
  answer("ShutdownGuest",
         fmt::format(fmt::runtime(kEnvelope),
                     "<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>no tools</faultstring>"
                     "<detail><ToolsUnavailableFault xmlns=\"urn:vim25\" xsi:type=\"ToolsUnavailable\"/></detail>"
                     "</soapenv:Fault>"),
         500);
  EXPECT_FALSE(shutdown_guest(*s, vm, std::chrono::seconds(3600)));
}

TEST_F(Hostile, IdleSessionIsKeptAlive) {
  answer("CurrentTime", fmt::format(fmt::runtime(kEnvelope), "<CurrentTimeResponse xmlns=\"urn:vim25\"><returnval>"
                                                             "2026-01-01T00:00:00Z</returnval></CurrentTimeResponse>"));
  ConnectOptions o;
  o.url = url();
  o.user = "u";
  o.password_file = dir.file("pw");
  o.tls = insecure();
  o.keepalive = std::chrono::seconds(1);
  auto s = Session::connect(o);
  // Wait (up to a generous bound) for the keep-alive call to reach the server.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (test::log_tail(dir.file("server.log"), 1 << 20).find("method CurrentTime") == std::string::npos) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no keep-alive call was made";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  s->logout();  // stops the keep-alive thread and logs out
  EXPECT_NE(test::log_tail(dir.file("server.log"), 1 << 20).find("method Logout"), std::string::npos);
}

TEST_F(Hostile, TaskProgressTimeoutAndError) {
  auto s = session();
  answer("RetrievePropertiesEx",
         properties(prop("info.state", "running", "TaskInfoState") + prop("info.progress", "40", "xsd:int")));
  std::vector<int> seen;
  TaskWait wait;
  wait.timeout = std::chrono::seconds(1);
  wait.poll = std::chrono::milliseconds(50);
  wait.on_progress = [&](int p) { seen.push_back(p); };
  try {
    wait_for_task(*s, {"Task", "task-9"}, "CreateSnapshot on VM web01", wait);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("did not finish within 1 s"), std::string::npos) << e.what();
  }
  EXPECT_EQ(seen, std::vector<int>{40});  // reported once, not at every poll

  answer("RetrievePropertiesEx",
         properties(prop("info.state", "error", "TaskInfoState") +
                    "<propSet><name>info.error</name><val xsi:type=\"LocalizedMethodFault\">"
                    "<fault xsi:type=\"vim25:InsufficientDiskSpace\"/><localizedMessage>The datastore ds1 is full"
                    "</localizedMessage></val></propSet>"));
  try {
    wait_for_task(*s, {"Task", "task-9"}, "CreateSnapshot on VM web01", wait);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("CreateSnapshot on VM web01 failed (task task-9): InsufficientDiskSpace: The datastore ds1 is full"),
              std::string::npos)
        << m;
  }
  answer("RetrievePropertiesEx", properties(prop("info.state", "exploded", "TaskInfoState")));
  EXPECT_THROW(wait_for_task(*s, {"Task", "task-9"}, "x", wait), Error);
}

}  // namespace
}  // namespace mk::vsphere

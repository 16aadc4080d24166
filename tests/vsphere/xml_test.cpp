// The XML layer against malformed and hostile documents, and parsing of vSphere data
// with the prefixes and type spellings different servers use.
#include <gtest/gtest.h>

#include "vsphere/inventory.h"
#include "vsphere/soap_client.h"
#include "vsphere/xml.h"

namespace mk::vsphere {
namespace {

std::string error_of(const std::string& text) {
  try {
    xml::Document::parse(text, "test answer");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(VsphereXml, TruncatedDocumentIsAClearError) {
  std::string m = error_of("<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Bo");
  EXPECT_NE(m.find("test answer: malformed XML"), std::string::npos) << m;
  EXPECT_NE(error_of("").find("empty document"), std::string::npos);
  EXPECT_NE(error_of("not xml at all").find("malformed XML"), std::string::npos);
  EXPECT_NE(error_of(std::string("<a>\0</a>", 8)).find("malformed"), std::string::npos);
}

TEST(VsphereXml, HugeDocumentIsRefusedWithoutParsing) {
  std::string big = "<a>" + std::string(xml::kMaxDocumentBytes, 'x') + "</a>";
  std::string m = error_of(big);
  EXPECT_NE(m.find("exceeds"), std::string::npos) << m;
}

TEST(VsphereXml, EntityExpansionAndExternalEntitiesAreRefused) {
  std::string laughs =
      "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">"
      "<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">"
      "<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]><lolz>&lol3;</lolz>";
  EXPECT_NE(error_of(laughs).find("DTD"), std::string::npos);
  std::string xxe = "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><a>&x;</a>";
  std::string m = error_of(xxe);
  EXPECT_FALSE(m.empty());
  EXPECT_EQ(m.find("root:"), std::string::npos) << m;
}

TEST(VsphereXml, DeepNestingIsAnErrorNotACrash) {
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "<a>";
  EXPECT_NE(error_of(deep).find("malformed"), std::string::npos);
}

TEST(VsphereXml, UnexpectedTypesAreClearErrors) {
  EXPECT_EQ(xml::to_int("42", "x"), 42);
  EXPECT_EQ(xml::to_int("-7", "x"), -7);
  for (std::string bad : {"", "4x", "abc", "99999999999999999999999", " 1"}) {
    try {
      xml::to_int(bad, "capacityInKB of disk 2000");
      FAIL() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("capacityInKB of disk 2000: expected an integer"), std::string::npos);
    }
  }
}

TEST(VsphereXml, LookupsAreByNamespaceAndLocalName) {
  // A default namespace, a "vim25:" prefix, prefixed xsi:type values and a foreign
  // element that must not be mistaken for a vim25 one.
  auto doc = xml::Document::parse(
      "<r xmlns=\"urn:vim25\" xmlns:vim25=\"urn:vim25\" xmlns:x=\"urn:other\" "
      "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">"
      "<x:key>wrong</x:key><vim25:key>1</vim25:key><val xsi:type=\"vim25:ArrayOfVirtualDevice\"/></r>",
      "t");
  EXPECT_EQ(doc.root().text_of("key"), "1");
  EXPECT_EQ(doc.root().child("val").xsi_type(), "ArrayOfVirtualDevice");
  EXPECT_EQ(xml::escape("a<b&\"c'>"), "a&lt;b&amp;&quot;c&apos;&gt;");
}

VmInfo devices(const std::string& inner) {
  auto doc = xml::Document::parse(
      "<val xmlns=\"urn:vim25\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"ArrayOfVirtualDevice\">" +
          inner + "</val>",
      "devices");
  VmInfo vm;
  vm.name = "web01";
  parse_devices(doc.root(), vm);
  return vm;
}

TEST(VsphereXml, DisksUseCapacityInKBWhenBytesAreAbsent) {
  VmInfo vm = devices(
      "<VirtualDevice xsi:type=\"VirtualLsiLogicController\"><key>1000</key><busNumber>0</busNumber></VirtualDevice>"
      "<VirtualDevice xsi:type=\"VirtualDisk\"><key>2000</key><controllerKey>1000</controllerKey><unitNumber>0</unitNumber>"
      "<capacityInKB>4096</capacityInKB><backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\">"
      "<fileName>[ds1] web01/web01.vmdk</fileName><thinProvisioned>true</thinProvisioned>"
      "<changeId>52 3c 1f 00 00 00 00 00 00 00 00 00 00 00 00 2a/17</changeId></backing></VirtualDevice>"
      "<VirtualDevice xsi:type=\"VirtualDisk\"><key>2001</key><controllerKey>1000</controllerKey><unitNumber>1</unitNumber>"
      "<capacityInKB>1</capacityInKB><capacityInBytes>8589934592</capacityInBytes>"
      "<backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>[ds2] web01/web01_1.vmdk</fileName></backing>"
      "</VirtualDevice>"
      "<VirtualDevice xsi:type=\"VirtualVmxnet3\"><key>4000</key><macAddress>00:50:56:aa:bb:cc</macAddress>"
      "<backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>VM Network</deviceName></backing>"
      "</VirtualDevice>");
  ASSERT_EQ(vm.disks.size(), 2u);
  EXPECT_EQ(vm.disks[0].capacity_bytes, 4096u * 1024u);
  EXPECT_EQ(vm.disks[0].controller, "VirtualLsiLogicController");
  EXPECT_EQ(vm.disks[0].datastore, "ds1");
  EXPECT_TRUE(vm.disks[0].thin);
  EXPECT_EQ(vm.disks[0].change_id, "52 3c 1f 00 00 00 00 00 00 00 00 00 00 00 00 2a/17");
  EXPECT_EQ(vm.disks[1].capacity_bytes, 8589934592u);  // capacityInBytes wins
  EXPECT_EQ(vm.disks[1].unit_number, 1);
  ASSERT_EQ(vm.nics.size(), 1u);
  EXPECT_EQ(vm.nics[0].mac, "00:50:56:aa:bb:cc");
  EXPECT_EQ(vm.nics[0].network, "VM Network");
}

TEST(VsphereXml, HostileDeviceValuesAreClearErrors) {
  EXPECT_THROW(devices("<VirtualDevice xsi:type=\"VirtualDisk\"><key>x</key></VirtualDevice>"), Error);
  EXPECT_THROW(devices("<VirtualDevice xsi:type=\"VirtualDisk\"><key>1</key><capacityInKB>-5</capacityInKB>"
                       "<backing><fileName>[a] b.vmdk</fileName></backing></VirtualDevice>"),
               Error);
  EXPECT_THROW(devices("<VirtualDevice xsi:type=\"VirtualDisk\"><key>1</key><capacityInKB>5</capacityInKB>"
                       "<backing><fileName>no-datastore.vmdk</fileName></backing></VirtualDevice>"),
               Error);
  // An unknown device type is ignored, not misread.
  EXPECT_TRUE(devices("<VirtualDevice xsi:type=\"VirtualSomethingNew\"><key>9</key></VirtualDevice>").disks.empty());
}

TEST(VsphereTls, ThumbprintsAreNormalisedAndChecked) {
  const std::string want = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD";
  EXPECT_EQ(normalize_thumbprint("aabbccddeeff00112233445566778899aabbccdd"), want);
  EXPECT_EQ(normalize_thumbprint("aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd"), want);
  EXPECT_THROW(normalize_thumbprint("aa:bb"), UsageError);            // too short
  EXPECT_THROW(normalize_thumbprint(want + ":EE"), UsageError);        // SHA-256 length or junk
  EXPECT_THROW(normalize_thumbprint("zz" + want.substr(2)), UsageError);
  EXPECT_THROW(SoapClient("http://vcenter/sdk", {}), UsageError);     // TLS only
  EXPECT_EQ(Moref({"VirtualMachine", "vm-<1>"}).xml("_this"), "<_this type=\"VirtualMachine\">vm-&lt;1&gt;</_this>");
}

}  // namespace
}  // namespace mk::vsphere

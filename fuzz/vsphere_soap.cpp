// libFuzzer target: the vSphere SOAP answers the VMA reads (src/vsphere): the envelope
// and fault handling of every call (SoapClient::parse_answer, SoapClient::response), the
// XML view (xml.h: names, text, attributes, xsi:type, integers) and the inventory's
// parsers of a VM's devices and snapshot tree, applied to every element of the answer.
// Input: a selector byte (the HTTP status and the method), then the answer's XML.
// Checks: only mk::Error escapes; parsed disks and snapshots hold what their parsers
// promise.
#include <fmt/format.h>

#include "fuzz_support.h"
#include "vsphere/inventory.h"
#include "vsphere/soap_client.h"
#include "vsphere/xml.h"

namespace {

using namespace mk::vsphere;

// Every element below `n`, depth first, at most `budget` of them.
void walk(const xml::Node& n, std::vector<xml::Node>& out, size_t budget) {
  if (out.size() >= budget) return;
  out.push_back(n);
  for (const auto& c : n.element_children()) walk(c, out, budget);
}

void inspect(const xml::Node& n) {
  (void)n.local_name();
  (void)n.ns();
  (void)n.xsi_type();
  (void)n.attr("type");
  std::string text = n.text();
  mk::fuzz::expect_error([&] { (void)xml::to_int(text, "fuzz value"); });
  mk::fuzz::expect_error([&] { (void)datastore_of(text); });
  mk::fuzz::expect_error([&] { (void)n.required_text("key", "fuzz"); });
  (void)n.text_of("value");
  (void)xml::escape(text);
}

void devices(const xml::Node& n) {
  VmInfo vm;
  if (!mk::fuzz::expect_error([&] { parse_devices(n, vm); })) return;
  (void)boot_disk_key(vm);
}

void snapshots(const xml::Node& n) {
  mk::fuzz::expect_error([&] { (void)parse_snapshot_tree(n); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* methods[] = {"RetrievePropertiesEx", "QueryChangedDiskAreas", "CreateSnapshot_Task",
                                  "RetrieveServiceContent", "Login", "ContinueRetrievePropertiesEx"};
  mk::fuzz::Input in(data, size);
  long status = (in.selector & 1) ? 500 : 200;
  std::string method = methods[(in.selector >> 1) % (sizeof methods / sizeof methods[0])];
  xml::Document doc;
  bool parsed = mk::fuzz::expect_error([&] { doc = SoapClient::parse_answer(in.text, status, "vcenter.test", method); });
  if (!parsed) {
    // The XML layer on its own, for documents that are not SOAP envelopes.
    if (!mk::fuzz::expect_error([&] { doc = xml::Document::parse(in.text, "fuzz document"); })) return 0;
  } else {
    mk::fuzz::expect_error([&] { (void)SoapClient::response(doc, method); });
  }
  std::vector<xml::Node> nodes;
  walk(doc.root(), nodes, 2000);
  for (const auto& n : nodes) {
    inspect(n);
    devices(n);
    snapshots(n);
  }
  return 0;
}

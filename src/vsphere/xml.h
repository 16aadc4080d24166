// A small, namespace-aware view of XML documents for the vSphere SOAP client.
//
// vSphere servers differ in namespace prefixes ("vim25:", a default namespace, none) and
// in how they spell xsi:type values ("VirtualDisk", "vim25:VirtualDisk"), so every lookup
// here is by namespace URI and local name, and type values are compared by local part.
// Parsing is defensive: documents over a size limit, with a DTD, or malformed throw
// mk::Error naming what was being parsed; entities are never expanded and nothing is
// fetched from the network.
//
// A Document owns its libxml2 tree; Nodes are non-owning views valid while the Document
// lives. Documents are independent: different threads may use different Documents.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct _xmlDoc;
struct _xmlNode;

namespace mk::vsphere::xml {

inline constexpr std::string_view kSoapEnvNs = "http://schemas.xmlsoap.org/soap/envelope/";
inline constexpr std::string_view kXsiNs = "http://www.w3.org/2001/XMLSchema-instance";
inline constexpr std::string_view kVimNs = "urn:vim25";

// Largest document accepted (a big inventory page is a few MiB).
inline constexpr size_t kMaxDocumentBytes = 64 * 1024 * 1024;

class Node {
 public:
  Node() = default;
  explicit Node(_xmlNode* n) : n_(n) {}

  explicit operator bool() const { return n_ != nullptr; }
  std::string_view local_name() const;
  std::string_view ns() const;  // namespace URI, "" when none
  // Concatenated text content ("" for a null node).
  std::string text() const;

  // First/all element children with this local name, in the vim25 namespace or in none
  // (servers differ). child() returns a null Node when absent.
  Node child(std::string_view local) const;
  std::vector<Node> children(std::string_view local) const;
  std::vector<Node> element_children() const;
  // The text of child(local), or throws mk::Error "<context>: missing <local>".
  std::string required_text(std::string_view local, std::string_view context) const;
  std::string text_of(std::string_view local, std::string_view fallback = "") const;

  // An unqualified attribute ("type" of a moref, not xsi:type); "" when absent.
  std::string attr(std::string_view local) const;
  // The xsi:type value without its prefix ("" when absent).
  std::string xsi_type() const;

 private:
  _xmlNode* n_ = nullptr;
};

class Document {
 public:
  // Parses `text`; `what` names the source in errors ("response to RetrievePropertiesEx").
  static Document parse(std::string_view text, const std::string& what);

  Node root() const;

 private:
  struct Free {
    void operator()(_xmlDoc* d) const;
  };
  std::unique_ptr<_xmlDoc, Free> doc_;
};

// Escapes text for element content and attribute values.
std::string escape(std::string_view text);

// Parses an xsd:long / xsd:int text; throws mk::Error naming `what` when not an integer.
int64_t to_int(const std::string& text, std::string_view what);

}  // namespace mk::vsphere::xml

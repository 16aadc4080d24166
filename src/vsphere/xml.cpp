#include "vsphere/xml.h"

#include <fmt/format.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include <charconv>
#include <mutex>

#include "common/error.h"

namespace mk::vsphere::xml {
namespace {

std::string_view sv(const xmlChar* s) { return s ? std::string_view(reinterpret_cast<const char*>(s)) : ""; }

bool vim_or_none(const xmlNode* n) {
  std::string_view ns = n->ns ? sv(n->ns->href) : "";
  return ns.empty() || ns == kVimNs;
}

// libxml2 reports errors through a global callback; collect the first message per parse
// on this thread instead of letting it print to stderr.
thread_local std::string* t_error = nullptr;

void on_error(void*, xmlErrorPtr e) {
  if (t_error && t_error->empty() && e && e->message) {
    *t_error = fmt::format("line {}: {}", e->line, e->message);
    while (!t_error->empty() && t_error->back() == '\n') t_error->pop_back();
  }
}

void init_once() {
  static std::once_flag once;
  std::call_once(once, [] { xmlInitParser(); });
}

}  // namespace

std::string_view Node::local_name() const { return n_ ? sv(n_->name) : ""; }
std::string_view Node::ns() const { return n_ && n_->ns ? sv(n_->ns->href) : ""; }

std::string Node::text() const {
  if (!n_) return "";
  xmlChar* c = xmlNodeGetContent(n_);
  std::string out(sv(c));
  xmlFree(c);
  return out;
}

Node Node::child(std::string_view local) const {
  if (!n_) return Node();
  for (xmlNode* c = n_->children; c; c = c->next) {
    if (c->type == XML_ELEMENT_NODE && sv(c->name) == local && vim_or_none(c)) return Node(c);
  }
  return Node();
}

std::vector<Node> Node::children(std::string_view local) const {
  std::vector<Node> out;
  if (!n_) return out;
  for (xmlNode* c = n_->children; c; c = c->next) {
    if (c->type == XML_ELEMENT_NODE && sv(c->name) == local && vim_or_none(c)) out.emplace_back(c);
  }
  return out;
}

std::vector<Node> Node::element_children() const {
  std::vector<Node> out;
  if (!n_) return out;
  for (xmlNode* c = n_->children; c; c = c->next) {
    if (c->type == XML_ELEMENT_NODE) out.emplace_back(c);
  }
  return out;
}

std::string Node::required_text(std::string_view local, std::string_view context) const {
  Node c = child(local);
  if (!c) throw Error(fmt::format("{}: the server's answer has no <{}>", context, local));
  return c.text();
}

std::string Node::text_of(std::string_view local, std::string_view fallback) const {
  Node c = child(local);
  return c ? c.text() : std::string(fallback);
}

std::string Node::attr(std::string_view local) const {
  if (!n_) return "";
  for (xmlAttr* a = n_->properties; a; a = a->next) {
    if (sv(a->name) == local && !a->ns) {
      xmlChar* v = xmlNodeListGetString(n_->doc, a->children, 1);
      std::string out(sv(v));
      xmlFree(v);
      return out;
    }
  }
  return "";
}

std::string Node::xsi_type() const {
  if (!n_) return "";
  for (xmlAttr* a = n_->properties; a; a = a->next) {
    if (sv(a->name) == "type" && a->ns && sv(a->ns->href) == kXsiNs) {
      xmlChar* v = xmlNodeListGetString(n_->doc, a->children, 1);
      std::string out(sv(v));
      xmlFree(v);
      auto colon = out.rfind(':');
      return colon == std::string::npos ? out : out.substr(colon + 1);
    }
  }
  return "";
}

void Document::Free::operator()(_xmlDoc* d) const { xmlFreeDoc(d); }

Document Document::parse(std::string_view text, const std::string& what) {
  init_once();
  if (text.empty()) throw Error(fmt::format("{}: empty document (the server closed the answer early?)", what));
  if (text.size() > kMaxDocumentBytes) {
    throw Error(fmt::format("{}: document of {} bytes exceeds the {} byte limit; refusing to parse it", what,
                            text.size(), kMaxDocumentBytes));
  }
  // vSphere never sends a DTD; refusing one before parsing rules out entity expansion
  // and external entities whatever the parser's defaults.
  if (text.find("<!DOCTYPE") != std::string_view::npos) {
    throw Error(fmt::format("{}: the document declares a DTD, which no vSphere server sends; refusing it", what));
  }
  std::string error;
  t_error = &error;
  xmlSetStructuredErrorFunc(nullptr, on_error);
  // NONET: never fetch; no NOENT: entities are not substituted; no HUGE: libxml2's own
  // depth and size limits stay on.
  xmlDoc* doc = xmlReadMemory(text.data(), static_cast<int>(text.size()), "soap.xml", nullptr,
                              XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  xmlSetStructuredErrorFunc(nullptr, nullptr);
  t_error = nullptr;
  Document d;
  d.doc_.reset(doc);
  if (!doc) {
    throw Error(fmt::format("{}: malformed XML ({}); the server or something between us and it sent a "
                            "broken answer",
                            what, error.empty() ? "no detail" : error));
  }
  if (doc->intSubset || doc->extSubset) {
    throw Error(fmt::format("{}: the document declares a DTD, which no vSphere server sends; refusing it", what));
  }
  if (!xmlDocGetRootElement(doc)) throw Error(fmt::format("{}: the document has no root element", what));
  return d;
}

Node Document::root() const { return Node(xmlDocGetRootElement(doc_.get())); }

std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

int64_t to_int(const std::string& text, std::string_view what) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || text.empty()) {
    throw Error(fmt::format("{}: expected an integer, the server sent \"{}\"", what, text.substr(0, 64)));
  }
  return v;
}

}  // namespace mk::vsphere::xml

#include "vsphere/soap_client.h"

#include <curl/curl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cctype>

#include "common/log.h"

namespace mk::vsphere {
namespace {

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string sha1_thumbprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!cert || X509_digest(cert, EVP_sha1(), md, &n) != 1) return "";
  std::string out;
  for (unsigned i = 0; i < n; ++i) out += fmt::format("{}{:02X}", i ? ":" : "", md[i]);
  return out;
}

// What the handshake callback needs; lives in the Curl state, read under the client's mutex.
struct TlsState {
  TlsPolicy::Mode mode = TlsPolicy::Mode::VerifyCa;
  std::string pin;
  std::string seen;
};

int verify_cert(X509_STORE_CTX* store, void* arg) {
  auto* st = static_cast<TlsState*>(arg);
  st->seen = sha1_thumbprint(X509_STORE_CTX_get0_cert(store));
  switch (st->mode) {
    case TlsPolicy::Mode::PinThumbprint:
      if (st->seen == st->pin) return 1;
      X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
      return 0;
    case TlsPolicy::Mode::Insecure:
      return 1;
    case TlsPolicy::Mode::VerifyCa:
      break;
  }
  return X509_verify_cert(store);
}

CURLcode on_ssl_ctx(CURL*, void* ssl_ctx, void* arg) {
  SSL_CTX_set_cert_verify_callback(static_cast<SSL_CTX*>(ssl_ctx), verify_cert, arg);
  return CURLE_OK;
}

struct Sink {
  std::string data;
  bool too_big = false;
};

size_t on_write(char* p, size_t size, size_t n, void* arg) {
  auto* s = static_cast<Sink*>(arg);
  if (s->data.size() + size * n > xml::kMaxDocumentBytes) {
    s->too_big = true;
    return 0;  // makes curl fail the transfer
  }
  s->data.append(p, size * n);
  return size * n;
}

// "https://host[:port][/path]" -> host; validates the scheme.
std::string parse_host(const std::string& url) {
  const std::string scheme = "https://";
  if (url.compare(0, scheme.size(), scheme) != 0) {
    throw UsageError(fmt::format("vSphere URL {}: must start with https:// (the API is served over TLS only)", url));
  }
  std::string rest = url.substr(scheme.size());
  std::string hostport = rest.substr(0, rest.find('/'));
  if (hostport.empty()) throw UsageError(fmt::format("vSphere URL {}: no host", url));
  if (hostport[0] == '[') return hostport.substr(0, hostport.find(']') + 1);
  return hostport.substr(0, hostport.find(':'));
}

// "https://host:port/..." -> port; 0 without one. Throws UsageError for a bad port.
int parse_port(const std::string& url) {
  std::string rest = url.substr(std::string("https://").size());
  std::string hostport = rest.substr(0, rest.find('/'));
  size_t colon = hostport.rfind(':');
  if (colon == std::string::npos || (hostport[0] == '[' && colon < hostport.find(']'))) return 0;
  std::string digits = hostport.substr(colon + 1);
  if (digits.empty() || digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(digits) < 1 || std::stoi(digits) > 65535) {
    throw UsageError(fmt::format("vSphere URL {}: \"{}\" is not a port number", url, digits));
  }
  return std::stoi(digits);
}

std::string with_sdk_path(const std::string& url) {
  std::string rest = url.substr(8);
  return rest.find('/') == std::string::npos ? url + "/sdk" : url;
}

}  // namespace

std::string normalize_thumbprint(const std::string& text) {
  std::string hex;
  for (char c : text) {
    if (c == ':' || c == ' ') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      throw UsageError(fmt::format("thumbprint \"{}\": not hexadecimal; expected a SHA-1 like AA:BB:...", text));
    }
    hex += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  if (hex.size() != 40) {
    throw UsageError(fmt::format("thumbprint \"{}\": a SHA-1 thumbprint has 20 bytes (40 hex digits), got {}", text,
                                 hex.size()));
  }
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) out += (i ? ":" : "") + hex.substr(i, 2);
  return out;
}

struct SoapClient::Curl {
  CURL* h = nullptr;
  curl_slist* headers = nullptr;
  TlsState tls;
  ~Curl() {
    if (h) curl_easy_cleanup(h);
    curl_slist_free_all(headers);
  }
};

SoapClient::SoapClient(const std::string& url, TlsPolicy tls, std::chrono::seconds timeout, std::string api_version)
    : url_(with_sdk_path(url)), host_(parse_host(url)), port_(parse_port(url)), tls_(std::move(tls)), timeout_(timeout),
      api_version_(std::move(api_version)) {
  init_curl_once();
  if (tls_.mode == TlsPolicy::Mode::PinThumbprint) tls_.thumbprint = normalize_thumbprint(tls_.thumbprint);
  if (tls_.mode == TlsPolicy::Mode::Insecure) {
    log::warn("vSphere {}: TLS certificate checking is OFF; pin the thumbprint instead", host_);
  }
  curl_ = std::make_unique<Curl>();
  curl_->h = curl_easy_init();
  if (!curl_->h) throw Error("cannot initialise libcurl (out of memory?)");
  curl_->tls.mode = tls_.mode;
  curl_->tls.pin = tls_.thumbprint;
  curl_->headers = curl_slist_append(curl_->headers, "Content-Type: text/xml; charset=utf-8");
  curl_->headers = curl_slist_append(curl_->headers, fmt::format("SOAPAction: \"urn:vim25/{}\"", api_version_).c_str());
  curl_->headers = curl_slist_append(curl_->headers, "Expect:");
  CURL* h = curl_->h;
  curl_easy_setopt(h, CURLOPT_URL, url_.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, curl_->headers);
  curl_easy_setopt(h, CURLOPT_COOKIEFILE, "");  // in-memory cookie engine for the session
  curl_easy_setopt(h, CURLOPT_TIMEOUT, static_cast<long>(timeout_.count()));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
  // Every handshake must pass our callback (pin check, thumbprint record): no resumption.
  curl_easy_setopt(h, CURLOPT_SSL_SESSIONID_CACHE, 0L);
  curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
  curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, &curl_->tls);
  bool verify = tls_.mode != TlsPolicy::Mode::Insecure;
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L);
  // With a pin the thumbprint identifies the server; names need not match.
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, tls_.mode == TlsPolicy::Mode::VerifyCa ? 2L : 0L);
  if (tls_.mode == TlsPolicy::Mode::VerifyCa && !tls_.ca_file.empty()) {
    curl_easy_setopt(h, CURLOPT_CAINFO, tls_.ca_file.c_str());
  }
}

SoapClient::~SoapClient() = default;

void SoapClient::forget_cookies() {
  std::lock_guard lock(mu_);
  curl_easy_setopt(curl_->h, CURLOPT_COOKIELIST, "ALL");
}

std::string SoapClient::server_thumbprint() const {
  std::lock_guard lock(mu_);
  return thumbprint_;
}

xml::Document SoapClient::call(const std::string& method, const std::string& body) {
  std::string envelope = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
      "<soapenv:Envelope xmlns:soapenv=\"{}\" xmlns:xsi=\"{}\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">"
      "<soapenv:Body><{} xmlns=\"{}\">{}</{}></soapenv:Body></soapenv:Envelope>",
      xml::kSoapEnvNs, xml::kXsiNs, method, xml::kVimNs, body, method);
  Sink sink;
  long status = 0;
  {
    std::lock_guard lock(mu_);
    CURL* h = curl_->h;
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, envelope.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(envelope.size()));
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    curl_->tls.seen.clear();
    CURLcode rc = curl_easy_perform(h);
    if (!curl_->tls.seen.empty()) thumbprint_ = curl_->tls.seen;
    if (rc != CURLE_OK) {
      if (sink.too_big) {
        throw Error(fmt::format("vSphere {}: {}: the answer exceeds {} bytes; refusing it", host_, method,
                                xml::kMaxDocumentBytes));
      }
      if (tls_.mode == TlsPolicy::Mode::PinThumbprint && !curl_->tls.seen.empty() && curl_->tls.seen != tls_.thumbprint) {
        throw Error(fmt::format("vSphere {}: the server's certificate thumbprint {} does not match the pinned {}; "
                                "nothing was sent. If the certificate was replaced on purpose, pin the new thumbprint",
                                host_, curl_->tls.seen, tls_.thumbprint));
      }
      throw Error(fmt::format("vSphere {}: {}: {} ({}); check the address, the network and the certificate settings",
                              host_, method, errbuf[0] ? errbuf : curl_easy_strerror(rc), curl_easy_strerror(rc)));
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  }
  if (status != 200 && status != 500) {
    throw Error(fmt::format("vSphere {}: {}: HTTP status {} (is {} the SDK endpoint of a vCenter or ESXi?)", host_,
                            method, status, url_));
  }
  return parse_answer(sink.data, status, host_, method);
}

xml::Document SoapClient::parse_answer(std::string_view text, long status, const std::string& host,
                                       const std::string& method) {
  xml::Document doc = xml::Document::parse(text, fmt::format("vSphere {}: answer to {}", host, method));
  xml::Node root = doc.root();
  xml::Node soap_body;
  for (auto& n : root.element_children()) {
    if (n.local_name() == "Body" && n.ns() == xml::kSoapEnvNs) soap_body = n;
  }
  if (root.local_name() != "Envelope" || root.ns() != xml::kSoapEnvNs || !soap_body) {
    throw Error(fmt::format("vSphere {}: answer to {} is not a SOAP envelope", host, method));
  }
  for (auto& n : soap_body.element_children()) {
    if (n.local_name() != "Fault") continue;
    std::string message = n.text_of("faultstring");
    std::string type = "SystemError";
    if (xml::Node detail = n.child("detail")) {
      auto kids = detail.element_children();
      if (!kids.empty()) {
        type = kids[0].xsi_type();
        if (type.empty()) {
          type = std::string(kids[0].local_name());
          if (type.size() > 5 && type.ends_with("Fault")) type.resize(type.size() - 5);
        }
        // Name the object a fault is about (ManagedObjectNotFound, InvalidState, ...).
        if (xml::Node obj = kids[0].child("obj")) {
          message += fmt::format(" ({} {})", obj.attr("type").substr(0, 64), obj.text().substr(0, 128));
        }
      }
    }
    throw SoapFault(type, message,
                    fmt::format("vSphere {}: {} failed: {}{}{}", host, method, type, message.empty() ? "" : ": ",
                                message.substr(0, 2000)));
  }
  if (status != 200) {
    throw Error(fmt::format("vSphere {}: {}: HTTP status {} without a SOAP fault", host, method, status));
  }
  return doc;
}

xml::Node SoapClient::response(const xml::Document& doc, const std::string& method) {
  for (auto& body : doc.root().element_children()) {
    if (body.local_name() != "Body") continue;
    for (auto& n : body.element_children()) {
      if (n.local_name() == method + "Response") return n;
    }
  }
  throw Error(fmt::format("vSphere: the answer to {} has no {}Response element", method, method));
}

std::string fetch_thumbprint(const std::string& url, std::chrono::seconds timeout) {
  TlsPolicy p;
  p.mode = TlsPolicy::Mode::Insecure;
  SoapClient c(url, p, timeout);
  try {
    c.call("RetrieveServiceContent", "<_this type=\"ServiceInstance\">ServiceInstance</_this>");
  } catch (const SoapFault&) {
    // Any answer will do: the handshake already happened.
  }
  std::string t = c.server_thumbprint();
  if (t.empty()) throw Error(fmt::format("vSphere {}: no certificate seen; is it an HTTPS server?", url));
  return t;
}

}  // namespace mk::vsphere

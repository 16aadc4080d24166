// SoapClient: the HTTPS transport of the vSphere Web Services API (SOAP, vim25).
//
// It posts one SOAP envelope per call to https://HOST[:PORT]/sdk, keeps the session
// cookie that Login sets, parses the answer and turns a SOAP fault into a SoapFault
// carrying the fault's type (xsi:type of the detail, e.g. "NotAuthenticated",
// "FileFault") and message. It knows nothing of sessions or managed objects: see
// session.h.
//
// TLS: the server's certificate is checked against the system CAs (or a CA file), or
// pinned by its SHA-1 thumbprint (what VDDK and ESXi hosts use; the pin is checked
// during the handshake, before any credential is sent), or, only when the operator asks
// for it, not checked at all. The thumbprint of the certificate seen is always available.
//
// Thread-safe: calls are serialised by an internal mutex (one HTTPS connection, reused).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "common/error.h"
#include "vsphere/xml.h"

namespace mk::vsphere {

struct TlsPolicy {
  enum class Mode { VerifyCa, PinThumbprint, Insecure };
  Mode mode = Mode::VerifyCa;
  std::string ca_file;     // VerifyCa: PEM bundle; "" = the system's CAs
  std::string thumbprint;  // PinThumbprint: SHA-1, "AA:BB:..." (case and ':' optional)
};

// A SOAP fault from the server. type() is the fault's local type name.
class SoapFault : public Error {
 public:
  SoapFault(std::string type, std::string fault_message, const std::string& message)
      : Error(message), type_(std::move(type)), fault_message_(std::move(fault_message)) {}
  const std::string& type() const { return type_; }
  const std::string& fault_message() const { return fault_message_; }

 private:
  std::string type_;
  std::string fault_message_;
};

// "AA:BB:..." upper case, from any spelling of a SHA-1 thumbprint; throws UsageError.
std::string normalize_thumbprint(const std::string& text);

class SoapClient {
 public:
  // `url` is "https://host[:port]/sdk" (the path defaults to /sdk). Throws UsageError for
  // a URL that is not https or a malformed pin.
  SoapClient(const std::string& url, TlsPolicy tls, std::chrono::seconds timeout = std::chrono::seconds(120),
             std::string api_version = "6.5");
  ~SoapClient();
  SoapClient(const SoapClient&) = delete;
  SoapClient& operator=(const SoapClient&) = delete;

  // Calls `method` with `body` (the parameters as vim25 XML, "_this" first). Returns the
  // parsed answer; use returnval() to reach its result. Throws SoapFault for a fault,
  // mk::Error for transport, TLS, HTTP and XML failures.
  xml::Document call(const std::string& method, const std::string& body);

  // An answer's body as call() reads it, apart from HTTP so that it can be checked on its
  // own: `text` came with HTTP `status` (200 or 500) from `host` for `method`. Returns the
  // parsed envelope; throws SoapFault for a fault, mk::Error for anything else amiss.
  static xml::Document parse_answer(std::string_view text, long status, const std::string& host,
                                    const std::string& method);

  // The returnval element(s) of an answer to `method` (throws if the Body is malformed).
  static xml::Node response(const xml::Document& doc, const std::string& method);

  // SHA-1 thumbprint of the server certificate seen in the last handshake ("" before).
  std::string server_thumbprint() const;
  const std::string& url() const { return url_; }
  const std::string& host() const { return host_; }
  int port() const { return port_; }  // the URL's port, 0 when it names none
  void forget_cookies();

 private:
  struct Curl;
  std::string url_, host_;
  int port_ = 0;
  TlsPolicy tls_;
  std::chrono::seconds timeout_;
  std::string api_version_;
  mutable std::mutex mu_;  // guards curl_ and thumbprint_
  std::unique_ptr<Curl> curl_;
  std::string thumbprint_;
};

// Fetches the SHA-1 thumbprint of the certificate at `url` without trusting it, so that
// an operator can compare it with the one vCenter shows and pin it.
std::string fetch_thumbprint(const std::string& url, std::chrono::seconds timeout = std::chrono::seconds(30));

}  // namespace mk::vsphere

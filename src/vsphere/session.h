// Session: a logged-in conversation with one vCenter or ESXi, over a SoapClient.
//
// It fetches the ServiceContent (the morefs of the managers), logs in with a user and a
// password read from a file (never from a command line), keeps the session alive with a
// cheap call every `keepalive` while idle, and logs in again transparently when a call
// fails with NotAuthenticated (sessions expire, vCenter restarts), then retries that call
// once. logout() (also run by the destructor) ends the session on the server.
//
// The password is kept in memory for re-login only; it is never logged.
// Thread-safe: invoke() may be called from several threads (calls are serialised).
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "vsphere/soap_client.h"

namespace mk::vsphere {

// A managed object reference: type ("VirtualMachine") and value ("vm-42").
struct Moref {
  std::string type;
  std::string value;
  bool empty() const { return value.empty(); }
  bool operator==(const Moref&) const = default;
  // <NAME type="TYPE">VALUE</NAME>, escaped.
  std::string xml(const std::string& name) const;
  static Moref from(const xml::Node& node);  // type attribute and text
};

struct ConnectOptions {
  std::string url;            // https://vcenter.example/sdk
  std::string user;
  std::string password_file;  // first line is the password; should be mode 0600
  TlsPolicy tls;
  std::chrono::seconds timeout{120};
  std::chrono::seconds keepalive{600};  // 0 disables the keep-alive thread
  // Objects per property-collector answer (RetrievePropertiesEx maxObjects); the rest
  // comes in further pages.
  int page_size = 100;
};

struct ServiceContent {
  Moref root_folder, property_collector, view_manager, search_index, session_manager, virtual_disk_manager;
  std::string api_type;     // "VirtualCenter" or "HostAgent"
  std::string api_version;  // "6.5", "7.0.3.0", ...
  std::string about_name;
};

// Reads the password file; throws UsageError if unreadable or empty. Warns when the
// file can be read by others.
std::string read_password_file(const std::string& path);

class Session {
 public:
  // Connects and logs in. Throws SoapFault InvalidLogin (as mk::Error with advice) for
  // wrong credentials, mk::Error for transport and TLS failures.
  static std::unique_ptr<Session> connect(const ConnectOptions& options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Calls a method; on NotAuthenticated logs in again and retries once.
  xml::Document invoke(const std::string& method, const std::string& body);
  // invoke() and return its <METHODResponse> element's first <returnval> (may be null).
  // The Document is returned through `keep` so that the node stays valid.
  xml::Node call(const std::string& method, const std::string& body, xml::Document& keep);

  const ServiceContent& service() const { return sc_; }
  SoapClient& client() { return *client_; }
  const std::string& host() const { return client_->host(); }
  int port() const { return client_->port(); }  // 0 when the URL names none
  int page_size() const { return options_.page_size; }
  std::string thumbprint() const { return client_->server_thumbprint(); }
  unsigned logins() const { return logins_; }

  void logout();

 private:
  explicit Session(const ConnectOptions& options);
  void login();
  void keepalive_loop();

  ConnectOptions options_;
  std::string password_;
  std::unique_ptr<SoapClient> client_;
  ServiceContent sc_;
  std::mutex mu_;  // guards logged_in_, stop_, last_call_, logins_
  std::condition_variable cv_;
  bool logged_in_ = false;
  bool stop_ = false;
  unsigned logins_ = 0;
  std::chrono::steady_clock::time_point last_call_;
  std::thread keepalive_;
};

}  // namespace mk::vsphere

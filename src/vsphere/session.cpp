#include "vsphere/session.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <fstream>

#include "common/log.h"

namespace mk::vsphere {

std::string Moref::xml(const std::string& name) const {
  return fmt::format("<{} type=\"{}\">{}</{}>", name, xml::escape(type), xml::escape(value), name);
}

Moref Moref::from(const xml::Node& node) { return Moref{node.attr("type"), node.text()}; }

std::string read_password_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError(fmt::format("cannot read the vSphere password file {}", path));
  std::string pw;
  std::getline(in, pw);
  if (!pw.empty() && pw.back() == '\r') pw.pop_back();
  if (pw.empty()) throw UsageError(fmt::format("the vSphere password file {} is empty", path));
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077)) {
    log::warn("the vSphere password file {} is readable by others (mode {:o}); chmod 600 it", path,
              st.st_mode & 0777);
  }
  return pw;
}

std::unique_ptr<Session> Session::connect(const ConnectOptions& options) {
  std::unique_ptr<Session> s(new Session(options));
  s->login();
  if (options.keepalive.count() > 0) s->keepalive_ = std::thread([p = s.get()] { p->keepalive_loop(); });
  return s;
}

Session::Session(const ConnectOptions& options) : options_(options) {
  if (options.user.empty()) throw UsageError("vSphere: no user name given");
  if (options.page_size < 1) throw UsageError("vSphere: the property-collector page size must be at least 1");
  password_ = read_password_file(options.password_file);
  client_ = std::make_unique<SoapClient>(options.url, options.tls, options.timeout);
  xml::Document doc = client_->call("RetrieveServiceContent", "<_this type=\"ServiceInstance\">ServiceInstance</_this>");
  xml::Node rv = SoapClient::response(doc, "RetrieveServiceContent").child("returnval");
  std::string ctx = fmt::format("vSphere {}: ServiceContent", client_->host());
  if (!rv) throw Error(ctx + ": no returnval");
  sc_.root_folder = Moref::from(rv.child("rootFolder"));
  sc_.property_collector = Moref::from(rv.child("propertyCollector"));
  sc_.view_manager = Moref::from(rv.child("viewManager"));
  sc_.search_index = Moref::from(rv.child("searchIndex"));
  sc_.session_manager = Moref::from(rv.child("sessionManager"));
  sc_.virtual_disk_manager = Moref::from(rv.child("virtualDiskManager"));
  xml::Node about = rv.child("about");
  sc_.api_type = about.text_of("apiType");
  sc_.api_version = about.text_of("apiVersion");
  sc_.about_name = about.text_of("fullName");
  if (sc_.property_collector.empty() || sc_.session_manager.empty() || sc_.root_folder.empty()) {
    throw Error(ctx + " lacks the property collector, session manager or root folder; is this vSphere?");
  }
}

Session::~Session() {
  try {
    logout();
  } catch (const std::exception& e) {
    log::warn("vSphere {}: logout failed: {}", host(), e.what());
  }
}

void Session::login() {
  std::string body = sc_.session_manager.xml("_this") +
                     fmt::format("<userName>{}</userName><password>{}</password>", xml::escape(options_.user),
                                 xml::escape(password_));
  try {
    client_->forget_cookies();
    client_->call("Login", body);
  } catch (const SoapFault& f) {
    if (f.type() == "InvalidLogin") {
      throw Error(fmt::format("vSphere {}: login as {} refused: wrong user name or password; check the password "
                              "file {}",
                              host(), options_.user, options_.password_file));
    }
    throw;
  }
  std::lock_guard lock(mu_);
  logged_in_ = true;
  ++logins_;
  last_call_ = std::chrono::steady_clock::now();
  log::debug("vSphere {}: logged in as {} ({}, API {})", host(), options_.user, sc_.about_name, sc_.api_version);
}

xml::Document Session::invoke(const std::string& method, const std::string& body) {
  {
    std::lock_guard lock(mu_);
    last_call_ = std::chrono::steady_clock::now();
  }
  try {
    return client_->call(method, body);
  } catch (const SoapFault& f) {
    if (f.type() != "NotAuthenticated") throw;
    log::info("vSphere {}: session expired during {}; logging in again", host(), method);
  }
  login();
  return client_->call(method, body);
}

xml::Node Session::call(const std::string& method, const std::string& body, xml::Document& keep) {
  keep = invoke(method, body);
  return SoapClient::response(keep, method).child("returnval");
}

void Session::keepalive_loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    auto due = last_call_ + options_.keepalive;
    if (cv_.wait_until(lock, due, [&] { return stop_; })) break;
    if (std::chrono::steady_clock::now() < last_call_ + options_.keepalive) continue;
    lock.unlock();
    try {
      invoke("CurrentTime", "<_this type=\"ServiceInstance\">ServiceInstance</_this>");
    } catch (const std::exception& e) {
      log::warn("vSphere {}: keep-alive failed: {}", host(), e.what());
    }
    lock.lock();
    last_call_ = std::chrono::steady_clock::now();
  }
}

void Session::logout() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (keepalive_.joinable()) keepalive_.join();
  bool was = false;
  {
    std::lock_guard lock(mu_);
    std::swap(was, logged_in_);
  }
  if (was) client_->call("Logout", sc_.session_manager.xml("_this"));
}

}  // namespace mk::vsphere

// Client for the Apache CloudStack API: signed requests, JSON responses, asynchronous
// jobs awaited to the end, and list calls paged until nothing is missed.
//
// Every request is signed with signature version 3 and an `expires` a few minutes ahead
// (so that a captured URL cannot be replayed later, and a server that enforces
// timestamps accepts it), and every command that changes state is sent by POST with a
// form-encoded body (as cmk does; enforce.post.requests.and.timestamps refuses it by
// GET); reads (list*, query*, get*) are sent by GET. An http:// API URL is refused unless
// the caller allows it explicitly: the API key and signatures would travel in clear.
//
// Every call names its command in errors. A failure CloudStack reports (HTTP error or
// an errorcode in the "<command>response" object, or a job that ended with jobstatus 2)
// is an ApiError carrying CloudStack's errorcode and errortext; a transport failure or
// an unreadable answer is a plain mk::Error.
//
// The Client owns a copy of the endpoint, including the secret key, which is only used
// to sign and is never logged or put in an error message. Calls are const and use their
// own HTTP handle each, so one Client may be shared by threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cloudstack/signer.h"
#include "common/error.h"

namespace mk::cloudstack {

using Json = nlohmann::json;

struct Endpoint {
  std::string api_url;     // http(s)://host:8080/client/api
  std::string api_key;
  std::string secret_key;  // from a file or the encrypted settings, never a command line
};

struct ClientOptions {
  std::chrono::milliseconds http_timeout{std::chrono::seconds(60)};
  // queryAsyncJobResult polling: starts at poll_initial, grows by half each time, capped.
  std::chrono::milliseconds poll_initial{std::chrono::milliseconds(200)};
  std::chrono::milliseconds poll_max{std::chrono::seconds(5)};
  // How long an asynchronous command may run; job_timeouts overrides it per command
  // (command names as sent, e.g. "deployVirtualMachine").
  std::chrono::milliseconds job_timeout{std::chrono::minutes(30)};
  std::map<std::string, std::chrono::milliseconds> job_timeouts;
  // Items per page for list calls; must not exceed the server's default.page.size.
  int page_size = 500;
  // For an https API URL: the CA certificates (PEM file) that sign the management
  // server's certificate; "" = the system's. The certificate is always verified.
  std::string ca_file;
  // Accept an http:// API URL (labs; a management server behind a local TLS proxy).
  bool allow_insecure_http = false;
  // How far ahead `expires` is set; CloudStack refuses more than 15 minutes when it
  // enforces timestamps.
  std::chrono::seconds signature_lifetime{std::chrono::minutes(5)};
};

// Throws UsageError (naming the URL without its query) unless `api_url` is https://, or
// http:// with `allow_insecure_http`. Every Client checks its URL so.
void check_api_url(const std::string& api_url, bool allow_insecure_http);

// Auto: GET for reads (list*, query*, get*), POST for every other command.
enum class Method { Auto, Get, Post };

// What Method::Auto sends `command` with.
Method method_for(const std::string& command);

// A field of an answer, which CloudStack sends as a string or a number depending on the
// command: as text ("" when absent or null), or as an integer (`fallback` when absent or
// not a number).
std::string json_text(const Json& j, const char* key);
int64_t json_integer(const Json& j, const char* key, int64_t fallback);
// The same for the other kinds of field. An answer is read with these only, never with
// Json::value() or operator[] on what CloudStack sent: a field of an unexpected type (a
// boolean sent as "true", a list that is an object) must never throw nlohmann's errors.
bool json_bool(const Json& j, const char* key, bool fallback);  // true/false or "true"/"false"
const Json& json_object(const Json& j, const char* key);        // {} unless an object
const Json& json_array(const Json& j, const char* key);         // [] unless an array
Json json_first(const Json& j, const char* key);                 // json_array's first item; null if none

class ApiError : public Error {
 public:
  ApiError(std::string command, int errorcode, std::string errortext, std::string jobid = "");
  const std::string& command() const { return command_; }
  int errorcode() const { return errorcode_; }  // CloudStack's (401, 431, 530, ...)
  const std::string& errortext() const { return errortext_; }
  const std::string& jobid() const { return jobid_; }  // "" unless an async job failed

 private:
  std::string command_;
  int errorcode_;
  std::string errortext_;
  std::string jobid_;
};

// An asynchronous job whose end the client could not learn: it was still pending at the
// command's deadline, or queryAsyncJobResult kept failing (server errors and transport
// failures are retried until the deadline; an answer such as 401 or 431, which asking
// again cannot change, ends the wait at once). The job may still complete in CloudStack:
// the caller must look at what the command would have made (by id or by name) before it
// retries or reports anything as gone. Not an ApiError: CloudStack did not refuse it.
class JobOutcomeUnknown : public Error {
 public:
  JobOutcomeUnknown(std::string command, std::string jobid, const std::string& why);
  const std::string& command() const { return command_; }
  const std::string& jobid() const { return jobid_; }

 private:
  std::string command_;
  std::string jobid_;
};

// How an answer becomes the "<command>response" object (what Client::call returns), apart
// from HTTP so that it can be checked on its own: `text` is the body of an HTTP `status`
// answer from `where` (the API URL without its query). Throws ApiError for an error
// CloudStack reports, mk::Error for an answer that is not JSON or has no such object.
Json response_object(const std::string& command, long status, const std::string& text, const std::string& where);

// What one queryAsyncJobResult answer says about job `jobid` of `command`: its jobresult
// once it succeeded, nullopt while it runs (or when jobstatus is unreadable); throws
// ApiError once it failed.
std::optional<Json> job_outcome(const std::string& command, const std::string& jobid, const Json& job);

class Client {
 public:
  explicit Client(Endpoint endpoint, ClientOptions options = {});

  // One signed request. Returns the "<command>response" object.
  Json call(const std::string& command, Params params = {}, Method method = Method::Auto) const;

  // An asynchronous command: sends it, then awaits its job; returns the job's jobresult.
  Json call_async(const std::string& command, Params params = {},
                  Method method = Method::Auto) const;

  // Awaits a job started by `command` (for errors and the timeout) and returns jobresult.
  // Throws ApiError when the job failed, JobOutcomeUnknown when its end is unknown.
  Json wait_for_job(const std::string& command, const std::string& jobid) const;

  // A list command, every page of it: the items under `item_key` ("volume",
  // "virtualmachine", ...). `params` must not contain page or pagesize.
  std::vector<Json> list(const std::string& command, const std::string& item_key,
                         Params params = {}) const;

  const ClientOptions& options() const { return options_; }

 private:
  std::chrono::milliseconds job_timeout_for(const std::string& command) const;
  Json poll_job(const std::string& command, const std::string& jobid) const;

  Endpoint endpoint_;
  ClientOptions options_;
};

}  // namespace mk::cloudstack

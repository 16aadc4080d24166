#include "cloudstack/client.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "common/log.h"
#include "common/text.h"

namespace mk::cloudstack {
namespace {

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t append_body(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

struct HttpReply {
  long status = 0;
  std::string body;
};

// The URL without its query, for messages: the query holds the API key and signature.
std::string url_for_messages(const std::string& url) { return url.substr(0, url.find('?')); }

HttpReply http_send(const std::string& url, const std::string& query, Method method,
                    const ClientOptions& options, const std::string& command) {
  init_curl_once();
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) throw Error(fmt::format("CloudStack {}: cannot create an HTTP handle", command));
  HttpReply reply;
  std::string full = url;
  if (method == Method::Get) {
    full += (url.find('?') == std::string::npos ? "?" : "&") + query;
  } else {
    curl_easy_setopt(curl.get(), CURLOPT_POST, 1L);
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, query.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(query.size()));
  }
  char curl_error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl.get(), CURLOPT_URL, full.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(options.http_timeout.count()));
  if (!options.ca_file.empty()) curl_easy_setopt(curl.get(), CURLOPT_CAINFO, options.ca_file.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, curl_error);
  CURLcode rc = curl_easy_perform(curl.get());
  if (rc != CURLE_OK) {
    throw Error(fmt::format("CloudStack {}: request to {} failed: {}; check the API URL and "
                            "that the management server is reachable",
                            command, url_for_messages(url),
                            curl_error[0] ? curl_error : curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &reply.status);
  return reply;
}

int json_int(const Json& j, const char* key, int fallback) {
  return static_cast<int>(json_integer(j, key, fallback));
}

}  // namespace

int64_t json_integer(const Json& j, const char* key, int64_t fallback) {
  if (!j.is_object() || !j.contains(key)) return fallback;
  const auto& v = j.at(key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_string()) {
    try {
      return std::stoll(v.get<std::string>());
    } catch (const std::exception&) {
    }
  }
  return fallback;
}

bool json_bool(const Json& j, const char* key, bool fallback) {
  if (!j.is_object() || !j.contains(key)) return fallback;
  const auto& v = j.at(key);
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_string()) {
    std::string s = mk::to_lower(v.get<std::string>());
    if (s == "true") return true;
    if (s == "false") return false;
  }
  return fallback;
}

const Json& json_object(const Json& j, const char* key) {
  static const Json empty = Json::object();
  if (!j.is_object() || !j.contains(key) || !j.at(key).is_object()) return empty;
  return j.at(key);
}

const Json& json_array(const Json& j, const char* key) {
  static const Json empty = Json::array();
  if (!j.is_object() || !j.contains(key) || !j.at(key).is_array()) return empty;
  return j.at(key);
}

Json json_first(const Json& j, const char* key) {
  const Json& items = json_array(j, key);
  return items.empty() ? Json() : items.front();
}

std::string json_text(const Json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return "";
  const auto& v = j.at(key);
  return v.is_string() ? v.get<std::string>() : v.dump();
}

ApiError::ApiError(std::string command, int errorcode, std::string errortext, std::string jobid)
    : Error(fmt::format("CloudStack {} failed{}: errorcode {}: {}", command,
                        jobid.empty() ? "" : fmt::format(" (job {})", jobid), errorcode,
                        errortext)),
      command_(std::move(command)),
      errorcode_(errorcode),
      errortext_(std::move(errortext)),
      jobid_(std::move(jobid)) {}

Method method_for(const std::string& command) {
  for (const char* read : {"list", "query", "get"}) {
    if (command.starts_with(read)) return Method::Get;
  }
  return Method::Post;
}

Client::Client(Endpoint endpoint, ClientOptions options)
    : endpoint_(std::move(endpoint)), options_(std::move(options)) {
  if (endpoint_.api_url.empty() || endpoint_.api_key.empty() || endpoint_.secret_key.empty()) {
    throw UsageError("CloudStack client: the API URL, API key and secret key are all required");
  }
  check_api_url(endpoint_.api_url, options_.allow_insecure_http);
  if (options_.page_size < 1) throw UsageError("CloudStack client: page_size must be >= 1");
}

void check_api_url(const std::string& api_url, bool allow_insecure_http) {
  std::string scheme = mk::to_lower(api_url.substr(0, api_url.find("://") + 3));
  if (scheme == "http://" && !allow_insecure_http) {
    throw UsageError(fmt::format("CloudStack API URL {}: http:// would send the API key and every signed request "
                                 "in clear; use https:// (or start the OMA with --cloudstack-allow-http for a lab)",
                                 url_for_messages(api_url)));
  }
  if (scheme != "http://" && scheme != "https://") {
    throw UsageError(fmt::format("CloudStack API URL {}: expected https://HOST[:PORT]/client/api",
                                 url_for_messages(api_url)));
  }
}

// "yyyy-MM-dd'T'HH:mm:ssZ" in UTC, `ahead` from now: CloudStack's expires format.
static std::string expires_in(std::chrono::seconds ahead) {
  std::time_t t = std::time(nullptr) + ahead.count();
  std::tm tm{};
  gmtime_r(&t, &tm);
  char out[32];
  std::strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S+0000", &tm);
  return out;
}

JobOutcomeUnknown::JobOutcomeUnknown(std::string command, std::string jobid, const std::string& why)
    : Error(fmt::format("CloudStack {}: the outcome of job {} is unknown: {}; it may still complete: check it in "
                        "CloudStack before retrying",
                        command, jobid, why)),
      command_(std::move(command)),
      jobid_(std::move(jobid)) {}

Json response_object(const std::string& command, long status, const std::string& text, const std::string& where) {
  Json body;
  try {
    body = Json::parse(text);
  } catch (const Json::exception&) {  // parse_error, or out_of_range for a number like 1e999
    if (status >= 500) {  // a proxy's or servlet container's error page: not the API's answer
      throw Error(fmt::format("CloudStack {}: HTTP {} from {} ({} bytes, not an API answer): the management "
                              "server or a proxy in front of it is failing or restarting; the call may or may "
                              "not have run; try again once CloudStack answers",
                              command, status, where, text.size()));
    }
    throw Error(fmt::format("CloudStack {}: HTTP {} from {} is not JSON ({} bytes); check that "
                            "the API URL ends in /client/api",
                            command, status, where, text.size()));
  }
  std::string key = mk::to_lower(command) + "response";
  if (body.is_object() && !body.contains(key) && body.size() == 1 &&
      body.begin()->is_object() && body.begin().key().ends_with("response")) {
    // A few commands answer under another name ("errorresponse" from a filter, or a
    // response object named after the entity): take the one envelope there is.
    key = body.begin().key();
  }
  if (!body.is_object() || !body.contains(key) || !body[key].is_object()) {
    throw Error(fmt::format("CloudStack {}: HTTP {}: the answer has no \"{}\" object", command,
                            status, key));
  }
  Json inner = std::move(body[key]);
  if (status != 200 || inner.contains("errorcode")) {
    throw ApiError(command, json_int(inner, "errorcode", static_cast<int>(status)),
                   json_text(inner, "errortext"));
  }
  return inner;
}

std::optional<Json> job_outcome(const std::string& command, const std::string& jobid, const Json& job) {
  int status = json_int(job, "jobstatus", -1);
  if (status == 1) return job.contains("jobresult") ? job["jobresult"] : Json::object();
  if (status == 2) {
    const Json result = job.value("jobresult", Json::object());
    throw ApiError(command, json_int(result, "errorcode", 530), json_text(result, "errortext"),
                   jobid);
  }
  return std::nullopt;
}

Json Client::call(const std::string& command, Params params, Method method) const {
  params["command"] = command;
  params["response"] = "json";
  params["apiKey"] = endpoint_.api_key;
  params["signatureversion"] = "3";
  params["expires"] = expires_in(options_.signature_lifetime);
  params.erase("signature");
  if (method == Method::Auto) method = method_for(command);
  std::string query = encode_query(params) + "&signature=" +
                      url_encode(sign(params, endpoint_.secret_key));
  log::debug("CloudStack {}", command);
  HttpReply reply = http_send(endpoint_.api_url, query, method, options_, command);

  return response_object(command, reply.status, reply.body, url_for_messages(endpoint_.api_url));
}

Json Client::call_async(const std::string& command, Params params, Method method) const {
  Json started = call(command, std::move(params), method);
  std::string jobid = json_text(started, "jobid");
  if (jobid.empty()) {
    throw Error(fmt::format("CloudStack {}: expected an asynchronous job but the answer has "
                            "no jobid",
                            command));
  }
  return wait_for_job(command, jobid);
}

std::chrono::milliseconds Client::job_timeout_for(const std::string& command) const {
  auto it = options_.job_timeouts.find(command);
  return it == options_.job_timeouts.end() ? options_.job_timeout : it->second;
}

Json Client::wait_for_job(const std::string& command, const std::string& jobid) const {
  return poll_job(command, jobid);
}

Json Client::poll_job(const std::string& command, const std::string& jobid) const {
  using clock = std::chrono::steady_clock;
  const auto timeout = job_timeout_for(command);
  const auto deadline = clock::now() + timeout;
  auto delay = options_.poll_initial;
  for (;;) {
    Json job;
    try {
      job = call("queryAsyncJobResult", {{"jobid", jobid}});
    } catch (const ApiError& e) {
      // The query failed, not the job. A server error (5xx, 530) may pass; a refusal
      // (401, 431, 432) will not, and waiting longer cannot tell how the job ended.
      if (e.errorcode() < 500 || clock::now() >= deadline) {
        throw JobOutcomeUnknown(command, jobid, fmt::format("queryAsyncJobResult failed: {}", e.what()));
      }
      log::warn("CloudStack {} job {}: polling failed, retrying: {}", command, jobid, e.what());
      job = Json::object();
    } catch (const Error& e) {
      // A network blip must not fail a long job: retry until the deadline.
      if (clock::now() >= deadline) {
        throw JobOutcomeUnknown(command, jobid, fmt::format("queryAsyncJobResult failed: {}", e.what()));
      }
      log::warn("CloudStack {} job {}: polling failed, retrying: {}", command, jobid, e.what());
      job = Json::object();
    }
    if (std::optional<Json> result = job_outcome(command, jobid, job)) return *result;
    if (clock::now() >= deadline) {
      throw JobOutcomeUnknown(command, jobid,
                              fmt::format("still running after {:.1f} s",
                                          std::chrono::duration<double>(timeout).count()));
    }
    auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    std::this_thread::sleep_for(std::min(delay, std::max(remaining, std::chrono::milliseconds(1))));
    delay = std::min(options_.poll_max, delay + delay / 2);
  }
}

std::vector<Json> Client::list(const std::string& command, const std::string& item_key,
                               Params params) const {
  std::vector<Json> items;
  std::set<std::string> seen;  // items can shift between pages while things change
  for (int page = 1;; ++page) {
    params["page"] = std::to_string(page);
    params["pagesize"] = std::to_string(options_.page_size);
    Json reply = call(command, params);
    size_t got = 0;
    size_t added = 0;
    if (reply.contains(item_key) && reply[item_key].is_array()) {
      for (auto& item : reply[item_key]) {
        ++got;
        std::string id = json_text(item, "id");
        if (!id.empty() && !seen.insert(id).second) continue;
        items.push_back(std::move(item));
        ++added;
      }
    }
    int count = json_int(reply, "count", -1);
    if (got < static_cast<size_t>(options_.page_size)) break;
    // A server that ignores "page" would send the same items for ever.
    if (added == 0) break;
    if (count >= 0 && items.size() >= static_cast<size_t>(count)) break;
  }
  return items;
}

}  // namespace mk::cloudstack

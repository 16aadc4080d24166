// Test helpers for the whole OMA service: an in-process Oma on free loopback ports in a
// private data directory (the real `oma` binary: oma_process.h), an HTTP
// client that speaks its API, and bounded waits for job states.
//
// Each object owns what it starts. Not thread-safe (the HTTP client is; one per thread
// is cheapest).
#pragma once

#include <httplib.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/subprocess.h"
#include "oma/app.h"
#include "support/temp_dir.h"

namespace mk::oma::test {

struct HttpReply {
  int status = 0;
  nlohmann::json body;  // null if the body is not JSON
  std::string raw;
};

class ApiClient {
 public:
  ApiClient(int port, std::string token) : client_("127.0.0.1", port), token_(std::move(token)) {
    client_.set_read_timeout(std::chrono::seconds(30));
  }
  HttpReply get(const std::string& path) { return call("GET", path, ""); }
  HttpReply post(const std::string& path, const std::string& body) { return call("POST", path, body); }
  HttpReply put(const std::string& path, const std::string& body) { return call("PUT", path, body); }
  HttpReply del(const std::string& path) { return call("DELETE", path, ""); }
  HttpReply call(const std::string& method, const std::string& path, const std::string& body);
  void set_token(std::string t) { token_ = std::move(t); }

 private:
  httplib::Client client_;
  std::string token_;
};

// Default configuration for tests: loopback, free ports, fast polling.
OmaConfig test_config(const std::string& data_dir, const std::string& vma_url);

std::string read_admin_token(const std::string& data_dir);

// Polls GET /api/v1/jobs/{id} until `done(job)` or the (generous) deadline; returns the
// last job seen. Never asserts on time: the deadline only stops a hung test.
nlohmann::json wait_for_job(ApiClient& api, const std::string& job_id,
                            const std::function<bool(const nlohmann::json&)>& done,
                            std::chrono::seconds deadline = std::chrono::seconds(90));
inline bool job_ended(const nlohmann::json& j) {
  std::string s = j.value("status", "");
  return s == "completed" || s == "failed" || s == "cancelled";
}

// "4210a4c2-6b57-4d4b-9d8e-0c1f2a3bNNNN"
std::string test_vm_uuid(int i);
// A POST /api/v1/vms body for a VM with `disks` disks of `capacity` bytes each.
nlohmann::json vm_body(const std::string& vm_id, int disks, int64_t capacity);

}  // namespace mk::oma::test

#include "oma_service.h"

#include <fmt/format.h>

#include <fstream>
#include <thread>

#include "common/error.h"

namespace mk::oma::test {

using nlohmann::json;

HttpReply ApiClient::call(const std::string& method, const std::string& path, const std::string& body) {
  httplib::Headers h;
  if (!token_.empty()) h.emplace("Authorization", "Bearer " + token_);
  httplib::Result r = method == "GET"    ? client_.Get(path.c_str(), h)
                      : method == "POST" ? client_.Post(path.c_str(), h, body, "application/json")
                      : method == "PUT"  ? client_.Put(path.c_str(), h, body, "application/json")
                                         : client_.Delete(path.c_str(), h);
  if (!r) throw Error(fmt::format("{} {}: {}", method, path, httplib::to_string(r.error())));
  HttpReply out;
  out.status = r->status;
  out.raw = r->body;
  out.body = json::parse(r->body, nullptr, false);
  if (out.body.is_discarded()) out.body = nullptr;
  return out;
}

OmaConfig test_config(const std::string& data_dir, const std::string& vma_url) {
  OmaConfig c;
  c.data_dir = data_dir;
  c.api_listen = "127.0.0.1";
  c.api_port = 0;
  c.nbd_listen = "127.0.0.1";
  c.nbd_port = 0;
  c.vma_url = vma_url;
  c.poll_interval_ms = 50;
  c.vma_timeout_s = 30;
  c.strict_api_replies = true;
  return c;
}

std::string read_admin_token(const std::string& data_dir) {
  std::ifstream in(data_dir + "/admin.token");
  std::string t;
  std::getline(in, t);
  if (t.empty()) throw Error("no admin token in " + data_dir);
  return t;
}

json wait_for_job(ApiClient& api, const std::string& job_id, const std::function<bool(const json&)>& done,
                  std::chrono::seconds deadline) {
  auto end = std::chrono::steady_clock::now() + deadline;
  json last;
  for (;;) {
    auto r = api.get("/api/v1/jobs/" + job_id);
    if (r.status == 200) {
      last = r.body;
      if (done(last)) return last;
    }
    if (std::chrono::steady_clock::now() > end) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string test_vm_uuid(int i) { return fmt::format("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b{:04x}", i); }

json vm_body(const std::string& vm_id, int disks, int64_t capacity) {
  json d = json::array();
  for (int i = 0; i < disks; ++i) {
    d.push_back({{"key", std::to_string(2000 + i)}, {"unit", i}, {"label", fmt::format("Hard disk {}", i + 1)},
                 {"capacity_bytes", capacity}});
  }
  return {{"vm_id", vm_id}, {"name", "vm-" + vm_id.substr(32)}, {"vcenter", "vcenter.lab"}, {"datacenter", "DC1"},
          {"cpus", 2},      {"memory_mb", 2048},                {"guest_os", "debian12_64Guest"},
          {"power_state", "poweredOn"}, {"disks", d}};
}

}  // namespace mk::oma::test

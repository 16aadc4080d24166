#include "oma/api/api_server.h"

#include <fmt/format.h>

#include <regex>

#include "common/log.h"
#include "oma/api/views.h"
#include "oma/errors.h"
#include "oma/names.h"
#include "oma/pairing/authorized_keys.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;
using Type = Field::Type;

// --- Request schemas ---------------------------------------------------------------

void uuid_check(const std::string& v, const std::string& path) {
  if (!is_uuid(v)) throw FieldError(path, "must be a lowercase UUID like 4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d");
}
void name_check(const std::string& v, const std::string& path) {
  try {
    check_display_name(v, path);
  } catch (const UsageError& e) {
    throw FieldError(path, std::string(e.what()).substr(path.size() + 2));
  }
}
void disk_key_check(const std::string& v, const std::string& path) {
  if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos)
    throw FieldError(path, "must be a VMware disk key (1 to 9 digits)");
}

const Schema kDiskSchema{{
    {.name = "key", .description = "VMware device key", .max_length = 9, .check = disk_key_check},
    {.name = "unit", .type = Type::Integer, .description = "unit number (the N of diskN)", .min = 0, .max = 255},
    {.name = "label", .required = false, .check = name_check},
    {.name = "capacity_bytes", .type = Type::Integer, .min = 512, .max = int64_t{64} << 40},
}};

void mac_check(const std::string& v, const std::string& path) {
  if (!is_mac_address(v)) throw FieldError(path, "must be a MAC address like 00:50:56:aa:bb:cc");
}

const Schema kNicSchema{{
    {.name = "key", .required = false, .description = "VMware device key", .max_length = 9, .check = disk_key_check},
    {.name = "mac", .max_length = 17, .check = mac_check},
    {.name = "network", .description = "VMware network (port group) name", .check = name_check},
}};

const Schema kAddVmSchema{{
    {.name = "vm_id", .description = "VMware instance UUID", .max_length = 36, .check = uuid_check},
    {.name = "name", .check = name_check},
    {.name = "vcenter", .check = name_check},
    {.name = "datacenter", .check = name_check},
    {.name = "cpus", .type = Type::Integer, .min = 1, .max = 1024},
    {.name = "memory_mb", .type = Type::Integer, .min = 1, .max = int64_t{64} << 20},
    {.name = "guest_os", .required = false, .check = name_check},
    {.name = "power_state", .required = false, .one_of = {"poweredOn", "poweredOff", "suspended"}},
    {.name = "disks", .type = Type::Array, .max_length = 64, .items = &kDiskSchema},
    {.name = "nics", .type = Type::Array, .required = false, .max_length = 32, .items = &kNicSchema},
    {.name = "vma_id", .required = false, .description = "the VMA that discovered the VM (default: the default VMA)",
     .max_length = 36, .check = uuid_check},
}};

const Schema kBundleSchema{{
    {.name = "expires_in_seconds", .type = Type::Integer, .required = false,
     .description = "how long the pairing code stays valid (default 24 hours)", .min = 1, .max = 30 * 86400},
}};

void ssh_key_check(const std::string& v, const std::string& path) {
  try {
    normalize_vma_public_key(v);
  } catch (const UsageError& e) {
    throw FieldError(path, e.what());
  }
}

const Schema kEnrollSchema{{
    {.name = "name", .description = "the VMA's name (site)", .check = name_check},
    {.name = "vcenter", .description = "the vCenter it serves", .check = name_check},
    {.name = "ssh_public_key", .description = "the VMA's ssh-ed25519 public key", .max_length = 512,
     .check = ssh_key_check},
}};

const Schema kStartJobSchema{{
    {.name = "vm_id", .max_length = 36, .check = uuid_check},
    {.name = "kind", .one_of = {enum_name(JobKind::Full), enum_name(JobKind::Incremental)}},
}};

const Schema kSettingSchema{{
    {.name = "value", .max_length = 4096},
}};

const Schema kTokenSchema{{
    {.name = "name", .max_length = 64, .check = name_check},
    {.name = "role", .one_of = enum_names<TokenRole>()},
}};

// Settings the OMA knows; secrets are stored encrypted and never returned.
const std::map<std::string, bool> kSettings = {
    {"cloudstack.url", false},      {"cloudstack.api_key", true},  {"cloudstack.secret_key", true},
    {"cloudstack.zone_id", false},  {"vcenter.host", false},       {"vcenter.username", false},
    {"vcenter.password", true},     {"vma.url", false},
};

// --- JSON views ----------------------------------------------------------------------

json opt_json(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }
json opt_json(const std::optional<int64_t>& n) { return n ? json(*n) : json(nullptr); }

json vm_json(const VmRecord& v) {
  return {{"vm_id", v.vm_id},         {"name", v.name},         {"vcenter", v.vcenter},
          {"datacenter", v.datacenter}, {"cpus", v.cpus},         {"memory_mb", v.memory_mb},
          {"guest_os", v.guest_os},   {"power_state", v.power_state}, {"status", v.status},
          {"current_job_id", opt_json(v.current_job_id)}, {"created_at", v.created_at}};
}

json disk_json(const DiskRecord& d) {
  return {{"key", d.disk_key},          {"unit", d.unit},           {"label", d.label},
          {"capacity_bytes", d.capacity_bytes}, {"volume_id", opt_json(d.volume_id)},
          {"export", opt_json(d.export_name)}, {"change_id", opt_json(d.change_id)}};
}

json job_disk_json(const JobDiskRecord& d) {
  return {{"disk_key", d.disk_key}, {"unit", d.unit},           {"export", d.export_name},
          {"status", d.status},     {"phase", d.phase},         {"bytes_done", d.bytes_done},
          {"bytes_total", d.bytes_total}, {"throughput_bps", d.throughput_bps}, {"eta_seconds", d.eta_seconds},
          {"change_id_base", opt_json(d.change_id_base)}, {"change_id", opt_json(d.change_id_new)},
          {"committed", d.committed}, {"error", opt_json(d.error)}};
}

json job_json(const JobRecord& j) {
  double pct = j.bytes_total > 0 ? 100.0 * static_cast<double>(j.bytes_done) / static_cast<double>(j.bytes_total) : 0;
  return {{"job_id", j.job_id},       {"vm_id", j.vm_id},         {"kind", j.kind},
          {"status", j.status},       {"phase", j.phase},         {"bytes_done", j.bytes_done},
          {"bytes_total", j.bytes_total}, {"percent", pct},       {"throughput_bps", j.throughput_bps},
          {"eta_seconds", j.eta_seconds}, {"error", opt_json(j.error)}, {"cancel_requested", j.cancel_requested},
          {"created_at", j.created_at}, {"updated_at", j.updated_at}, {"finished_at", opt_json(j.finished_at)}};
}

std::string param(const httplib::Request& req, size_t i) { return i < req.matches.size() ? req.matches[i].str() : ""; }

std::string uuid_param(const httplib::Request& req, size_t i, const std::string& name) {
  std::string v = param(req, i);
  if (!is_uuid(v)) throw FieldError(name, "must be a lowercase UUID in the path");
  return v;
}

Reply error_reply(int status, const std::string& message, const std::string& field = "") {
  json b = {{"error", message}};
  if (!field.empty()) b["field"] = field;
  return {status, b, ""};
}

}  // namespace

ApiServer::ApiServer(Repositories& repos, JobManager& jobs, ExportBackend& exports, SecretBox& secrets, ApiConfig config,
                     std::vector<Route> extra_routes, PairingService* pairing)
    : repos_(repos), jobs_(jobs), exports_(exports), secrets_(secrets), config_(std::move(config)),
      pairing_(pairing), routes_(std::move(extra_routes)) {
  declare_routes();
  if (pairing_) declare_vma_routes();
  prepare(server_);
  // cpp-httplib (as packaged) listens with a backlog of 5: a burst of pollers would
  // see dropped SYNs and one-second retransmits. Remember the socket to widen it.
  server_.set_socket_options([this](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd_ = sock;
  });
  for (const auto& r : routes_) install(r, server_);
}

void ApiServer::prepare(httplib::Server& server) {
  server.new_task_queue = [n = config_.threads] { return new httplib::ThreadPool(n); };
  server.set_payload_max_length(config_.max_body_bytes);
  server.set_read_timeout(std::chrono::seconds(10));
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string msg = res.status == 404   ? "no such route: see GET /api/v1/openapi.json"
                      : res.status == 413 ? "request body too large"
                                          : fmt::format("HTTP {}", res.status);
    res.set_content(json{{"error", msg}}.dump(), "application/json");
  });
}

void ApiServer::add_routes(std::vector<Route> routes) {
  for (auto& r : routes) {
    install(r, server_);
    routes_.push_back(std::move(r));
  }
}

void ApiServer::serve_on(httplib::Server& server) {
  prepare(server);
  for (const auto& r : routes_) install(r, server);
}

ApiServer::~ApiServer() { stop(); }

json ApiServer::job_progress_json(const JobRecord& job, const std::vector<JobDiskRecord>& disks) {
  json out = job_json(job);
  out["disks"] = json::array();
  for (const auto& d : disks) out["disks"].push_back(job_disk_json(d));
  return out;
}

void ApiServer::start() {
  if (config_.port == 0) {
    port_ = server_.bind_to_any_port(config_.listen_address);
  } else {
    port_ = server_.bind_to_port(config_.listen_address, config_.port) ? config_.port : -1;
  }
  if (port_ <= 0) {
    throw Error(fmt::format("cannot listen on {}:{} for the API (port in use? another OMA running?)",
                            config_.listen_address, config_.port));
  }
  if (listen_fd_ >= 0) ::listen(listen_fd_, 1024);  // a second listen() only changes the backlog
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  // stop() only works on a running server: wait until the accept loop has started.
  while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  log::info("OMA API listening on {}:{}", config_.listen_address, port_);
}

void ApiServer::stop() {
  server_.stop();
  if (thread_.joinable()) thread_.join();
}

void ApiServer::install(const Route& route, httplib::Server& server) {
  std::string pattern = std::regex_replace(route.path, std::regex(R"(\{[a-z_]+\})"), "([^/]+)");
  // Each listener keeps its own copy: the table may grow (add_routes) after install.
  auto shared = std::make_shared<const Route>(route);
  auto handler = [this, shared](const httplib::Request& req, httplib::Response& res) {
    const Route& r = *shared;
    if (r.stream) {
      Caller caller;
      if (auto denied = authorize(r, req, caller)) {
        res.status = denied->status;
        res.set_content(denied->body.dump(), "application/json");
        return;
      }
      try {
        r.stream(req, res, caller);
      } catch (const std::exception& e) {
        res.status = 503;
        res.set_content(json{{"error", e.what()}}.dump(), "application/json");
      }
      return;
    }
    Reply reply = dispatch(r, req);
    res.status = reply.status;
    if (!reply.text.empty()) res.set_content(reply.text, "text/plain; version=0.0.4");
    else res.set_content(reply.body.dump(), "application/json");
  };
  if (route.method == "GET") server.Get(pattern, handler);
  else if (route.method == "POST") server.Post(pattern, handler);
  else if (route.method == "PUT") server.Put(pattern, handler);
  else if (route.method == "DELETE") server.Delete(pattern, handler);
}

Caller ApiServer::authenticate(const httplib::Request& req, const std::string& role) {
  std::string h = req.get_header_value("Authorization");
  if (h.rfind("Bearer ", 0) != 0 || h.size() <= 7) throw Error("401");
  auto t = repos_.config.find_live_token(sha256_hex(h.substr(7)));
  if (!t) throw Error("401");
  if (role == "admin" && t->role != TokenRole::Admin) throw Error("403");
  return {t->token_id, enum_name(t->role)};
}

std::optional<Reply> ApiServer::authorize(const Route& r, const httplib::Request& req, Caller& caller) {
  if (r.role == "pairing") {
    if (req.get_header_value("Authorization").rfind("Pairing ", 0) != 0)
      return error_reply(401, "missing pairing code (Authorization: Pairing CODE, from the OMA's pairing bundle)");
    return std::nullopt;
  }
  if (r.role.empty()) return std::nullopt;
  try {
    caller = authenticate(req, r.role);
  } catch (const Error& e) {
    if (std::string(e.what()) == "403") return error_reply(403, "this route needs an admin token");
    if (std::string(e.what()) == "401")
      return error_reply(401, "missing, unknown or revoked bearer token (Authorization: Bearer TOKEN)");
    return error_reply(500, e.what());
  }
  return std::nullopt;
}

Reply ApiServer::dispatch(const Route& r, const httplib::Request& req) {
  Caller caller;
  if (auto denied = authorize(r, req, caller)) return *denied;
  try {
    json body;
    if (r.body && r.body_optional && req.body.empty()) {
      body = json::object();
    } else if (r.body) {
      body = schema::parse_object(req.body);
      schema::validate(body, *r.body);
    } else if (!req.body.empty() && req.method != "GET") {
      throw FieldError("body", "this route takes no body");
    }
    return r.handler(req, body, caller);
  } catch (const FieldError& e) {
    return error_reply(400, e.what(), e.field());
  } catch (const UsageError& e) {
    return error_reply(400, e.what());
  } catch (const NotFound& e) {
    return error_reply(404, e.what());
  } catch (const Conflict& e) {
    return error_reply(409, e.what());
  } catch (const std::exception& e) {
    log::error("{} {}: {}", req.method, r.path, e.what());
    return error_reply(500, e.what());
  }
}

void ApiServer::declare_routes() {
  auto add = [this](Route r) { routes_.push_back(std::move(r)); };

  add({"GET", "/health", "Liveness: database reachable, export server running (no token needed)", "", nullptr,
       [this](auto&, auto&, auto&) -> Reply {
         repos_.storage.count_exports();  // touches the database
         json out = {{"status", "ok"}, {"database", repos_.database.engine()},
                     {"export_server", exports_.name()}, {"export_server_pid", exports_.server_pid()},
                     {"nbd_port", exports_.port()}};
         if (pairing_) {
           auto [up, down] = approved_tunnels();
           out["vma_tunnels"] = {{"up", up}, {"down", down}};  // approved VMAs only
         }
         return {200, out, ""};
       }});
  add({"GET", "/metrics", "Prometheus metrics: jobs by state, bytes moved, throughput, exports, poller errors",
       "operator", nullptr, [this](auto&, auto&, auto&) -> Reply { return {200, nullptr, metrics()}; }});
  add({"GET", "/api/v1/openapi.json", "This API's OpenAPI 3 description", "operator", nullptr,
       [this](auto&, auto&, auto&) -> Reply { return {200, openapi(), ""}; }});

  add({"GET", "/api/v1/vms",
       "List VMs with their disks, last pass, change-ID age, cutover readiness, predicted downtime and schedule",
       "operator", nullptr, [this](auto&, auto&, auto&) -> Reply {
         // Three queries for the whole list, not three per VM.
         std::map<std::string, std::vector<JobRecord>> passes;
         for (auto& j : repos_.jobs.ended_passes()) passes[j.vm_id].push_back(std::move(j));
         std::map<std::string, std::vector<ChangeIdCommit>> commits;
         for (auto& c : repos_.jobs.latest_change_id_commits()) commits[c.vm_id].push_back(std::move(c));
         std::map<std::string, ScheduleRecord> schedules;
         for (auto& sc : repos_.schedules.list_schedules()) schedules[sc.vm_id] = std::move(sc);
         int64_t now = now_ms();
         json out = json::array();
         for (const auto& v : repos_.vms.list_vms()) {
           json j = vm_json(v);
           auto disks = repos_.vms.list_disks(v.vm_id);
           j["disks"] = json::array();
           for (const auto& d : disks) j["disks"].push_back(disk_json(d));
           add_pass_stats(j, pass_stats(v, disks, passes[v.vm_id], commits[v.vm_id], now));
           auto sc = schedules.find(v.vm_id);
           j["schedule"] = sc == schedules.end() ? json(nullptr) : schedule_json(sc->second);
           out.push_back(std::move(j));
         }
         return {200, {{"vms", out}}, ""};
       }});
  add({"POST", "/api/v1/vms", "Add a VM from discovery, with its disks", "operator", &kAddVmSchema,
       [this](auto&, const json& b, auto&) -> Reply {
         VmRecord v;
         v.vm_id = b["vm_id"];
         v.name = b["name"];
         v.vcenter = b["vcenter"];
         v.datacenter = b["datacenter"];
         v.cpus = b["cpus"];
         v.memory_mb = b["memory_mb"];
         v.guest_os = b.value("guest_os", "other");
         v.power_state = b.value("power_state", "poweredOn");
         std::vector<DiskRecord> disks;
         for (const auto& d : b["disks"]) {
           DiskRecord r;
           r.vm_id = v.vm_id;
           r.disk_key = d["key"];
           r.unit = d["unit"];
           r.label = d.value("label", "Hard disk");
           r.capacity_bytes = d["capacity_bytes"];
           if (r.capacity_bytes % 512) throw FieldError("disks.capacity_bytes", "must be a multiple of 512");
           disks.push_back(r);
         }
         if (disks.empty()) throw FieldError("disks", "a VM needs at least one disk");
         std::optional<std::string> vma_id;
         if (b.contains("vma_id")) {
           vma_id = b["vma_id"].get<std::string>();
           if (!repos_.vmas.find_vma(*vma_id)) throw FieldError("vma_id", "is not a VMA paired with this OMA");
         }
         std::vector<NicRecord> nics;
         for (const auto& n : b.value("nics", json::array())) {
           std::string key = n.value("key", std::to_string(4000 + nics.size()));
           for (const auto& other : nics)
             if (other.nic_key == key) throw FieldError("nics.key", "two NICs share the key " + key);
           nics.push_back({v.vm_id, key, n["mac"], n["network"]});
         }
         repos_.vms.add_vm(v, disks);
         if (vma_id) repos_.vms.set_vm_vma(v.vm_id, vma_id);
         if (!nics.empty()) repos_.vms.set_vm_nics(v.vm_id, nics);
         json out = vm_json(repos_.vms.get_vm(v.vm_id));
         out["disks"] = json::array();
         for (const auto& d : repos_.vms.list_disks(v.vm_id)) out["disks"].push_back(disk_json(d));
         return {201, out, ""};
       }});
  add({"GET", "/api/v1/vms/{vm_id}", "Show a VM with its disks", "operator", nullptr,
       [this](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, 1, "vm_id");
         json out = vm_json(repos_.vms.get_vm(id));
         out["disks"] = json::array();
         for (const auto& d : repos_.vms.list_disks(id)) out["disks"].push_back(disk_json(d));
         out["nics"] = json::array();
         for (const auto& n : repos_.vms.list_nics(id))
           out["nics"].push_back({{"key", n.nic_key}, {"mac", n.mac}, {"network", n.network}});
         // What a cutover or a test failover built in CloudStack (the target VM's id).
         out["failovers"] = json::array();
         for (FailoverKind kind : {FailoverKind::Cutover, FailoverKind::TestFailover}) {
           if (auto f = repos_.vms.find_failover(id, kind)) {
             out["failovers"].push_back({{"kind", f->kind}, {"job_id", f->job_id},
                                         {"target_vm_id", f->target_vm_id}, {"created_at", f->created_at}});
           }
         }
         return {200, out, ""};
       }});
  add({"GET", "/api/v1/vms/{vm_id}/disks", "List a VM's disks with volume, export and committed change ID",
       "operator", nullptr, [this](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, 1, "vm_id");
         repos_.vms.get_vm(id);
         json out = json::array();
         for (const auto& d : repos_.vms.list_disks(id)) out.push_back(disk_json(d));
         return {200, {{"disks", out}}, ""};
       }});

  add({"POST", "/api/v1/jobs", "Start a full or incremental replication of a VM", "operator", &kStartJobSchema,
       [this](auto&, const json& b, auto&) -> Reply {
         std::string id = jobs_.start(b["vm_id"], b["kind"].get<JobKind>());
         return {201, job_json(repos_.jobs.get_job(id)), ""};
       }});
  add({"GET", "/api/v1/jobs", "List jobs (query: vm_id, status)", "operator", nullptr,
       [this](auto& req, auto&, auto&) -> Reply {
         std::string vm = req.get_param_value("vm_id");
         std::string status = req.get_param_value("status");
         if (!vm.empty() && !is_uuid(vm)) throw FieldError("vm_id", "must be a lowercase UUID");
         std::optional<JobStatus> wanted;
         if (!status.empty() && !(wanted = find_enum<JobStatus>(status))) throw FieldError("status", "is not a job status");
         json out = json::array();
         for (const auto& j : repos_.jobs.list_jobs(vm, wanted)) out.push_back(job_json(j));
         return {200, {{"jobs", out}}, ""};
       }});
  add({"GET", "/api/v1/jobs/{job_id}", "Show a job with its disks, steps and events", "operator", nullptr,
       [this](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, 1, "job_id");
         json out = job_json(repos_.jobs.get_job(id));
         out["disks"] = json::array();
         for (const auto& d : repos_.jobs.job_disks(id)) out["disks"].push_back(job_disk_json(d));
         out["steps"] = json::array();
         for (const auto& s : repos_.jobs.list_steps(id)) {
           out["steps"].push_back({{"seq", s.seq}, {"name", s.name}, {"status", s.status},
                                   {"message", opt_json(s.message)}, {"started_at", s.started_at},
                                   {"finished_at", opt_json(s.finished_at)}});
         }
         out["events"] = json::array();
         for (const auto& e : repos_.jobs.list_events(id)) {
           out["events"].push_back({{"seq", e.seq}, {"at", e.at}, {"level", e.level}, {"message", e.message}});
         }
         return {200, out, ""};
       }});
  add({"GET", "/api/v1/jobs/{job_id}/progress", "A job's progress: totals and per disk", "operator", nullptr,
       [this](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, 1, "job_id");
         json out = job_json(repos_.jobs.get_job(id));
         out["disks"] = json::array();
         for (const auto& d : repos_.jobs.job_disks(id)) out["disks"].push_back(job_disk_json(d));
         return {200, out, ""};
       }});
  add({"POST", "/api/v1/jobs/{job_id}/cancel", "Cancel an active job", "operator", nullptr,
       [this](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, 1, "job_id");
         jobs_.cancel(id);
         return {202, job_json(repos_.jobs.get_job(id)), ""};
       }});

  add({"GET", "/api/v1/exports", "List NBD exports (one per VM disk)", "operator", nullptr,
       [this](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& e : repos_.storage.list_exports()) {
           out.push_back({{"name", e.export_name}, {"volume_id", e.volume_id}, {"device_path", e.device_path},
                          {"size_bytes", e.size_bytes}, {"backend", e.backend}, {"created_at", e.created_at},
                          {"verified_at", opt_json(e.verified_at)}});
         }
         return {200, {{"exports", out}, {"server_pid", exports_.server_pid()}}, ""};
       }});
  add({"GET", "/api/v1/volumes", "List target volumes (one per VM disk)", "operator", nullptr,
       [this](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& v : repos_.storage.list_volumes()) {
           out.push_back({{"volume_id", v.volume_id}, {"vm_id", v.vm_id}, {"disk_key", v.disk_key},
                          {"backend", v.backend}, {"size_bytes", v.size_bytes}, {"device_path", v.device_path},
                          {"status", v.status}, {"created_at", v.created_at}});
         }
         return {200, {{"volumes", out}}, ""};
       }});

  add({"GET", "/api/v1/settings", "List settings (secret values are never returned)", "admin", nullptr,
       [this](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& s : repos_.config.list_settings())
           out.push_back({{"name", s.name}, {"secret", s.encrypted}, {"value", s.encrypted ? json(nullptr) : json(s.value)}});
         return {200, {{"settings", out}}, ""};
       }});
  add({"PUT", "/api/v1/settings/{name}", "Set a setting (secrets are encrypted at rest)", "admin", &kSettingSchema,
       [this](auto& req, const json& b, auto&) -> Reply {
         std::string name = param(req, 1);
         auto it = kSettings.find(name);
         if (it == kSettings.end()) throw FieldError("name", "is not a setting the OMA knows");
         std::string value = b["value"];
         repos_.config.put_setting(name, it->second ? secrets_.seal(value) : value, it->second);
         return {200, {{"name", name}, {"secret", it->second}}, ""};
       }});
  add({"GET", "/api/v1/tokens", "List API tokens (never the tokens themselves)", "admin", nullptr,
       [this](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& t : repos_.config.list_tokens()) {
           out.push_back({{"token_id", t.token_id}, {"name", t.name}, {"role", t.role}, {"created_at", t.created_at},
                          {"revoked_at", opt_json(t.revoked_at)}});
         }
         return {200, {{"tokens", out}}, ""};
       }});
  add({"POST", "/api/v1/tokens", "Create an API token; the token is shown once", "admin", &kTokenSchema,
       [this](auto&, const json& b, auto&) -> Reply {
         TokenRecord t{new_uuid(), b["name"], b["role"].get<TokenRole>(), now_ms(), std::nullopt};
         std::string token = new_token();
         repos_.config.insert_token(t, sha256_hex(token));
         return {201, {{"token_id", t.token_id}, {"name", t.name}, {"role", t.role}, {"token", token}}, ""};
       }});
  add({"DELETE", "/api/v1/tokens/{token_id}", "Revoke an API token", "admin", nullptr,
       [this](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, 1, "token_id");
         repos_.config.revoke_token(id);
         return {200, {{"token_id", id}, {"revoked", true}}, ""};
       }});
}

std::pair<int, int> ApiServer::approved_tunnels() {
  int up = 0, down = 0;
  for (const auto& v : repos_.vmas.list_vmas()) {
    if (v.state != VmaState::Approved) continue;
    (pairing_->tunnel_state(v) == "up" ? up : down)++;
  }
  return {up, down};
}

void ApiServer::declare_vma_routes() {
  auto add = [this](Route r) { routes_.push_back(std::move(r)); };
  add({"POST", "/api/v1/vmas/pairing-bundles",
       "Issue a one-time VMA pairing bundle (host key, NBD PSK, VMA API token, pairing code); shown once",
       "admin", &kBundleSchema, [this](auto&, const json& b, auto&) -> Reply {
         std::optional<std::chrono::seconds> ttl;
         if (b.contains("expires_in_seconds")) ttl = std::chrono::seconds(b["expires_in_seconds"].get<int64_t>());
         return {201, pairing_->issue_bundle(ttl), ""};
       },
       /*body_optional=*/true});
  add({"POST", "/api/v1/vmas/enroll",
       "A VMA enrols with its pairing code (Authorization: Pairing CODE; single use) and its SSH key",
       "pairing", &kEnrollSchema, [this](auto& req, const json& b, auto&) -> Reply {
         std::string code = req.get_header_value("Authorization").substr(8);
         try {
           VmaRecord v = pairing_->enroll(code, b["name"], b["vcenter"], b["ssh_public_key"]);
           json out = vma_json(v);
           out["next"] = fmt::format("an operator approves it: POST /api/v1/vmas/{}/approve", v.vma_id);
           return {202, out, ""};
         } catch (const Conflict& e) {
           return error_reply(403, e.what());
         }
       }});
  add({"GET", "/api/v1/vmas", "List paired VMAs with their tunnel state as the OMA sees it", "operator", nullptr,
       [this](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& v : repos_.vmas.list_vmas()) {
           json j = vma_json(v);
           j["tunnel_state"] = pairing_->tunnel_state(v);
           out.push_back(j);
         }
         return {200, {{"vmas", out}}, ""};
       }});
  add({"POST", "/api/v1/vmas/{vma_id}/approve", "Approve a pending VMA: its key may hold its tunnel", "admin", nullptr,
       [this](auto& req, auto&, auto&) -> Reply {
         return {200, vma_json(pairing_->approve(uuid_param(req, 1, "vma_id"))), ""};
       }});
  add({"POST", "/api/v1/vmas/{vma_id}/revoke", "Revoke a VMA: key removed, live SSH session ended", "admin", nullptr,
       [this](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, 1, "vma_id");
         auto pid = pairing_->revoke(id);
         json out = vma_json(repos_.vmas.get_vma(id));
         out["session_ended"] = pid.has_value();
         out["session_pid"] = pid ? json(*pid) : json(nullptr);
         out["warning"] = nullptr;
         if (pairing_->tunnel_state(repos_.vmas.get_vma(id)) == "up")
           out["warning"] = fmt::format("something still listens on the VMA's tunnel port 127.0.0.1:{} and it is not "
                                        "an sshd session this OMA may end (is the OMA running as root?): end it by "
                                        "hand; the VMA's key is already removed",
                                        out["tunnel_port"].get<int64_t>());
         return {200, out, ""};
       }});
  add({"GET", "/api/v1/vmas/{vma_id}/health", "A VMA's health through its tunnel, and the tunnel's state",
       "operator", nullptr, [this](auto& req, auto&, auto&) -> Reply {
         return {200, pairing_->health(uuid_param(req, 1, "vma_id")), ""};
       }});
  add({"GET", "/api/v1/vmas/{vma_id}/discover",
       "The VMs of this VMA's vCenter with disks and NICs (through its tunnel), each marked managed if added",
       "operator", nullptr, [this](auto& req, auto&, auto&) -> Reply {
         VmaRecord v = repos_.vmas.get_vma(uuid_param(req, 1, "vma_id"));
         if (v.state != VmaState::Approved)
           return error_reply(409, fmt::format("VMA {} ({}) is {}: approve it first", v.vma_id, v.name, v.state));
         Discovery d;
         try {
           d = pairing_->client(v)->discover();
         } catch (const std::exception& e) {
           return error_reply(502, fmt::format("discovery through VMA {} ({}) failed: {}; check its tunnel with "
                                               "GET /api/v1/vmas/{}/health",
                                               v.vma_id, v.name, e.what(), v.vma_id));
         }
         json vms = json::array();
         for (const auto& vm : d.vms) vms.push_back(discovered_vm_json(vm, repos_.vms.find_vm(vm.vm_id).has_value()));
         return {200, {{"vma_id", v.vma_id}, {"vcenter", d.vcenter}, {"vms", vms}}, ""};
       }});
}

std::string ApiServer::metrics() {
  std::string out;
  out += "# HELP oma_jobs Replication jobs by state.\n# TYPE oma_jobs gauge\n";
  for (const auto& [status, n] : repos_.jobs.jobs_by_status()) out += fmt::format("oma_jobs{{state=\"{}\"}} {}\n", status, n);
  auto [bytes, bps] = repos_.jobs.job_totals();
  out += fmt::format("# HELP oma_bytes_moved_total Bytes copied by all jobs.\n# TYPE oma_bytes_moved_total counter\n"
                     "oma_bytes_moved_total {}\n", bytes);
  out += fmt::format("# HELP oma_throughput_bytes_per_second Summed throughput of active jobs.\n"
                     "# TYPE oma_throughput_bytes_per_second gauge\noma_throughput_bytes_per_second {}\n", bps);
  out += fmt::format("# HELP oma_exports NBD exports.\n# TYPE oma_exports gauge\noma_exports {}\n",
                     repos_.storage.count_exports());
  out += fmt::format("# HELP oma_poller_errors_total Failed progress polls of the VMA.\n"
                     "# TYPE oma_poller_errors_total counter\noma_poller_errors_total {}\n", jobs_.poller_errors());
  if (pairing_) {
    auto [up, down] = approved_tunnels();
    out += fmt::format("# HELP oma_vma_tunnels Control tunnels of approved VMAs, by state as the OMA sees them.\n"
                       "# TYPE oma_vma_tunnels gauge\noma_vma_tunnels{{state=\"up\"}} {}\n"
                       "oma_vma_tunnels{{state=\"down\"}} {}\n", up, down);
  }
  out += fmt::format("# HELP oma_export_server_restarts_total Times the export server was restarted.\n"
                     "# TYPE oma_export_server_restarts_total counter\noma_export_server_restarts_total {}\n",
                     exports_.restarts());
  return out;
}

json ApiServer::openapi() const {
  json paths = json::object();
  for (const auto& r : routes_) {
    std::string m = r.method;
    std::transform(m.begin(), m.end(), m.begin(), ::tolower);
    json op = {{"summary", r.summary},
               {"responses",
                {{"200", {{"description", "success"}}},
                 {"400", {{"description", "invalid input: {error, field}"}}},
                 {"401", {{"description", "missing, unknown or revoked token"}}}}}};
    if (r.role.empty()) op["security"] = json::array();
    if (r.role == "pairing") op["security"] = json::array({{{"pairingCode", json::array()}}});
    if (r.role == "admin") op["responses"]["403"] = {{"description", "needs an admin token"}};
    if (r.body) op["requestBody"] = {{"required", !r.body_optional}, {"content", {{"application/json", {{"schema", schema::to_openapi(*r.body)}}}}}};
    json params = json::array();
    std::smatch m2;
    std::string rest = r.path;
    while (std::regex_search(rest, m2, std::regex(R"(\{([a-z_]+)\})"))) {
      params.push_back({{"name", m2[1].str()}, {"in", "path"}, {"required", true}, {"schema", {{"type", "string"}}}});
      rest = m2.suffix();
    }
    if (!params.empty()) op["parameters"] = params;
    paths[r.path][m] = op;
  }
  json schemes = {{"bearer", {{"type", "http"}, {"scheme", "bearer"}}},
                  {"pairingCode",
                   {{"type", "apiKey"}, {"in", "header"}, {"name", "Authorization"},
                    {"description", "\"Pairing CODE\" with the one-time code of a pairing bundle"}}}};
  return {{"openapi", "3.0.3"},
          {"info", {{"title", "MigrateKit OSSEA OMA API"}, {"version", "1"}}},
          {"components", {{"securitySchemes", schemes}}},
          {"security", json::array({{{"bearer", json::array()}}})},
          {"paths", paths}};
}

}  // namespace mk::oma::api

// The OMA's collaborators that its REST routes refer to, built once over SQLite in a
// private temporary directory and never started, and a Router with every route
// (api::all_routes). For the fuzz targets and the seed generator, which check requests
// against the routes' declarations but never run a handler. Not thread-safe; lives until
// the process ends.
#pragma once

#include <httplib.h>
#include <stdlib.h>

#include "common/log.h"
#include "fuzz_support.h"
#include "oma/api/api_server.h"
#include "oma/api/router.h"
#include "oma/api/routes/routes.h"
#include "oma/api/views.h"
#include "oma/cutover/cloudstack_target.h"
#include "oma/cutover/cutover_service.h"
#include "oma/db/database.h"
#include "oma/db/migrations.h"
#include "oma/exports/export_manager.h"
#include "oma/exports/nbdkit_server.h"
#include "oma/gui/event_hub.h"
#include "oma/jobs/job_manager.h"
#include "oma/jobs/scheduler.h"
#include "oma/pairing/pairing_service.h"
#include "oma/vma/vma_client.h"
#include "oma/volumes/volume_backend.h"
#include "oma/volumes/volume_manager.h"

namespace mk::fuzz {

using namespace mk::oma;  // NOLINT: this header is for the fuzz targets only

// What the routes refer to, built once, never started.
struct World {
  std::string dir;
  std::unique_ptr<db::Database> db;
  std::unique_ptr<Repositories> repos;
  std::unique_ptr<SecretBox> secrets;
  std::unique_ptr<CloudStackTarget> cloudstack;
  std::unique_ptr<LocalVolumeBackend> volume_backend;
  std::unique_ptr<VolumeManager> volumes;
  std::unique_ptr<NbdkitExportServer> export_server;
  std::unique_ptr<ExportManager> exports;
  std::unique_ptr<PairingService> pairing;
  std::unique_ptr<HttpVmaClient> vma;
  std::unique_ptr<JobManager> jobs;
  std::unique_ptr<CutoverService> cutover;
  std::unique_ptr<gui::EventHub> events;
  std::unique_ptr<Scheduler> scheduler;
  api::Router router;

  World() {
    dir = private_temp_dir("mk-fuzz-api");
    db = db::open_database("sqlite:" + dir + "/oma.db");
    db::migrate(*db);
    repos = std::make_unique<Repositories>(*db);
    secrets = std::make_unique<SecretBox>(dir + "/secrets.key");
    cloudstack = std::make_unique<CloudStackTarget>(repos->config, *secrets, CloudStackOptions{});
    volume_backend = std::make_unique<LocalVolumeBackend>(dir + "/volumes");
    volumes = std::make_unique<VolumeManager>(repos->storage, *volume_backend);
    ExportServerConfig ec;
    ec.exports_dir = dir + "/exports";
    ec.port = 1;  // never started
    ec.tls = {dir + "/nbd-psk.keys", ""};
    export_server = std::make_unique<NbdkitExportServer>(ec);
    exports = std::make_unique<ExportManager>(repos->storage, *export_server);
    PairingConfig pc;
    pc.authorized_keys_file = dir + "/authorized_keys";
    pairing = std::make_unique<PairingService>(repos->vmas, repos->vms, *secrets, pc);
    vma = std::make_unique<HttpVmaClient>("http://127.0.0.1:1", std::chrono::milliseconds(100));
    jobs = std::make_unique<JobManager>(repos->vms, repos->jobs, *volumes, *exports, *vma, JobOptions{});
    auto vma_for = [this](const std::string&) { return std::shared_ptr<VmaClient>(vma.get(), [](VmaClient*) {}); };
    cutover = std::make_unique<CutoverService>(repos->vms, repos->jobs, repos->storage, *jobs, *exports, vma_for,
                                               *cloudstack, false);
    events = std::make_unique<gui::EventHub>(repos->jobs, &api::job_progress_json);
    SchedulerOptions so;
    so.start_job = [](const std::string&, JobKind) -> std::string { throw mk::Error("the fuzz targets start no job"); };
    scheduler = std::make_unique<Scheduler>(repos->schedules, repos->vms, so);
    for (auto& r : api::all_routes({*repos, *jobs, *export_server, *secrets, pairing.get(), *cutover, *events,
                                    *scheduler, *vma})) {
      router.add(std::move(r));
    }
  }
};

inline World& world() {
  static World* w = new World();  // lives until the process ends
  return *w;
}

}  // namespace mk::fuzz

// `migratekit copy SOURCE TARGET`: one full or incremental pass between NBD exports.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <future>
#include <cstdio>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "common/error.h"
#include "common/log.h"
#include "common/units.h"
#include "engine/changed_areas.h"
#include "engine/checkpoint.h"
#include "engine/copier.h"
#include "engine/nbd_connection.h"
#include "engine/plan.h"
#include "engine/progress.h"
#include "engine/verify.h"

namespace mk::cli {
namespace {

using namespace mk::engine;

std::atomic<bool> g_cancel{false};

void on_signal(int) { g_cancel = true; }

struct CopyArgs {
  std::string source, target;
  std::string changed_areas, dirty_bitmap;
  bool target_is_zero = false;
  std::string request_size = "1M";
  unsigned requests = 64;
  std::string in_flight = "8M";
  unsigned connections = 1;
  std::string source_psk, target_psk, source_certs, target_certs;
  std::string progress_json;
  std::string checkpoint;
  bool verify = false;
  unsigned retries = 5;
  unsigned timeout = 120;
  bool quiet = false;
};

// "--progress-json FILE" or "fd:N". Returns the descriptor (owned when `owned`).
int open_progress_sink(const std::string& spec, bool& owned) {
  owned = false;
  if (spec.empty()) return -1;
  if (spec.rfind("fd:", 0) == 0) {
    std::string num = spec.substr(3);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) {
      throw UsageError(fmt::format("--progress-json {}: expected fd:N with a descriptor number", spec));
    }
    int fd = std::stoi(num);
    if (fcntl(fd, F_GETFD) == -1) {
      throw UsageError(fmt::format("--progress-json {}: descriptor {} is not open", spec, fd));
    }
    return fd;
  }
  int fd = ::open(spec.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw UsageError(fmt::format("--progress-json {}: cannot open: {}", spec, std::strerror(errno)));
  owned = true;
  return fd;
}

int run_copy(const CopyArgs& a) {
  Endpoint source{a.source, {a.source_psk, a.source_certs}, "source"};
  Endpoint target{a.target, {a.target_psk, a.target_certs}, "target"};
  validate_endpoint(source);
  validate_endpoint(target);
  if (!a.changed_areas.empty() && !a.dirty_bitmap.empty()) {
    throw UsageError("give --changed-areas or --dirty-bitmap, not both");
  }
  CopyOptions opt;
  opt.request_size = parse_size(a.request_size, "--request-size");
  if (opt.request_size < 4096 || opt.request_size > 32 * MiB || opt.request_size % 512) {
    throw UsageError("--request-size must be a multiple of 512 between 4K and 32M");
  }
  if (a.requests < 1 || a.requests > 1024) throw UsageError("--requests must be between 1 and 1024");
  opt.bytes_in_flight = parse_size(a.in_flight, "--in-flight");
  if (opt.bytes_in_flight < opt.request_size || opt.bytes_in_flight > 1024 * MiB) {
    throw UsageError("--in-flight must be at least --request-size and at most 1G");
  }
  if (a.connections < 1 || a.connections > 16) throw UsageError("--connections must be between 1 and 16");
  opt.requests = a.requests;
  opt.connections = a.connections;
  opt.target_is_zero = a.target_is_zero;
  opt.max_retries = a.retries;
  if (a.timeout < 1) throw UsageError("--timeout must be at least 1 second");
  opt.request_timeout = std::chrono::seconds(a.timeout);
  opt.cancel = &g_cancel;

  bool own_sink = false;
  int sink = open_progress_sink(a.progress_json, own_sink);
  std::unique_ptr<int, void (*)(int*)> sink_guard(own_sink ? new int(sink) : nullptr,
                                                  [](int* fd) { ::close(*fd); delete fd; });
  Progress progress;
  progress.start(sink, !a.quiet && isatty(STDERR_FILENO), std::chrono::milliseconds(500));
  opt.progress = &progress;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // Progress is advisory: a reader of --progress-json that went away must not kill the copy.
  signal(SIGPIPE, SIG_IGN);

  try {
    // Plan: the source's block status within the pass's scope.
    PlanRequest request;
    request.dirty_bitmap = a.dirty_bitmap;
    // The target connects while the source is planned: both handshakes (TLS, and servers
    // that probe their file at open) cost round trips and server time.
    auto target_ready = std::async(std::launch::async, [&target] { return NbdConnection::open(target); });
    auto src = NbdConnection::open(source, plan_meta_contexts(request));
    if (!a.changed_areas.empty()) request.changed_areas = load_changed_areas(a.changed_areas, src->size());
    Plan plan = build_plan(*src, request);
    auto dst = target_ready.get();
    if (dst->size() < plan.disk_size) {
      throw UsageError(fmt::format("{}: target is smaller ({} bytes) than the source ({} bytes)",
                                   target.describe(), dst->size(), plan.disk_size));
    }
    if (dst->read_only()) throw UsageError(fmt::format("{}: the export is read-only", target.describe()));
    log::debug("plan: {} entries, {} data, {} zero, scope {}", plan.entries.size(),
               format_bytes(plan.data_bytes), format_bytes(plan.zero_bytes), format_bytes(plan.scope_bytes));

    std::unique_ptr<Checkpoint> checkpoint;
    RangeList done;
    if (!a.checkpoint.empty()) {
      nlohmann::json identity{{"migratekit_checkpoint", 1},
                              {"plan", plan.digest()},
                              {"disk_size", plan.disk_size},
                              {"target", target.uri},
                              {"target_is_zero", a.target_is_zero}};
      checkpoint = Checkpoint::open(a.checkpoint, identity, plan.disk_size);
      done = checkpoint->completed();
      opt.checkpoint = checkpoint.get();
      if (!done.empty()) log::info("resuming from checkpoint {}: {} already done", a.checkpoint, format_bytes(total_length(done)));
    }

    PlanTotals totals = plan_totals(plan, a.target_is_zero);
    progress.set_total(totals.total, totals.skipped);
    progress.set_phase("copying");
    CopyStats stats = copy_plan(source, target, plan, done, opt, {std::move(src), std::move(dst)});

    uint64_t verified = 0;
    if (a.verify) {
      progress.set_phase("verifying");
      VerifyOptions vopt;
      vopt.request_size = opt.request_size;
      verified = verify_plan(source, target, plan, vopt);
    }
    if (checkpoint) checkpoint->remove();
    progress.finish("done");

    uint64_t copied = totals.total - stats.bytes_resumed;
    double secs = stats.seconds > 0 ? stats.seconds : 1e-9;
    std::string line = fmt::format(
        "copied {} in {:.2f} s ({}/s): {} written, {} zeroed", format_bytes(copied), stats.seconds,
        format_bytes(static_cast<uint64_t>(copied / secs)), format_bytes(stats.bytes_written),
        format_bytes(stats.bytes_zeroed));
    if (stats.bytes_zero_data) line += fmt::format(", {} of zero data not rewritten", format_bytes(stats.bytes_zero_data));
    line += fmt::format("; {} skipped as holes or zeros", format_bytes(totals.skipped));
    if (stats.bytes_resumed) line += fmt::format("; {} resumed from the checkpoint", format_bytes(stats.bytes_resumed));
    if (stats.retries || stats.reconnects) line += fmt::format("; {} retries, {} reconnects", stats.retries, stats.reconnects);
    std::printf("%s\n", line.c_str());
    if (a.verify) std::printf("verified %s: target matches source\n", format_bytes(verified).c_str());
    return 0;
  } catch (...) {
    progress.finish("failed");
    throw;
  }
}

}  // namespace

Runner add_copy_command(CLI::App& app) {
  auto args = std::make_shared<CopyArgs>();
  CLI::App* c = app.add_subcommand("copy", "Copy an NBD export to another, in full or incrementally");
  // As with most tools, an option given twice takes its last value (scripts append overrides).
  c->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  c->add_option("SOURCE", args->source, "Source NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://)")->required();
  c->add_option("TARGET", args->target, "Target NBD URI")->required();
  c->add_option("--changed-areas", args->changed_areas,
                "JSON file of [{\"start\":N,\"length\":N}]: copy only these areas");
  c->add_option("--dirty-bitmap", args->dirty_bitmap,
                "Copy only areas dirty in the source's qemu:dirty-bitmap:NAME");
  c->add_flag("--target-is-zero", args->target_is_zero, "The target reads as zeros (fresh volume): skip zero ranges");
  c->add_option("--request-size", args->request_size, "Largest request in bytes (default 1M)");
  c->add_option("--requests", args->requests, "Most requests in flight per connection (default 64)");
  c->add_option("--in-flight", args->in_flight, "Most data bytes in flight per connection (default 8M)");
  c->add_option("--connections", args->connections,
                "Connections per side when both servers allow multi-conn (default 1)");
  c->add_option("--source-tls-psk", args->source_psk, "TLS PSK keys file for the source");
  c->add_option("--target-tls-psk", args->target_psk, "TLS PSK keys file for the target");
  c->add_option("--source-tls-certificates", args->source_certs, "X.509 certificates directory for the source");
  c->add_option("--target-tls-certificates", args->target_certs, "X.509 certificates directory for the target");
  c->add_option("--progress-json", args->progress_json, "Write JSON progress lines to FILE or fd:N");
  c->add_option("--checkpoint", args->checkpoint, "Record completed ranges in FILE and resume from it");
  c->add_flag("--verify", args->verify, "Compare source and target over the planned ranges afterwards");
  c->add_option("--retries", args->retries, "Attempts per failed request before giving up (default 5)");
  c->add_option("--timeout", args->timeout,
                 "Seconds without any reply before a connection is dropped and retried (default 120)");
  c->add_flag("-q,--quiet", args->quiet, "No progress bar");
  return [args] { return run_copy(*args); };
}

}  // namespace mk::cli

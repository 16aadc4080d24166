#include "oma/gui/gui_server.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>

#include "common/log.h"

namespace mk::oma::gui {

namespace fs = std::filesystem;

std::string default_dist_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "web/dist";
  // The build tree (build/bin/oma: build/web/dist), else the installed tree
  // (/usr/bin/oma: /usr/share/migratekit/web, `cmake --install`, the package).
  fs::path prefix = exe.parent_path().parent_path();
  fs::path built = prefix / "web" / "dist", installed = prefix / "share" / "migratekit" / "web";
  return (fs::exists(built) || !fs::exists(installed) ? built : installed).string();
}

GuiServer::GuiServer(api::ApiServer& api, GuiConfig config) : config_(std::move(config)), server_(config_.limits) {
  if (config_.dist_dir.empty()) config_.dist_dir = default_dist_dir();
  api.serve_on(server_);
  has_app_ = fs::exists(fs::path(config_.dist_dir) / "index.html");
  if (has_app_) {
    server_.handlers().set_mount_point("/", config_.dist_dir);
  } else {
    std::string dir = config_.dist_dir;
    server_.handlers().Get("/", [dir](const httplib::Request&, httplib::Response& res) {
      res.status = 503;
      res.set_content(fmt::format("<!doctype html><title>OMA</title><p>The migration GUI is not built: no "
                                  "index.html in {}. Build it with <code>cmake --build build --target web</code> "
                                  "(needs Node.js 20.19 or newer) or start the OMA with --gui-dir.</p>",
                                  dir),
                      "text/html; charset=utf-8");
    });
  }
  server_.handlers().set_post_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    // The page loads only its own files; nothing may frame it.
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                   "frame-ancestors 'none'");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Referrer-Policy", "no-referrer");
    // index.html must be revalidated (it names the current hashed assets); assets are immutable.
    if (req.path.rfind("/assets/", 0) == 0) res.set_header("Cache-Control", "public, max-age=31536000, immutable");
    else if (!res.has_header("Cache-Control")) res.set_header("Cache-Control", "no-cache");
  });
}

GuiServer::~GuiServer() { stop(); }

void GuiServer::start() {
  server_.set_tls(config_.tls);
  try {
    port_ = server_.bind(config_.listen_address, config_.port);
  } catch (const Error& e) {
    throw Error(fmt::format("{} for the GUI (port in use? another OMA running? --gui-port 0 picks a free port, -1 "
                            "turns the GUI off)",
                            e.what()));
  }
  server_.start();
  if (has_app_)
    log::info("OMA GUI on {}://{}:{}/ (files from {})", config_.tls ? "https" : "http", config_.listen_address, port_,
              config_.dist_dir);
  else log::warn("OMA GUI port {}:{} serves the API only: no web app in {}", config_.listen_address, port_, config_.dist_dir);
}

void GuiServer::stop() { server_.stop(); }

}  // namespace mk::oma::gui

// GuiServer: the migration GUI's listener (default :3001). It serves the built web app
// (web/dist: index.html and hashed assets) and, on the same origin, the very same API
// routes as the API listener (ApiServer::serve_on), so the page needs no CORS and there
// is no second API. The page logs in with an API token and uses only public routes.
//
// A missing web app does not stop the OMA: "/" then answers 503 saying how to build
// it. The listener is a BoundedHttpServer with the API's limits (common/bounded_http.h):
// a file request is admitted as GET/HEAD without a body, an API request by the API's
// own admission (route, token, role) before its body is read.
// Owns its HTTP server and threads, not the ApiServer (which must outlive it).
// start/stop from one thread.
#pragma once

#include <string>

#include "oma/api/api_server.h"

namespace mk::oma::gui {

struct GuiConfig {
  std::string listen_address = "0.0.0.0";
  int port = 3001;       // 0: any free port (see port())
  std::string dist_dir;  // the built web app (index.html inside)
  http::Limits limits;   // as the API's
  std::shared_ptr<const tls::TlsServerContext> tls;  // HTTPS; null: plain HTTP
};

// Where the web app is relative to the oma binary: BIN/../web/dist in the build tree,
// else BIN/../share/migratekit/web (installed).
std::string default_dist_dir();

class GuiServer {
 public:
  GuiServer(api::ApiServer& api, GuiConfig config);
  ~GuiServer();
  // Throws mk::Error if the port cannot be bound.
  void start();
  void stop();
  int port() const { return port_; }
  bool has_web_app() const { return has_app_; }

 private:
  GuiConfig config_;
  http::BoundedHttpServer server_;
  int port_ = 0;
  bool has_app_ = false;
};

}  // namespace mk::oma::gui

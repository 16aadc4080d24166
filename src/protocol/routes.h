// The routes of the OMA<->VMA protocol (messages.h says what each one carries): the
// VMA's API, which the OMA calls, and the OMA's enrolment route, which `vma pair` calls.
// `path` is the OpenAPI form ("/api/v1/progress/{job_id}"), `pattern` the regular
// expression an HTTP server binds (one capture per parameter). Constants; thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace mk::protocol {

struct Route {
  std::string_view method, path, pattern;
};

inline constexpr Route kReplicateRoute{"POST", "/api/v1/replicate", "/api/v1/replicate"};
inline constexpr Route kProgressRoute{"GET", "/api/v1/progress/{job_id}", R"(/api/v1/progress/([^/]+))"};
inline constexpr Route kStopRoute{"POST", "/api/v1/stop/{job_id}", R"(/api/v1/stop/([^/]+))"};
inline constexpr Route kCleanupRoute{"POST", "/api/v1/cleanup/{vm_id}", R"(/api/v1/cleanup/([^/]+))"};
inline constexpr Route kPowerRoute{"POST", "/api/v1/power/{vm_id}", R"(/api/v1/power/([^/]+))"};
inline constexpr Route kDiscoverRoute{"GET", "/api/v1/discover", "/api/v1/discover"};
inline constexpr Route kPreflightRoute{"GET", "/api/v1/preflight/{vm_id}", R"(/api/v1/preflight/([^/]+))"};
inline constexpr Route kDescribeRoute{"GET", "/api/v1/vms/{vm_id}", R"(/api/v1/vms/([^/]+))"};
inline constexpr Route kHealthRoute{"GET", "/api/v1/health", "/api/v1/health"};
inline constexpr Route kServiceNodesRoute{"POST", "/api/v1/service-nodes", "/api/v1/service-nodes"};
// On the OMA's API (enrolment.h).
inline constexpr Route kEnrolRoute{"POST", "/api/v1/vmas/enroll", "/api/v1/vmas/enroll"};

// The route's path with its one parameter filled in ("/api/v1/progress/<id>"); the
// caller checked `id` (a UUID).
inline std::string path_of(const Route& r, std::string_view id) {
  std::string p(r.path);
  auto open = p.find('{');
  if (open == std::string::npos) return p;
  return p.replace(open, p.find('}', open) - open + 1, id);
}

}  // namespace mk::protocol

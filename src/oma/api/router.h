// Router: finds the route for a request (method and path), whatever the order in which
// the routes were declared.
//
// A path is a list of segments; a route's segment is a literal ("vms") or a parameter
// ("{vm_id}", any non-empty segment). Literals take precedence over parameters, segment
// by segment from the left: /api/v1/settings/cloudstack wins over
// /api/v1/settings/{name}, whichever is declared first. Two routes of one method with the
// same shape (the same literals at the same places, parameters at the others, e.g.
// /vms/{vm_id} and /vms/{id}) would tie on every request they match: add() refuses the
// second at start-up. So at most one route wins for any request, and matching does not
// depend on declaration order. HEAD is matched as GET.
//
// Not thread-safe while routes are added; match() and routes() are safe from many
// threads once the last add() has returned.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oma/api/route.h"

namespace mk::oma::api {

class Router {
 public:
  struct Match {
    const Route* route;
    PathParams params;
  };

  // Throws mk::Error naming the route when its path is malformed (not "/"-separated
  // literals and {lowercase_name} parameters, a parameter named twice) or when an earlier
  // route of the same method has the same shape.
  void add(Route route);

  // The winning route for `method` and the (percent-decoded) `path`, or nullopt.
  std::optional<Match> match(std::string_view method, std::string_view path) const;

  // In declaration order (the OpenAPI document lists them).
  const std::vector<Route>& routes() const { return routes_; }

  // A regex (ECMAScript, whole path) for the paths this router may answer: those whose
  // first segment is the first segment of some route. A listener that also serves other
  // paths (the GUI's files) hands only these to the router.
  std::string path_pattern() const;

 private:
  struct Segment {
    std::string text;  // the literal, or the parameter's name
    bool param = false;
  };
  static std::vector<Segment> parse(const std::string& path);
  static bool more_specific(const std::vector<Segment>& a, const std::vector<Segment>& b);

  std::vector<Route> routes_;
  std::vector<std::vector<Segment>> shapes_;  // parallel to routes_
};

}  // namespace mk::oma::api

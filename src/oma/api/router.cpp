#include "oma/api/router.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "common/error.h"

namespace mk::oma::api {
namespace {

std::vector<std::string_view> split(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty() || path[0] != '/') return out;
  path.remove_prefix(1);
  while (true) {
    size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

bool is_param_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; });
}

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view(R"(\^$.|?*+()[]{}-)").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

std::vector<Router::Segment> Router::parse(const std::string& path) {
  auto bad = [&](const std::string& why) {
    return Error(fmt::format("route path {}: {} (expected /literal/{{param}}/... with lowercase parameter names)",
                             path, why));
  };
  if (path.empty() || path[0] != '/') throw bad("does not start with /");
  std::vector<Segment> shape;
  std::set<std::string> names;
  for (std::string_view s : split(path)) {
    if (s.empty()) throw bad("has an empty segment");
    if (s.front() == '{') {
      if (s.back() != '}' || !is_param_name(s.substr(1, s.size() - 2))) throw bad("malformed parameter");
      std::string name(s.substr(1, s.size() - 2));
      if (!names.insert(name).second) throw bad("names the parameter {" + name + "} twice");
      shape.push_back({name, true});
    } else {
      if (s.find_first_of("{}") != std::string_view::npos) throw bad("braces inside a literal segment");
      shape.push_back({std::string(s), false});
    }
  }
  return shape;
}

bool Router::more_specific(const std::vector<Segment>& a, const std::vector<Segment>& b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (a[i].param != b[i].param) return !a[i].param;
  }
  return false;
}

void Router::add(Route route) {
  std::vector<Segment> shape = parse(route.path);
  for (size_t i = 0; i < routes_.size(); ++i) {
    if (routes_[i].method != route.method || shapes_[i].size() != shape.size()) continue;
    bool same = std::equal(shape.begin(), shape.end(), shapes_[i].begin(), [](const Segment& a, const Segment& b) {
      return a.param == b.param && (a.param || a.text == b.text);
    });
    if (same) {
      throw Error(fmt::format("routes {} {} and {} {} match the same requests: rename a literal segment of one",
                              routes_[i].method, routes_[i].path, route.method, route.path));
    }
  }
  routes_.push_back(std::move(route));
  shapes_.push_back(std::move(shape));
}

std::optional<Router::Match> Router::match(std::string_view method, std::string_view path) const {
  if (method == "HEAD") method = "GET";
  std::vector<std::string_view> segments = split(path);
  std::optional<size_t> best;
  for (size_t i = 0; i < routes_.size(); ++i) {
    const auto& shape = shapes_[i];
    if (routes_[i].method != method || shape.size() != segments.size()) continue;
    bool fits = true;
    for (size_t k = 0; k < shape.size() && fits; ++k) {
      fits = shape[k].param ? !segments[k].empty() : shape[k].text == segments[k];
    }
    if (fits && (!best || more_specific(shape, shapes_[*best]))) best = i;
  }
  if (!best) return std::nullopt;
  Match m{&routes_[*best], {}};
  for (size_t k = 0; k < segments.size(); ++k) {
    if (shapes_[*best][k].param) m.params[shapes_[*best][k].text] = std::string(segments[k]);
  }
  return m;
}

std::string Router::path_pattern() const {
  std::set<std::string> firsts;
  for (const auto& shape : shapes_) {
    if (shape.front().param) return R"(/[\s\S]*)";
    firsts.insert(regex_escape(shape.front().text));
  }
  std::string alternatives;
  for (const auto& f : firsts) alternatives += (alternatives.empty() ? "" : "|") + f;
  // [\s\S], not '.': a decoded path may hold a line break, which the route answers (400).
  return fmt::format(R"(/(?:{})(?:/[\s\S]*)?)", alternatives);
}

}  // namespace mk::oma::api

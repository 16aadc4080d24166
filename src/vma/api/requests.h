// Parsing and checking the bodies and path parameters of the VMA API (the protocol in
// src/oma/vma/vma_client.h). Everything from a request is allow-listed before use:
// UUIDs in the 8-4-4-4-12 lowercase shape, disk keys of digits, export names that are
// exactly migration-vm-{vm_id}-disk{unit}, an NBD host of host-name characters, change
// IDs that agree with the pass's kind. A violation throws BadRequest naming the field,
// which the API answers with 400. Free functions, thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "vma/runner/job_state.h"

namespace mk::vma::api {

class BadRequest : public UsageError {
 public:
  BadRequest(std::string field, const std::string& message) : UsageError(message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// The body as JSON; BadRequest when it is not a JSON object.
nlohmann::json parse_body(const std::string& body);

// POST /api/v1/replicate -> the job to run (status queued).
JobState parse_replicate(const nlohmann::json& body);

struct PowerRequest {
  std::string action;       // shutdown | off | on
  int timeout_seconds = 300;
};
PowerRequest parse_power(const nlohmann::json& body);

// A path parameter that must be a UUID (job_id, vm_id).
void check_uuid_param(const std::string& value, const std::string& name);

}  // namespace mk::vma::api

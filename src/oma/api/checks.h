// Checks on the API's input shared by the routes: string checks for request schemas and
// parameters (Field::check) with their regular expressions (Field::pattern), and the
// error reply every route sends.
// Free functions; thread-safe.
#pragma once

#include <string>

#include "oma/api/route.h"
#include "protocol/names.h"

namespace mk::oma::api {

// The same rules as regular expressions for the OpenAPI document (Field::pattern), so
// that validators built from the document agree with the checks below (a unit test
// holds them together). The naming rules' are the protocol's (protocol/names.h).
inline constexpr const char* kUuidPattern = protocol::kUuidPattern;
inline constexpr const char* kDiskKeyPattern = protocol::kDiskKeyPattern;
inline constexpr const char* kMacPattern = protocol::kMacPattern;
inline constexpr const char* kCloudStackIdPattern = "^[0-9A-Za-z-]+$";
inline constexpr const char* kUrlPattern = "^https?://";

// Field::check functions: throw FieldError(path, ...) naming what the value must be.
void uuid_check(const std::string& v, const std::string& path);      // lowercase UUID
void name_check(const std::string& v, const std::string& path);      // display name
void disk_key_check(const std::string& v, const std::string& path);  // VMware device key
void mac_check(const std::string& v, const std::string& path);       // 00:50:56:aa:bb:cc
void ssh_key_check(const std::string& v, const std::string& path);   // a VMA's ssh-ed25519 key
void id_check(const std::string& v, const std::string& path);        // CloudStack id
void url_check(const std::string& v, const std::string& path);       // http(s) URL

// {"error": message, "field": field?} with `status`.
Reply error_reply(int status, const std::string& message, const std::string& field = "");

}  // namespace mk::oma::api

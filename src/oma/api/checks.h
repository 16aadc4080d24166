// Checks on the API's input shared by the routes: string checks for request schemas
// (Field::check), path parameters, and the error reply every route sends.
// Free functions; thread-safe.
#pragma once

#include <string>

#include "oma/api/route.h"

namespace mk::oma::api {

// Field::check functions: throw FieldError(path, ...) naming what the value must be.
void uuid_check(const std::string& v, const std::string& path);      // lowercase UUID
void name_check(const std::string& v, const std::string& path);      // display name
void disk_key_check(const std::string& v, const std::string& path);  // VMware device key
void mac_check(const std::string& v, const std::string& path);       // 00:50:56:aa:bb:cc
void ssh_key_check(const std::string& v, const std::string& path);   // a VMA's ssh-ed25519 key
void id_check(const std::string& v, const std::string& path);        // CloudStack id
void url_check(const std::string& v, const std::string& path);       // http(s) URL

// The path parameter {name}; throws FieldError(name) unless it is a lowercase UUID.
std::string uuid_param(const Request& req, const std::string& name);

// {"error": message, "field": field?} with `status`.
Reply error_reply(int status, const std::string& message, const std::string& field = "");

}  // namespace mk::oma::api

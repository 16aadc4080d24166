// Request signing for the CloudStack API, as CloudStack's developer guide describes it.
//
// A request is its parameters (command, apikey and the command's own). The signature is
// computed over the "command string": every pair key=value with the value URL-encoded
// the way CloudStack's server re-encodes it to verify (Java's URLEncoder: A-Z a-z 0-9
// - _ . * kept, a space as %20, never "+"), pairs sorted by key as the server sorts them
// (ApiServer.verifyRequest: Collections.sort of the names as received, case-sensitive,
// so "apiKey" comes before "api_x"), joined with "&", the whole string lower-cased; then
// HMAC-SHA1 with the secret key, then base64. The same encoding builds the query string
// that is sent, so what is signed is exactly what the server decodes.
//
// Free functions without state; thread-safe. The secret key is only read, never kept
// or logged.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace mk::cloudstack {

// A std::map keeps the names unique and in the server's order (byte order of the names,
// which is Java's String order for the ASCII names CloudStack uses).
using Params = std::map<std::string, std::string>;

// A-Z a-z 0-9 - _ . * kept, everything else %XX (upper hex), UTF-8 bytes.
std::string url_encode(std::string_view value);

// key=encoded(value) pairs joined with "&", in the server's (case-sensitive) key order.
// This is the query string to send (not lower-cased).
std::string encode_query(const Params& params);

// The lower-cased, sorted command string the signature is computed over.
std::string string_to_sign(const Params& params);

// base64(HMAC-SHA1(secret_key, string_to_sign(params))).
std::string sign(const Params& params, std::string_view secret_key);

// Lower-level pieces, public for tests.
std::string hmac_sha1_base64(std::string_view key, std::string_view message);

}  // namespace mk::cloudstack

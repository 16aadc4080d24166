// The naming rules the OMA applies to identifiers from VMware or a request are the
// protocol's (src/protocol/names.h: UUIDs, units, export names, display names, MAC
// addresses, random UUIDs); this header brings them into mk::oma. Violations throw
// schema::FieldError (a UsageError) naming the field, so the API answers 400 with it.
#pragma once

#include "protocol/names.h"

namespace mk::oma {

using protocol::check_display_name;
using protocol::check_unit;
using protocol::check_uuid;
using protocol::export_name;
using protocol::is_export_name;
using protocol::is_mac_address;
using protocol::is_uuid;
using protocol::new_uuid;

}  // namespace mk::oma

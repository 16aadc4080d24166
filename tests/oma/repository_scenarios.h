// The Store's test scenarios, each run on a freshly migrated database of every engine
// (SQLite in store_test.cpp, a real MariaDB server in mariadb_test.cpp).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "oma/db/database.h"
#include "oma/db/store.h"

namespace mk::oma {

using StoreScenario = std::function<void(db::Database&, Store&)>;
const std::vector<std::pair<std::string, StoreScenario>>& store_scenarios();

}  // namespace mk::oma

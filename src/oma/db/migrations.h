// Versioned schema migrations, applied in order when the OMA starts.
//
// Each migration has a version number and a list of statements in the dialect both
// engines accept (see database.h). schema_migrations records what was applied; a
// database newer than this program is refused rather than guessed at. Free functions;
// thread-safe as the Database is.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "oma/crypto.h"
#include "oma/db/database.h"

namespace mk::oma::db {

struct Migration {
  int version;
  std::string name;
  std::vector<std::string> statements;
  // Statements only one engine needs (by Database::engine()), run after `statements`:
  // e.g. widening a column, which SQLite does not enforce and cannot ALTER.
  std::vector<std::pair<std::string, std::string>> engine_statements = {};
  // Work SQL cannot do (re-sealing secrets), run last in the migration's transaction
  // with what migrate() was given.
  std::function<void(Database&, const std::function<const SecretBox&()>& secrets)> code = {};
};

// Every migration this program knows, in version order.
const std::vector<Migration>& migrations();

// Applies the missing migrations; returns how many were applied. Throws mk::Error if
// the database records a version this program does not know (a newer OMA wrote it).
// `secrets` gives the OMA's secrets key to a migration that needs it (only when there is
// something to re-seal: tests of an empty database pass none).
int migrate(Database& db, const std::function<const SecretBox&()>& secrets = {});

// The highest applied version (0 for an empty database).
int schema_version(Database& db);

}  // namespace mk::oma::db

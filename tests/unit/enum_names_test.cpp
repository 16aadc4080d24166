// common/enum_names.h: names to values and back, the error for an unknown name, JSON
// and fmt by name.
#include "common/enum_names.h"

#include <gtest/gtest.h>

namespace mk::test_enum {

enum class Colour { Red, DarkBlue };
const EnumTable<Colour>& enum_table(Colour) {
  static const EnumTable<Colour> t{"colour", {{Colour::Red, "red"}, {Colour::DarkBlue, "dark_blue"}}};
  return t;
}

enum class Unnamed { A, B };  // B has no name: a bug enum_name() must report
const EnumTable<Unnamed>& enum_table(Unnamed) {
  static const EnumTable<Unnamed> t{"unnamed thing", {{Unnamed::A, "a"}}};
  return t;
}

namespace {

static_assert(NamedEnum<Colour>);
static_assert(!NamedEnum<int>);

TEST(UnitEnumNames, NamesAndValuesMapBothWays) {
  EXPECT_EQ(enum_name(Colour::DarkBlue), "dark_blue");
  EXPECT_EQ(find_enum<Colour>("red"), Colour::Red);
  EXPECT_FALSE(find_enum<Colour>("Red"));  // exact, case-sensitive
  EXPECT_EQ(enum_names<Colour>(), (std::vector<std::string>{"red", "dark_blue"}));
  EXPECT_EQ(parse_enum<Colour>("dark_blue", "paint"), Colour::DarkBlue);
  EXPECT_THROW(enum_name(Unnamed::B), Error);
}

TEST(UnitEnumNames, AnUnknownNameIsAnErrorSayingWhereWhatAndTheKnownNames) {
  try {
    parse_enum<Colour>("green", "paint.colour");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "paint.colour: 'green' is not a colour (known: red, dark_blue)");
  }
  // A hostile value is cut, so it cannot flood a log.
  std::string message = unknown_enum_message<Colour>(std::string(10000, 'x'));
  EXPECT_LT(message.size(), 200u);
}

TEST(UnitEnumNames, JsonAndFmtUseTheName) {
  nlohmann::json j = {{"colour", Colour::DarkBlue}};
  EXPECT_EQ(j.dump(), R"({"colour":"dark_blue"})");
  EXPECT_EQ(j["colour"].get<Colour>(), Colour::DarkBlue);
  EXPECT_THROW(nlohmann::json("green").get<Colour>(), Error);
  EXPECT_THROW(nlohmann::json(0).get<Colour>(), Error);  // never the enum's number
  EXPECT_EQ(fmt::format("[{}]", Colour::Red), "[red]");
}

}  // namespace
}  // namespace mk::test_enum

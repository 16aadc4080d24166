// common/json_schema: what validate() accepts and refuses, and the OpenAPI it derives.
#include "common/json_schema.h"

#include <gtest/gtest.h>

namespace mk::schema {
namespace {

using nlohmann::json;
using Type = Field::Type;

const Field kScore{.type = Type::Number};
const Schema kItem{{{.name = "id", .type = Type::Integer, .min = 1, .max = 9}}};
const Schema kDoc{
    {
        {.name = "name", .max_length = 8, .example = "web01"},
        {.name = "kind", .one_of = {"full", "incremental"}},
        {.name = "rate", .type = Type::Number, .required = false},
        {.name = "error", .required = true, .nullable = true},
        {.name = "items", .type = Type::Array, .required = false, .max_length = 2, .items = &kItem},
        {.name = "scores", .type = Type::Array, .required = false, .max_length = 3, .element = &kScore},
    },
    "Doc",
    "a test document"};

std::string field_of(const json& j) {
  try {
    validate(j, kDoc);
  } catch (const FieldError& e) {
    return e.field();
  }
  return "";
}

TEST(UnitJsonSchema, AcceptsAValidDocument) {
  EXPECT_EQ(field_of({{"name", "a"}, {"kind", "full"}, {"error", nullptr}, {"rate", 1.5},
                      {"items", {{{"id", 3}}}}, {"scores", {1, 2.5}}}),
            "");
}

TEST(UnitJsonSchema, NamesTheFieldThatIsWrong) {
  EXPECT_EQ(field_of({{"kind", "full"}, {"error", nullptr}}), "name");                         // missing
  EXPECT_EQ(field_of({{"name", "123456789"}, {"kind", "full"}, {"error", nullptr}}), "name");  // too long
  EXPECT_EQ(field_of({{"name", "a"}, {"kind", "other"}, {"error", nullptr}}), "kind");         // not one of
  EXPECT_EQ(field_of({{"name", "a"}, {"kind", "full"}}), "error");        // required even when nullable
  EXPECT_EQ(field_of({{"name", "a"}, {"kind", "full"}, {"error", nullptr}, {"rate", "x"}}), "rate");
  EXPECT_EQ(field_of({{"name", "a"}, {"kind", "full"}, {"error", nullptr}, {"items", {{{"id", 10}}}}}),
            "items[0].id");
  EXPECT_EQ(field_of({{"name", "a"}, {"kind", "full"}, {"error", nullptr}, {"scores", {1, "2"}}}), "scores[1]");
  EXPECT_EQ(field_of({{"name", "a"}, {"kind", "full"}, {"error", nullptr}, {"extra", 1}}), "extra");
  EXPECT_EQ(field_of({{"name", "a\n"}, {"kind", "full"}, {"error", nullptr}}), "name");  // control character
}

TEST(UnitJsonSchema, MultilineStringsTakeLineBreaksButNoOtherControlCharacters) {
  const Schema pem{{{.name = "pem", .max_length = 100, .multiline = true}}};
  EXPECT_NO_THROW(validate({{"pem", "-----BEGIN-----\r\nAAAA\n-----END-----\n"}}, pem));
  EXPECT_THROW(validate({{"pem", std::string("a\0b", 3)}}, pem), FieldError);
  EXPECT_THROW(validate({{"pem", "a\tb"}}, pem), FieldError);
}

TEST(UnitJsonSchema, ParseObjectRefusesDeepNestingAndNonObjects) {
  EXPECT_NO_THROW(parse_object(R"({"a": {"b": 1}})"));
  EXPECT_THROW(parse_object("[1]"), FieldError);
  EXPECT_THROW(parse_object("{"), FieldError);
  EXPECT_THROW(parse_object(R"({"a":[[[[[[[[[1]]]]]]]]]})"), FieldError);
  try {
    parse_object("nope", "answer");
    FAIL();
  } catch (const FieldError& e) {
    EXPECT_EQ(e.field(), "answer");
  }
}

TEST(UnitJsonSchema, OpenApiDescribesEveryField) {
  json s = to_openapi(kDoc);
  EXPECT_EQ(s["description"], "a test document");
  EXPECT_EQ(s["additionalProperties"], false);
  EXPECT_EQ(s["required"], json({"name", "kind", "error"}));
  EXPECT_EQ(s["properties"]["name"]["example"], "web01");
  EXPECT_EQ(s["properties"]["kind"]["enum"], json({"full", "incremental"}));
  EXPECT_EQ(s["properties"]["error"]["nullable"], true);
  EXPECT_EQ(s["properties"]["rate"]["type"], "number");
  EXPECT_EQ(s["properties"]["items"]["items"]["properties"]["id"]["maximum"], 9);
  EXPECT_EQ(s["properties"]["scores"]["items"]["type"], "number");
}

}  // namespace
}  // namespace mk::schema

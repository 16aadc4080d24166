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


// Replies: the shape is checked, not the limits that guard input.
const Schema kPart{{{.name = "id", .type = Type::Integer, .min = 1, .example = 7}}, "Part", "a part"};
const Schema kReply{
    {
        {.name = "message", .max_length = 4, .example = "all good"},
        {.name = "state", .one_of = {"up", "down"}},
        {.name = "part", .type = Type::Object, .items = &kPart},
        {.name = "spare", .type = Type::Object, .required = false, .items = &kPart, .nullable = true},
        {.name = "parts", .type = Type::Array, .max_length = 1, .items = &kPart},
        {.name = "extra", .type = Type::Object, .required = false},
    },
    "Reply"};

TEST(UnitJsonSchema, RepliesAreCheckedForShapeNotForInputLimits) {
  json r = {{"message", "two\nlines, longer than four bytes"}, {"state", "up"}, {"part", {{"id", 1}}},
            {"parts", {{{"id", 1}}, {{"id", 2}}}}, {"extra", {{"anything", {1, 2}}}}};
  EXPECT_NO_THROW(validate(r, kReply, "", Direction::Reply));
  EXPECT_THROW(validate(r, kReply), FieldError);  // as a request: too long, a line break, too many parts
  auto field = [&](json edit) {
    json v = r;
    v.merge_patch(edit);
    try {
      validate(v, kReply, "", Direction::Reply);
    } catch (const FieldError& e) {
      return e.field();
    }
    return std::string();
  };
  EXPECT_EQ(field({{"state", "sideways"}}), "state");
  EXPECT_EQ(field({{"part", {{"id", 0}}}}), "part.id");
  EXPECT_EQ(field({{"part", {{"name", "x"}}}}), "part.name");
  EXPECT_EQ(field({{"undeclared", 1}}), "undeclared");
  EXPECT_EQ(field({{"extra", 5}}), "extra");
  EXPECT_EQ(field({{"spare", {{"id", 2}}}}), "");
  EXPECT_EQ(field({{"message", 5}}), "message");
}

const Schema kUp{{{.name = "state", .one_of = {"up"}}, {.name = "since", .type = Type::Integer}}, "Up"};
const Schema kDown{{{.name = "state", .one_of = {"down"}}, {.name = "error", .example = "refused"}}, "Down"};
const Schema kUpOrDown{.name = "UpOrDown", .description = "a link", .one_of = {&kUp, &kDown}};

TEST(UnitJsonSchema, OneOfMatchesExactlyOneAlternative) {
  EXPECT_NO_THROW(validate(json{{"state", "up"}, {"since", 5}}, kUpOrDown, "", Direction::Reply));
  EXPECT_NO_THROW(validate(json{{"state", "down"}, {"error", "x"}}, kUpOrDown, "", Direction::Reply));
  try {
    validate(json{{"state", "down"}, {"since", 5}}, kUpOrDown, "link", Direction::Reply);
    FAIL();
  } catch (const FieldError& e) {
    EXPECT_EQ(e.field(), "link");
    EXPECT_NE(std::string(e.what()).find("Up:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Down:"), std::string::npos) << e.what();
  }
  const Schema kEither{.one_of = {&kUp, &kUp}};
  EXPECT_THROW(validate(json{{"state", "up"}, {"since", 5}}, kEither), FieldError);  // both match
}

TEST(UnitJsonSchema, ComponentsReferToNamedSchemasOnce) {
  Components c;
  json ref = c.describe(kReply, Direction::Reply);
  EXPECT_EQ(ref, json({{"$ref", "#/components/schemas/Reply"}}));
  const json& s = c.schemas();
  EXPECT_EQ(s["Reply"]["properties"]["part"], json({{"$ref", "#/components/schemas/Part"}}));
  EXPECT_EQ(s["Reply"]["properties"]["parts"]["items"], json({{"$ref", "#/components/schemas/Part"}}));
  // Nullable: inline (a $ref takes no siblings in OpenAPI 3.0).
  EXPECT_EQ(s["Reply"]["properties"]["spare"]["nullable"], true);
  EXPECT_EQ(s["Reply"]["properties"]["spare"]["properties"]["id"]["type"], "integer");
  EXPECT_EQ(s["Reply"]["properties"]["extra"], json({{"type", "object"}}));
  EXPECT_FALSE(s["Reply"]["properties"]["message"].contains("maxLength"));  // a reply
  EXPECT_EQ(s["Part"]["description"], "a part");
  EXPECT_EQ(c.describe(kPart, Direction::Reply), json({{"$ref", "#/components/schemas/Part"}}));
  EXPECT_THROW(c.describe(kPart, Direction::Request), Error);  // one schema, two directions
  const Schema kOtherPart{{{.name = "x", .type = Type::Boolean}}, "Part"};
  EXPECT_THROW(c.describe(kOtherPart, Direction::Reply), Error);  // two schemas, one name
  Components d;
  d.describe(kUpOrDown, Direction::Reply);
  EXPECT_EQ(d.schemas()["UpOrDown"]["oneOf"],
            json::array({{{"$ref", "#/components/schemas/Up"}}, {{"$ref", "#/components/schemas/Down"}}}));
}

TEST(UnitJsonSchema, ExamplesAreBuiltFromTheFieldsAndValidate) {
  json e = example(kReply);
  EXPECT_EQ(e["message"], "all good");
  EXPECT_EQ(e["state"], "up");
  EXPECT_EQ(e["part"], json({{"id", 7}}));
  EXPECT_EQ(e["parts"], json::array({{{"id", 7}}}));
  EXPECT_FALSE(e.contains("spare"));  // optional, no example of its own
  EXPECT_NO_THROW(validate(e, kReply, "", Direction::Reply));
  EXPECT_EQ(example(kUpOrDown), json({{"state", "up"}, {"since", 0}}));
  const Schema kNoExample{{{.name = "label"}}};
  EXPECT_THROW(example(kNoExample), Error);
}

}  // namespace
}  // namespace mk::schema

// What the OMA makes of CloudStack's answers when their fields have unexpected types:
// the reading never throws nlohmann's errors (which escaped as "[json.exception...]"
// instead of a message naming the command), it falls back or says what is wrong.
// Regression tests for inputs of the cloudstack_response and oma_config fuzz targets
// (fuzz/cloudstack_response.cpp, fuzz/oma_config.cpp).
#include <gtest/gtest.h>

#include "cloudstack/client.h"
#include "cloudstack/settings.h"
#include "cloudstack/volumes.h"

namespace mk::cloudstack {
namespace {

// From the fuzzer's seed of a paged listVolumes: "size" sent as text.
TEST(Answers, AVolumeWhoseSizeIsTextIsRead) {
  Volume v = volume_from_json(Json::parse(R"({"id":"x","size":"12"})"));
  EXPECT_EQ(v.id, "x");
  EXPECT_EQ(v.size_bytes, 12u);
}

TEST(Answers, AVolumeWithFieldsOfAnyTypeIsReadWithoutThrowing) {
  for (const char* text : {R"({"size":-5,"deviceid":1e300,"tags":{"key":"a"}})", R"({"size":true,"deviceid":"x"})",
                           R"({"size":1.5e300,"deviceid":4294967296,"tags":[1,"a",null]})", R"([1,2])", R"("volume")",
                           "null"}) {
    Volume v;
    ASSERT_NO_THROW(v = volume_from_json(Json::parse(text))) << text;
    EXPECT_EQ(v.device_id, -1) << text;
  }
  EXPECT_EQ(volume_from_json(Json::parse(R"({"size":-5})")).size_bytes, 0u);
}

TEST(Answers, AccessorsFallBackOnTheWrongType) {
  Json j = Json::parse(R"({"b":"TRUE","n":"no","o":[1],"a":{"x":1},"l":[{"id":"first"},{"id":"second"}]})");
  EXPECT_TRUE(json_bool(j, "b", false));
  EXPECT_TRUE(json_bool(j, "n", true));  // neither true nor false: the fallback
  EXPECT_TRUE(json_object(j, "o").empty());
  EXPECT_TRUE(json_array(j, "a").empty());
  EXPECT_EQ(json_text(json_first(j, "l"), "id"), "first");
  EXPECT_TRUE(json_first(j, "a").is_null());
  EXPECT_TRUE(json_first(Json::parse("[1]"), "l").is_null());
}

TEST(Answers, AnAnswerWithANumberTooLargeForADoubleIsAnError) {
  EXPECT_THROW(response_object("listZones", 200, R"({"listzonesresponse":{"count":1e999}})", "https://cs/client/api"),
               Error);
}

// A gateway's HTML page (seen in the soak when the simulator answers 503/504) is an
// outage to wait out, not a wrong API URL; a non-JSON 200 or 404 is the URL's fault.
TEST(Answers, AnErrorPageSaysWhetherToFixTheUrlOrWaitForCloudStack) {
  auto message = [](long status) {
    try {
      response_object("listVolumes", status, "<html>Gateway Timeout</html>", "https://cs/client/api");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  for (long status : {502L, 503L, 504L}) {
    EXPECT_NE(message(status).find("failing or restarting"), std::string::npos) << message(status);
    EXPECT_EQ(message(status).find("check that the API URL"), std::string::npos) << message(status);
  }
  for (long status : {200L, 404L}) {
    EXPECT_NE(message(status).find("check that the API URL ends in /client/api"), std::string::npos)
        << message(status);
  }
}

TEST(Answers, DamagedStoredSettingsSayWhatToDo) {
  auto open = [](const std::string& s) { return s; };
  for (const char* text : {R"([])", R"({"api_url":5})", R"({"network_ids":"net-1"})", R"({"network_ids":[1]})"}) {
    try {
      settings_from_json(Json::parse(text), open);
      ADD_FAILURE() << "accepted " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("save them again"), std::string::npos) << e.what();
    }
  }
  Settings s = settings_from_json(Json::parse(R"({"api_url":"https://cs","network_ids":["a","b"]})"), open);
  EXPECT_EQ(s.network_ids, (std::vector<std::string>{"a", "b"}));
}

}  // namespace
}  // namespace mk::cloudstack

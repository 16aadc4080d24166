// The API client against the CloudStack simulator: signatures, errors, async jobs
// (success, failure, time-out) and paging.
#include "cloudstack/client.h"

#include <gtest/gtest.h>

#include "sim_server.h"

namespace mk::cloudstack {
namespace {

using test::SimServer;
namespace seed = test::seed;

// A simulator that pages after 5 items and runs jobs at once.
test::SimOptions small_pages() {
  test::SimOptions o;
  o.job_delay_seconds = 0.0;
  o.max_page_size = 5;
  return o;
}

Params volume_params(const std::string& name) {
  return {{"name", name}, {"zoneid", seed::zone}, {"diskofferingid", seed::custom_disk_offering},
          {"size", "1"}};
}

TEST(Client, SignedGetAndPostAreAccepted) {
  SimServer sim;
  Client client(sim.endpoint(), SimServer::fast_client_options());
  Json zones = client.call("listZones");
  ASSERT_EQ(zones["zone"].size(), 1u);
  EXPECT_EQ(zones["zone"][0]["id"], seed::zone);
  // A value with spaces and reserved characters, sent by POST, is signed as the server
  // re-encodes it.
  Json job = client.call("createVolume", volume_params("vm one/disk 2000+x~*"), Method::Post);
  ASSERT_TRUE(job.contains("jobid"));
  Json result = client.wait_for_job("createVolume", job["jobid"]);
  EXPECT_EQ(result["volume"]["name"], "vm one/disk 2000+x~*");
  EXPECT_EQ(result["volume"]["id"], job["id"]);
}

TEST(Client, WrongSecretIsRefusedWith401AndTheCommandNamed) {
  SimServer sim;
  Endpoint bad = sim.endpoint();
  bad.secret_key += "x";
  Client client(bad, SimServer::fast_client_options());
  try {
    client.call("listZones");
    FAIL() << "a wrong signature was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.errorcode(), 401);
    EXPECT_EQ(e.command(), "listZones");
    EXPECT_NE(std::string(e.what()).find("unable to verify user credentials"), std::string::npos);
    EXPECT_EQ(std::string(e.what()).find(bad.secret_key), std::string::npos);
  }
}

TEST(Client, Errorcode431IsReportedWithCloudStacksText) {
  SimServer sim;
  Client client(sim.endpoint(), SimServer::fast_client_options());
  // A real refusal: a customised disk offering without a size.
  Params p = volume_params("x");
  p.erase("size");
  try {
    client.call_async("createVolume", p);
    FAIL() << "createVolume without size was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.errorcode(), 431);
    EXPECT_NE(e.errortext().find("custom size"), std::string::npos) << e.what();
    EXPECT_EQ(e.jobid(), "");
  }
  // An injected one in the middle of a sequence: the first call passes, the second fails.
  sim.fail({{"command", "listZones"}, {"how", "error"}, {"errorcode", 431}, {"skip", 1},
            {"errortext", "injected parameter error"}});
  EXPECT_NO_THROW(client.call("listZones"));
  try {
    client.call("listZones");
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.errorcode(), 431);
    EXPECT_EQ(e.errortext(), "injected parameter error");
  }
  EXPECT_NO_THROW(client.call("listZones"));
}

TEST(Client, FailedAsyncJobCarriesJobResultErrorText) {
  SimServer sim;
  Client client(sim.endpoint(), SimServer::fast_client_options());
  sim.fail({{"command", "createVolume"}, {"how", "job"}, {"errorcode", 530},
            {"errortext", "storage pool is full"}});
  try {
    client.call_async("createVolume", volume_params("v"));
    FAIL() << "a failed job was reported as success";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.errorcode(), 530);
    EXPECT_EQ(e.errortext(), "storage pool is full");
    EXPECT_FALSE(e.jobid().empty());
    EXPECT_NE(std::string(e.what()).find("createVolume"), std::string::npos);
  }
  // The job ran and failed: nothing was created.
  EXPECT_TRUE(sim.state()["volumes"].empty());
}

TEST(Client, JobThatNeverEndsTimesOutPerCommand) {
  SimServer sim;
  ClientOptions o = SimServer::fast_client_options();
  o.job_timeouts["createVolume"] = std::chrono::milliseconds(300);
  Client client(sim.endpoint(), o);
  sim.fail({{"command", "createVolume"}, {"how", "hang"}});
  try {
    client.call_async("createVolume", volume_params("v"));
    FAIL() << "a hung job did not time out";
  } catch (const ApiError& e) {
    FAIL() << "a time-out is not CloudStack's error: " << e.what();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("still running"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("createVolume"), std::string::npos) << e.what();
  }
  // Other commands keep the default timeout and succeed.
  EXPECT_NO_THROW(client.call_async("createVolume", volume_params("w")));
}

TEST(Client, ListPagesPastTheServersPageLimit) {
  SimServer sim(small_pages());
  ClientOptions o = SimServer::fast_client_options();
  o.page_size = 5;
  Client client(sim.endpoint(), o);
  for (int i = 0; i < 12; ++i) client.call_async("createVolume", volume_params("v" + std::to_string(i)));

  // Without paging the server silently stops at its limit; the count tells the truth.
  Json one = client.call("listVolumes");
  EXPECT_EQ(one["volume"].size(), 5u);
  EXPECT_EQ(one["count"], 12);

  std::vector<Json> all = client.list("listVolumes", "volume");
  ASSERT_EQ(all.size(), 12u);
  std::set<std::string> names;
  for (const auto& v : all) names.insert(v["name"].get<std::string>());
  EXPECT_EQ(names.size(), 12u);

  // An empty list (CloudStack omits the key) is an empty vector, not an error.
  EXPECT_TRUE(client.list("listSnapshots", "snapshot").empty());
}

TEST(Client, PageSizeOverTheLimitIsRefused) {
  SimServer sim(small_pages());
  ClientOptions o = SimServer::fast_client_options();
  o.page_size = 6;
  Client client(sim.endpoint(), o);
  try {
    client.list("listZones", "zone");
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.errorcode(), 431);
    EXPECT_NE(e.errortext().find("Page size"), std::string::npos);
  }
}

TEST(Client, WrongApiPathIsAnErrorNamingTheCommand) {
  SimServer sim;
  Endpoint e = sim.endpoint();
  e.api_url += "x";
  Client client(e, SimServer::fast_client_options());
  try {
    client.call("listZones");
    FAIL();
  } catch (const ApiError& err) {
    EXPECT_EQ(err.errorcode(), 404);
    EXPECT_EQ(err.command(), "listZones");
  }
}

TEST(Client, HttpsVerifiesTheServerCertificate) {
  test::SimOptions o;
  o.tls = true;
  SimServer sim(o);
  ClientOptions trusted = SimServer::fast_client_options();
  trusted.ca_file = sim.ca_file();
  Client client(sim.endpoint(), trusted);
  EXPECT_EQ(client.call_async("createVolume", volume_params("over-tls"))["volume"]["name"],
            "over-tls");
  // Without the CA the self-signed certificate is refused, never silently accepted.
  Client untrusting(sim.endpoint(), SimServer::fast_client_options());
  try {
    untrusting.call("listZones");
    FAIL() << "an unverified certificate was accepted";
  } catch (const ApiError&) {
    FAIL() << "not CloudStack's error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("listZones"), std::string::npos) << e.what();
  }
}

TEST(Client, UnreachableServerIsATransportErrorNamingTheCommand) {
  Client client(Endpoint{"http://127.0.0.1:1/client/api", "k", "s"},
                SimServer::fast_client_options());
  try {
    client.call("listZones");
    FAIL();
  } catch (const ApiError&) {
    FAIL() << "not CloudStack's error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("listZones"), std::string::npos);
  }
}

}  // namespace
}  // namespace mk::cloudstack

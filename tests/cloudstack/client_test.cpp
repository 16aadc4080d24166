// The API client against the CloudStack simulator: signatures, errors, async jobs
// (success, failure, time-out) and paging.
#include "cloudstack/client.h"

#include <gtest/gtest.h>

#include <set>

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

// Every request is signature version 3 with an expires a few minutes ahead; reads go by
// GET, everything that changes state by POST with a form-encoded body.
TEST(Client, SignatureVersion3ExpiresAndPostForStateChanges) {
  SimServer sim;
  Client client(sim.endpoint(), SimServer::fast_client_options());
  client.call("listZones");
  client.call_async("createVolume", volume_params("v3"));
  const Json st = sim.state();
  std::set<std::string> seen;
  for (const auto& c : st["calls"]) {
    std::string cmd = c["command"];
    seen.insert(cmd);
    EXPECT_EQ(c["params"].value("signatureversion", ""), "3") << cmd;
    std::string expires = c["params"].value("expires", "");
    EXPECT_EQ(expires.size(), 24u) << cmd << ": " << expires;  // 2030-01-01T00:00:00+0000
    EXPECT_TRUE(expires.ends_with("+0000")) << expires;
    bool read = cmd.starts_with("list") || cmd.starts_with("query");
    EXPECT_EQ(c["method"], read ? "GET" : "POST") << cmd;
  }
  EXPECT_TRUE(seen.count("createVolume") && seen.count("queryAsyncJobResult") && seen.count("listZones"));
  EXPECT_EQ(method_for("deployVirtualMachine"), Method::Post);
  EXPECT_EQ(method_for("listVolumes"), Method::Get);
}

// A server with enforce.post.requests.and.timestamps: the client's requests pass; a
// state change by GET, a request without expires, and a request past its expires do not.
TEST(Client, AServerThatEnforcesPostAndTimestampsAcceptsTheClient) {
  test::SimOptions o;
  o.enforce_post_and_expires = true;
  SimServer sim(o);
  Client client(sim.endpoint(), SimServer::fast_client_options());
  EXPECT_NO_THROW(client.call("listZones"));
  EXPECT_EQ(client.call_async("createVolume", volume_params("enforced"))["volume"]["name"], "enforced");
  try {
    client.call("createVolume", volume_params("by-get"), Method::Get);
    FAIL() << "a state change by GET was accepted";
  } catch (const ApiError& e) {
    EXPECT_NE(e.errortext().find("needs to be sent using POST"), std::string::npos) << e.what();
  }
  ClientOptions expired = SimServer::fast_client_options();
  expired.signature_lifetime = std::chrono::seconds(-60);
  try {
    Client(sim.endpoint(), expired).call("listZones");
    FAIL() << "an expired request was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.errorcode(), 401);
  }
  ClientOptions too_long = SimServer::fast_client_options();
  too_long.signature_lifetime = std::chrono::hours(1);
  EXPECT_THROW(Client(sim.endpoint(), too_long).call("listZones"), ApiError);
}

TEST(Client, HttpIsRefusedUnlessAllowedExplicitly) {
  ClientOptions o;
  try {
    Client(Endpoint{"http://cloud.example:8080/client/api", "k", "s"}, o);
    FAIL() << "an http:// API URL was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("https://"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Client(Endpoint{"ftp://cloud.example/client/api", "k", "s"}, o), UsageError);
  EXPECT_NO_THROW(Client(Endpoint{"https://cloud.example:8443/client/api", "k", "s"}, o));
  o.allow_insecure_http = true;
  EXPECT_NO_THROW(Client(Endpoint{"http://cloud.example:8080/client/api", "k", "s"}, o));
}

// A command the account may not run is errorcode 432 in an "errorresponse" object.
TEST(Client, AnUnavailableCommandIs432FromTheErrorResponse) {
  test::SimOptions o;
  o.deny_apis = {"addNicToVirtualMachine"};
  SimServer sim(o);
  Client client(sim.endpoint(), SimServer::fast_client_options());
  try {
    client.call("addNicToVirtualMachine", {{"virtualmachineid", sim.oma_vm_id()}, {"networkid", seed::test_network}});
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.errorcode(), 432);
    EXPECT_EQ(e.command(), "addNicToVirtualMachine");
    EXPECT_NE(e.errortext().find("not available"), std::string::npos) << e.what();
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


int count_calls(const SimServer& sim, const std::string& command) {
  int n = 0;
  const Json st = sim.state();
  for (const auto& call : st["calls"]) n += call["command"] == command;
  return n;
}

// queryAsyncJobResult failing is not the job failing: server errors (an errorcode 530
// answer, a proxy's 503 page, a dropped connection) are retried, and the job's own
// result comes back once a query gets through.
TEST(Client, QueryFailuresAreRetriedUntilTheJobsOwnResult) {
  SimServer sim;
  Client client(sim.endpoint(), SimServer::fast_client_options());
  sim.fail({{"command", "queryAsyncJobResult"}, {"how", "error"}, {"errorcode", 530},
            {"errortext", "database connection lost"}, {"count", 2}});
  sim.fail({{"command", "queryAsyncJobResult"}, {"how", "http"}, {"status", 503}});
  sim.fail({{"command", "queryAsyncJobResult"}, {"how", "drop"}});
  Json result = client.call_async("createVolume", volume_params("v"));
  EXPECT_FALSE(json_text(json_object(result, "volume"), "id").empty()) << result.dump();
  EXPECT_EQ(sim.state()["volumes"].size(), 1u);
  EXPECT_GE(count_calls(sim, "queryAsyncJobResult"), 5);  // four failed, one saw the end
}

// A query CloudStack refuses (431, 401) cannot pass by asking again, and says nothing
// of the job: the outcome is unknown at once, never reported as the command's failure,
// and the job goes on to complete.
TEST(Client, ARefusedQueryIsAnUnknownOutcomeNotAFailedJob) {
  SimServer sim;
  Client client(sim.endpoint(), SimServer::fast_client_options());
  sim.fail({{"command", "queryAsyncJobResult"}, {"how", "error"}, {"errorcode", 431},
            {"errortext", "Unable to execute API command queryasyncjobresult due to invalid value"}});
  std::string jobid;
  try {
    client.call_async("createVolume", volume_params("v"));
    FAIL() << "the job's end was reported although no query got through";
  } catch (const ApiError& e) {
    FAIL() << "the query's refusal reported as the command's failure: " << e.what();
  } catch (const JobOutcomeUnknown& e) {
    EXPECT_EQ(e.command(), "createVolume");
    ASSERT_FALSE(e.jobid().empty());
    std::string what = e.what();
    EXPECT_NE(what.find("the outcome of job " + e.jobid() + " is unknown"), std::string::npos) << what;
    EXPECT_NE(what.find("errorcode 431"), std::string::npos) << what;
    EXPECT_NE(what.find("may still complete"), std::string::npos) << what;
    jobid = e.jobid();
  }
  EXPECT_EQ(count_calls(sim, "queryAsyncJobResult"), 1) << "a refusal is not retried";
  // The job itself goes on to complete: the volume exists (a caller must look before it
  // retries).
  client.wait_for_job("createVolume", jobid);
  EXPECT_EQ(client.list("listVolumes", "volume", {{"name", "v"}}).size(), 1u);
}

// Queries that fail until the command's deadline: unknown, naming the job and the
// last failure. (How often they were retried depends on the machine's speed, so it is
// not counted here; QueryFailuresAreRetriedUntilTheJobsOwnResult shows the retries.)
TEST(Client, QueriesFailingUntilTheDeadlineAreAnUnknownOutcome) {
  SimServer sim;
  ClientOptions o = SimServer::fast_client_options();
  o.job_timeouts["createVolume"] = std::chrono::milliseconds(300);
  Client client(sim.endpoint(), o);
  sim.fail({{"command", "queryAsyncJobResult"}, {"how", "http"}, {"status", 502}, {"count", 1000000}});
  try {
    client.call_async("createVolume", volume_params("v"));
    FAIL() << "the job's end was reported although no query got through";
  } catch (const JobOutcomeUnknown& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("createVolume"), std::string::npos) << what;
    EXPECT_NE(what.find("HTTP 502"), std::string::npos) << what;
    EXPECT_NE(what.find("may still complete"), std::string::npos) << what;
  }
}

// A job that completes after the client gave up on it (it was pending at the deadline):
// the outcome is unknown, not failed, and what it made is there to be found.
TEST(Client, AJobThatEndsAfterTheClientGaveUpIsUnknownAndItsVolumeIsThere) {
  SimServer sim;
  ClientOptions o = SimServer::fast_client_options();
  o.job_timeouts["createVolume"] = std::chrono::milliseconds(300);
  Client client(sim.endpoint(), o);
  sim.fail({{"command", "createVolume"}, {"how", "late"}});
  std::string jobid;
  try {
    client.call_async("createVolume", volume_params("v"));
    FAIL() << "a job pending past the deadline was reported as ended";
  } catch (const JobOutcomeUnknown& e) {
    EXPECT_NE(std::string(e.what()).find("still running"), std::string::npos) << e.what();
    jobid = e.jobid();
  }
  EXPECT_TRUE(sim.state()["volumes"].empty());
  EXPECT_EQ(client.list("listVolumes", "volume", {{"name", "v"}}).size(), 1u);
  EXPECT_EQ(json_integer(client.call("queryAsyncJobResult", {{"jobid", jobid}}), "jobstatus", -1), 1);
}

}  // namespace
}  // namespace mk::cloudstack

// Bad input: each case exits with status 2, prints one line saying what is wrong, and
// leaves the target untouched (pre-filled with a pattern that must survive).
#include <regex>

#include "copy_fixture.h"

namespace mk::test {
namespace {

using mk::MiB;

class CopyArguments : public CopyTest {
 protected:
  void SetUp() override {
    source_ = make_disk("source.img", kSize, {{0, 1 * MiB}, {3 * MiB, 64 * 1024}});
    target_ = file("target.img");
    fill_at(target_, 0, kSize, '\x3c');
    target_sha_ = sha256_file(target_);
  }

  // Runs migratekit copy and checks the usage-error contract; returns stderr.
  std::string expect_usage_error(const std::string& source_uri, const std::string& target_uri,
                                 std::vector<std::string> extra) {
    RunResult r = copy(source_uri, target_uri, extra);
    EXPECT_EQ(r.exit_code, 2) << describe(r);
    EXPECT_EQ(r.err.rfind("migratekit: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "not one line: " << r.err;
    EXPECT_EQ(sha256_file(target_), target_sha_) << "the target was modified";
    return r.err;
  }

  std::string changed(const std::string& name, const std::string& json) {
    create_sparse_file(file(name), 0);  // the file may be reused: drop any longer old text
    write_at(file(name), 0, json);
    return file(name);
  }

  static constexpr uint64_t kSize = 4 * MiB;
  std::string source_, target_, target_sha_;
};

TEST_F(CopyArguments, UnknownUriScheme) {
  std::string err = expect_usage_error("http://127.0.0.1:10809/disk", serve(target_).uri(), {});
  EXPECT_NE(err.find("http://127.0.0.1:10809/disk"), std::string::npos) << err;
}

TEST_F(CopyArguments, ChangedAreasNotJson) {
  std::string path = changed("bad.json", "[{\"start\": 0, \"length\": ");
  std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(), {"--changed-areas", path});
  EXPECT_NE(err.find(path), std::string::npos) << err;
  EXPECT_NE(err.find("JSON"), std::string::npos) << err;
}

TEST_F(CopyArguments, ChangedAreasNegativeStart) {
  std::string path = changed("neg.json", R"([{"start": 0, "length": 4096}, {"start": -4096, "length": 4096}])");
  std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(), {"--changed-areas", path});
  EXPECT_NE(err.find("element 1"), std::string::npos) << err;
  EXPECT_NE(err.find("negative"), std::string::npos) << err;
}

TEST_F(CopyArguments, ChangedAreasMissingLength) {
  std::string path = changed("missing.json", R"([{"start": 4096}])");
  std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(), {"--changed-areas", path});
  EXPECT_NE(err.find("length"), std::string::npos) << err;
}

TEST_F(CopyArguments, ChangedAreasPastTheEndOfTheDisk) {
  std::string path = areas_file("oob.json", {{kSize - 10, 20}});
  std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(), {"--changed-areas", path});
  EXPECT_NE(err.find(path), std::string::npos) << err;
}

TEST_F(CopyArguments, ChangedAreasNotIntegers) {
  for (const char* json : {R"([{"start": 1.5, "length": 512}])", R"([{"start": "0", "length": 512}])",
                           R"([{"start": 0, "length": 18446744073709551616}])",
                           R"([{"start": 0, "length": 0}])", R"([{"start": 0, "length": 512, "extra": 1}])"}) {
    std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(),
                                         {"--changed-areas", changed("bad.json", json)});
    EXPECT_NE(err.find("element 0"), std::string::npos) << json << ": " << err;
  }
}

TEST_F(CopyArguments, ChangedAreasNotAnArray) {
  std::string path = changed("object.json", R"({"start": 0, "length": 512})");
  std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(), {"--changed-areas", path});
  EXPECT_NE(err.find("array"), std::string::npos) << err;
}

TEST_F(CopyArguments, ChangedAreaWhoseEndOverflows) {
  std::string path = changed("overflow.json", R"([{"start": 18446744073709551615, "length": 2}])");
  std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(), {"--changed-areas", path});
  EXPECT_NE(err.find("past the end"), std::string::npos) << err;
}

// The refusal of an overflowing area does not show a wrapped-around end.
TEST_F(CopyArguments, ChangedAreaOverflowMessageShowsNoWrappedEnd) {
  std::string path = changed("overflow.json", R"([{"start": 18446744073709551615, "length": 2}])");
  std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(), {"--changed-areas", path});
  std::smatch m;
  if (std::regex_search(err, m, std::regex(R"(\[(\d+), (\d+)\))"))) {
    EXPECT_GT(std::stod(m[2]), std::stod(m[1])) << "an area whose end is before its start: " << err;
  }
}

TEST_F(CopyArguments, BadTuningOptions) {
  for (std::vector<std::string> opts : {std::vector<std::string>{"--request-size", "1000"},
                                        {"--request-size", "64M"}, {"--request-size", "4X"},
                                        {"--requests", "0"}, {"--connections", "0"}}) {
    std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(), opts);
    EXPECT_NE(err.find(opts[0]), std::string::npos) << err;
  }
}

TEST_F(CopyArguments, ChangedAreasFileMissing) {
  std::string path = file("nosuch.json");
  std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(), {"--changed-areas", path});
  EXPECT_NE(err.find(path), std::string::npos) << err;
}

TEST_F(CopyArguments, TargetSmallerThanSource) {
  std::string small = file("small.img");
  fill_at(small, 0, kSize - 512, '\x3c');
  std::string small_sha = sha256_file(small);
  std::string err = expect_usage_error(serve(source_).uri(), serve(small).uri(), {});
  EXPECT_NE(err.find("smaller"), std::string::npos) << err;
  EXPECT_EQ(sha256_file(small), small_sha);
}

TEST_F(CopyArguments, ChangedAreasAndDirtyBitmapTogether) {
  std::string path = areas_file("areas.json", {{0, 4096}});
  std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(),
                                       {"--changed-areas", path, "--dirty-bitmap", "cbt"});
  EXPECT_NE(err.find("--changed-areas"), std::string::npos) << err;
  EXPECT_NE(err.find("--dirty-bitmap"), std::string::npos) << err;
}

TEST_F(CopyArguments, TlsKeyForAPlainUri) {
  std::string psk = make_psk_file(file("k.psk"), "vma");
  std::string err = expect_usage_error(serve(source_).uri(), serve(target_).uri(), {"--target-tls-psk", psk});
  EXPECT_NE(err.find("TLS"), std::string::npos) << err;
}

TEST_F(CopyArguments, ReadOnlyTarget) {
  std::string err = expect_usage_error(serve(source_).uri(), serve(target_, {.read_only = true}).uri(), {});
  EXPECT_NE(err.find("read-only"), std::string::npos) << err;
}

}  // namespace
}  // namespace mk::test

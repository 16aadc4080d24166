// Sealed secrets (issue 16, fix 3): a value opens only where it was sealed (its row and
// purpose are AES-GCM's associated data); migration 6 re-seals the unbound values of
// older OMAs (run on SQLite and MariaDB: repository_scenarios.h); the OMA refuses to
// start without the key its database's values were sealed with, saying what to restore;
// `oma --rotate-secrets-key` re-seals every value with a new key in one transaction, is
// finished or undone after a crash at any point, and refuses while the OMA runs.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "oma/crypto.h"
#include "oma/db/migrations.h"
#include "oma/db/sealed_values.h"
#include "common/subprocess.h"
#include "oma/errors.h"
#include "oma_process.h"
#include "oma_service.h"
#include "repository_scenarios.h"
#include "support/files.h"
#include "support/temp_dir.h"

namespace mk::oma::test {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A value as OMAs before migration 6 sealed it: "v1:" + base64(nonce | ct | tag), no AAD.
std::string seal_v1(const std::string& key_file, const std::string& plaintext) {
  std::string key = read_file(key_file);
  unsigned char nonce[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  std::string ct(plaintext.size(), '\0');
  unsigned char tag[16];
  int len = 0;
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), nullptr, reinterpret_cast<const unsigned char*>(key.data()), nonce);
  EVP_EncryptUpdate(c, reinterpret_cast<unsigned char*>(ct.data()), &len,
                    reinterpret_cast<const unsigned char*>(plaintext.data()), static_cast<int>(plaintext.size()));
  EVP_EncryptFinal_ex(c, nullptr, &len);
  EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag);
  EVP_CIPHER_CTX_free(c);
  std::string raw = std::string(reinterpret_cast<char*>(nonce), 12) + ct + std::string(reinterpret_cast<char*>(tag), 16);
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  out.resize(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                             reinterpret_cast<const unsigned char*>(raw.data()), static_cast<int>(raw.size())));
  return "v1:" + out;
}

TEST(SealedValues, AValueOpensOnlyForItsRowAndPurpose) {
  mk::test::TempDir dir("mk-oma-sealed");
  SecretBox box(dir.file("secrets.key"));
  std::string sealed = box.seal("token-a", seal_binding(kVmaTokenPurpose, "vma-a"));
  EXPECT_EQ(box.open(sealed, seal_binding(kVmaTokenPurpose, "vma-a")), "token-a");
  EXPECT_THROW(box.open(sealed, seal_binding(kVmaTokenPurpose, "vma-b")), Error);  // another row
  EXPECT_THROW(box.open(sealed, seal_binding(kVmaPskPurpose, "vma-a")), Error);    // another purpose
  EXPECT_THROW(box.open_unbound(sealed), Error);
  // An unbound (v1) value opens only through the migration's door.
  std::string old = seal_v1(dir.file("secrets.key"), "token-old");
  EXPECT_EQ(box.open_unbound(old), "token-old");
  EXPECT_THROW(box.open(old, seal_binding(kVmaTokenPurpose, "vma-a")), Error);
  EXPECT_EQ(box.key_id(), SecretBox::existing(dir.file("secrets.key")).key_id());
  EXPECT_NE(box.key_id(), SecretBox(dir.file("other.key")).key_id());
}

// Seeds values sealed the old way, runs migration 6 again and checks each is bound to
// its place: it opens there, not at another row.
void MigrationResealsUnboundValuesForTheirRows(db::Database& database, Repositories& r) {
  mk::test::TempDir dir("mk-oma-reseal");
  const std::string key = dir.file("secrets.key");
  SecretBox box(key);
  const int64_t now = now_ms();
  r.vmas.insert_pairing_code({"code-a", seal_v1(key, "code-token"), now, now + 60000, std::nullopt, std::nullopt,
                              seal_v1(key, "vma-x:psk")});
  database.exec("INSERT INTO vmas (vma_id, name, vcenter, ssh_public_key, state, tunnel_port, api_token_sealed, "
                "created_at, nbd_psk_sealed) VALUES ('vma-a', 'a', 'vc', 'ssh-ed25519 A', 'approved', 9081, ?, 0, ?)",
                {seal_v1(key, "token-a"), seal_v1(key, "vma-a:psk")});
  database.exec("INSERT INTO vmas (vma_id, name, vcenter, ssh_public_key, state, tunnel_port, api_token_sealed, "
                "created_at) VALUES ('vma-b', 'b', 'vc', 'ssh-ed25519 B', 'approved', 9082, ?, 0)",
                {seal_v1(key, "token-b")});
  r.config.put_setting("vcenter.password", seal_v1(key, "pw"), true);
  r.config.put_setting("cloudstack",
                       nlohmann::json{{"api_url", "http://cs"}, {"secret_key_sealed", seal_v1(key, "cs-secret")}}.dump(),
                       true);
  r.config.put_setting("cloudstack.url", "http://cs", false);
  database.exec("DELETE FROM schema_migrations WHERE version >= 6");  // 6 and what came after it
  database.exec("DELETE FROM settings WHERE name = ?", {std::string(kKeyIdSetting)});

  EXPECT_THROW(db::migrate(database), Error);  // values to re-seal and no key: refused, nothing changed
  EXPECT_EQ(db::schema_version(database), 5);
  int asked = 0;
  EXPECT_EQ(db::migrate(database, [&]() -> const SecretBox& { ++asked; return box; }),
            static_cast<int>(db::migrations().size()) - 5);
  EXPECT_EQ(asked, 1);

  VmaRecord a = r.vmas.get_vma("vma-a"), b = r.vmas.get_vma("vma-b");
  EXPECT_EQ(box.open(a.api_token_sealed, seal_binding(kVmaTokenPurpose, "vma-a")), "token-a");
  EXPECT_EQ(box.open(*a.nbd_psk_sealed, seal_binding(kVmaPskPurpose, "vma-a")), "vma-a:psk");
  EXPECT_EQ(box.open(b.api_token_sealed, seal_binding(kVmaTokenPurpose, "vma-b")), "token-b");
  EXPECT_THROW(box.open(a.api_token_sealed, seal_binding(kVmaTokenPurpose, "vma-b")), Error);  // moved: refused
  EXPECT_EQ(box.open(r.config.get_setting("vcenter.password")->value, seal_binding(kSettingPurpose, "vcenter.password")),
            "pw");
  auto cs = nlohmann::json::parse(r.config.get_setting("cloudstack")->value);
  EXPECT_EQ(cs["api_url"], "http://cs");
  EXPECT_EQ(box.open(cs["secret_key_sealed"], seal_binding(kSettingPurpose, "cloudstack.secret_key_sealed")),
            "cs-secret");
  EXPECT_EQ(r.config.get_setting("cloudstack.url")->value, "http://cs");
  EXPECT_EQ(r.config.get_setting(kKeyIdSetting)->value, box.key_id());
  // The pairing code's values moved to a VMA that enrols with it open there.
  VmaRecord in;
  in.vma_id = "vma-c";
  in.name = "c";
  VmaRecord c = r.vmas.enroll_vma("code-a", now, in, 9081, [&](const std::string& s, const std::string& from,
                                                                const std::string& to) {
    return box.seal(box.open(s, from), to);
  });
  EXPECT_EQ(box.open(c.api_token_sealed, seal_binding(kVmaTokenPurpose, "vma-c")), "code-token");
  EXPECT_EQ(box.open(*c.nbd_psk_sealed, seal_binding(kVmaPskPurpose, "vma-c")), "vma-x:psk");
  EXPECT_EQ(count_sealed_values(database), 9);  // 2 settings, 3 VMAs (5 values), 1 code (2)
}

// The key and the database belong together: a missing or different key file is a
// refusal while sealed values exist, naming the file to restore.
void ADatabaseWithSealedValuesRefusesAMissingOrOtherKey(db::Database& database, Repositories& r) {
  mk::test::TempDir dir("mk-oma-keycheck");
  const std::string key = dir.file("secrets.key");
  auto first = open_secrets_key(database, key);  // no sealed value yet: a new key
  EXPECT_TRUE(std::filesystem::exists(key));
  EXPECT_EQ(r.config.get_setting(kKeyIdSetting)->value, first->key_id());
  r.config.put_setting("vcenter.password", first->seal("pw", seal_binding(kSettingPurpose, "vcenter.password")), true);
  EXPECT_EQ(open_secrets_key(database, key)->key_id(), first->key_id());  // same key: fine

  std::filesystem::rename(key, dir.file("backup.key"));
  try {
    open_secrets_key(database, key);
    ADD_FAILURE() << "started without its key";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("is missing"), std::string::npos) << m;
    EXPECT_NE(m.find("restore " + key), std::string::npos) << m;
  }
  EXPECT_FALSE(std::filesystem::exists(key));  // no new key made over sealed values

  SecretBox other(key);  // another key in its place
  try {
    open_secrets_key(database, key);
    ADD_FAILURE() << "started with another key";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("is not the key that sealed"), std::string::npos) << m;
    EXPECT_NE(m.find(first->key_id()), std::string::npos) << m;
  }
  std::filesystem::rename(dir.file("backup.key"), key);
  EXPECT_EQ(open_secrets_key(database, key)->key_id(), first->key_id());
}

// One value of each kind, sealed with `box` where it is stored: two VMA columns, a whole
// setting and a JSON setting's field. Returns the (binding, plaintext) of each.
std::vector<std::pair<std::string, std::string>> seal_one_of_each(db::Database& database, Repositories& r,
                                                                   const SecretBox& box) {
  database.exec("INSERT INTO vmas (vma_id, name, vcenter, ssh_public_key, state, tunnel_port, api_token_sealed, "
                "created_at, nbd_psk_sealed) VALUES ('vma-r', 'r', 'vc', 'ssh-ed25519 R', 'approved', 9081, ?, 0, ?)",
                {box.seal("token-r", seal_binding(kVmaTokenPurpose, "vma-r")),
                 box.seal("vma-r:psk", seal_binding(kVmaPskPurpose, "vma-r"))});
  r.config.put_setting("vcenter.password", box.seal("pw", seal_binding(kSettingPurpose, "vcenter.password")), true);
  r.config.put_setting("cloudstack",
                       nlohmann::json{{"api_url", "https://cs"},
                                      {"secret_key_sealed",
                                       box.seal("cs-secret", seal_binding(kSettingPurpose, "cloudstack.secret_key_sealed"))}}
                           .dump(),
                       true);
  return {{seal_binding(kVmaTokenPurpose, "vma-r"), "token-r"},
          {seal_binding(kVmaPskPurpose, "vma-r"), "vma-r:psk"},
          {seal_binding(kSettingPurpose, "vcenter.password"), "pw"},
          {seal_binding(kSettingPurpose, "cloudstack.secret_key_sealed"), "cs-secret"}};
}

// Each sealed value as stored now, by binding.
std::map<std::string, std::string> stored_values(Repositories& r) {
  VmaRecord v = r.vmas.get_vma("vma-r");
  return {{seal_binding(kVmaTokenPurpose, "vma-r"), v.api_token_sealed},
          {seal_binding(kVmaPskPurpose, "vma-r"), v.nbd_psk_sealed.value_or("")},
          {seal_binding(kSettingPurpose, "vcenter.password"), r.config.get_setting("vcenter.password")->value},
          {seal_binding(kSettingPurpose, "cloudstack.secret_key_sealed"),
           nlohmann::json::parse(r.config.get_setting("cloudstack")->value)["secret_key_sealed"]}};
}

// Rotation: every value opens with the new key where it is stored and no longer with the
// old one; the database records the new key; the old key is kept as retired.
void RotationResealsEveryValueWithTheNewKey(db::Database& database, Repositories& r) {
  mk::test::TempDir dir("mk-oma-rotate");
  const std::string key = dir.file("secrets.key");
  auto old = open_secrets_key(database, key);
  auto plain = seal_one_of_each(database, r, *old);

  KeyRotation rot = rotate_secrets_key(database, key);
  EXPECT_EQ(rot.values, 4);
  EXPECT_NE(rot.key_id, old->key_id());
  EXPECT_EQ(r.config.get_setting(kKeyIdSetting)->value, rot.key_id);
  EXPECT_FALSE(std::filesystem::exists(key + ".next"));
  EXPECT_EQ(SecretBox::existing(rot.retired_key_file).key_id(), old->key_id());
  auto now = open_secrets_key(database, key);
  EXPECT_EQ(now->key_id(), rot.key_id);
  auto stored = stored_values(r);
  for (const auto& [binding, text] : plain) {
    EXPECT_EQ(now->open(stored[binding], binding), text) << binding;
    EXPECT_THROW(old->open(stored[binding], binding), Error) << binding;
  }
  EXPECT_EQ(r.config.get_setting("cloudstack.url"), std::nullopt);
  EXPECT_EQ(nlohmann::json::parse(r.config.get_setting("cloudstack")->value)["api_url"], "https://cs");
}

// A value that does not open with the key (altered in the database): the rotation is
// refused naming it, and nothing changed (the values, the key file, no next key left).
void ARotationThatCannotOpenAValueChangesNothing(db::Database& database, Repositories& r) {
  mk::test::TempDir dir("mk-oma-rotate-bad");
  const std::string key = dir.file("secrets.key");
  auto old = open_secrets_key(database, key);
  seal_one_of_each(database, r, *old);
  // The VMA's PSK sealed for another row: it does not open where it is.
  database.exec("UPDATE vmas SET nbd_psk_sealed = ? WHERE vma_id = 'vma-r'",
                {old->seal("x", seal_binding(kVmaPskPurpose, "vma-other"))});
  auto before = stored_values(r);
  EXPECT_THROW(rotate_secrets_key(database, key), Error);
  EXPECT_EQ(stored_values(r), before);
  EXPECT_EQ(r.config.get_setting(kKeyIdSetting)->value, old->key_id());
  EXPECT_EQ(SecretBox::existing(key).key_id(), old->key_id());
  EXPECT_FALSE(std::filesystem::exists(key + ".next"));
}

// A crash at each point of a rotation: before the commit the next key is forgotten and
// the old key stays; after the commit the files are renamed at the next open.
void ARotationStoppedByACrashIsFinishedOrForgotten(db::Database& database, Repositories& r) {
  mk::test::TempDir dir("mk-oma-rotate-crash");
  const std::string key = dir.file("secrets.key");
  auto old = open_secrets_key(database, key);
  auto plain = seal_one_of_each(database, r, *old);

  SecretBox stray(key + ".next");  // crashed before the commit: a next key, nothing re-sealed
  EXPECT_EQ(open_secrets_key(database, key)->key_id(), old->key_id());
  EXPECT_FALSE(std::filesystem::exists(key + ".next"));

  KeyRotation rot = rotate_secrets_key(database, key);
  // Put the files back as they were between the commit and the renames.
  std::filesystem::rename(key, key + ".next");
  std::filesystem::rename(rot.retired_key_file, key);
  auto now = open_secrets_key(database, key);
  EXPECT_EQ(now->key_id(), rot.key_id);
  EXPECT_EQ(SecretBox::existing(key).key_id(), rot.key_id);
  EXPECT_EQ(SecretBox::existing(rot.retired_key_file).key_id(), old->key_id());
  EXPECT_FALSE(std::filesystem::exists(key + ".next"));
  auto stored = stored_values(r);
  for (const auto& [binding, text] : plain) EXPECT_EQ(now->open(stored[binding], binding), text) << binding;
}

// The real binary: a secret stored, the key removed, the OMA refuses to start.
TEST(SealedValues, TheOmaRefusesToStartWithoutTheKeyOfItsSecrets) {
  mk::test::TempDir dir("mk-oma-nokey");
  std::string data = dir.file("data");
  {
    OmaProcess oma(data, "http://127.0.0.1:9", dir.file("oma1.log"));
    ApiClient api(oma.port, read_admin_token(data));
    ASSERT_EQ(api.put("/api/v1/settings/vcenter.password", R"({"value":"pw"})").status, 200);
    oma.process.stop();
  }
  std::filesystem::remove(data + "/secrets.key");
  try {
    OmaProcess oma(data, "http://127.0.0.1:9", dir.file("oma2.log"));
    ADD_FAILURE() << "the OMA started without the key of its secrets";
  } catch (const Error& e) {
    std::string log = read_file(dir.file("oma2.log"));
    EXPECT_NE(log.find("restore " + data + "/secrets.key"), std::string::npos) << log;
  }
  EXPECT_FALSE(std::filesystem::exists(data + "/secrets.key"));
}

std::string file_text(const std::string& path) { return read_file(path); }

// The real binary: the rotation is refused while the OMA runs on the data directory (as
// is a second OMA), works once it stopped, and the OMA starts with the new key and opens
// the secrets it stored before.
TEST(SealedValues, RotateSecretsKeyWithTheRealOma) {
  mk::test::TempDir dir("mk-oma-rotate-bin");
  std::string data = dir.file("data"), out, err = dir.file("rotate.err");
  {
    OmaProcess oma(data, "http://127.0.0.1:9", dir.file("oma1.log"));
    ApiClient api(oma.port, read_admin_token(data));
    ASSERT_EQ(api.put("/api/v1/settings/vcenter.password", R"({"value":"pw"})").status, 200);
    EXPECT_EQ(run_capture({OMA_BIN, "--data-dir", data, "--rotate-secrets-key"}, out, err), 1);
    EXPECT_NE(file_text(err).find("an OMA is running on " + data), std::string::npos) << file_text(err);
    EXPECT_THROW(OmaProcess(data, "http://127.0.0.1:9", dir.file("second.log")), Error);
    EXPECT_NE(file_text(dir.file("second.log")).find("another OMA is running"), std::string::npos)
        << file_text(dir.file("second.log"));
    oma.process.stop();
  }
  std::string old_key = file_text(data + "/secrets.key");
  ASSERT_EQ(run_capture({OMA_BIN, "--data-dir", data, "--rotate-secrets-key"}, out, err), 0) << file_text(err);
  EXPECT_NE(out.find("re-sealed"), std::string::npos) << out;
  EXPECT_NE(file_text(data + "/secrets.key"), old_key);

  OmaProcess again(data, "http://127.0.0.1:9", dir.file("oma2.log"));  // starts: the key matches
  again.process.stop();
  auto database = db::open_database("sqlite:" + data + "/oma.db");
  auto box = open_secrets_key(*database, data + "/secrets.key");
  auto rows = database->query("SELECT value FROM settings WHERE name = 'vcenter.password'");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(box->open(rows[0].str(0), seal_binding(kSettingPurpose, "vcenter.password")), "pw");
  for (const auto& text : {out, file_text(err), file_text(dir.file("oma2.log"))}) {
    EXPECT_EQ(text.find(old_key), std::string::npos);
    EXPECT_EQ(text.find("\"pw\""), std::string::npos);
  }
}

}  // namespace

Scenarios sealed_value_scenarios() {
  return {{"MigrationResealsUnboundValuesForTheirRows", MigrationResealsUnboundValuesForTheirRows},
          {"ADatabaseWithSealedValuesRefusesAMissingOrOtherKey", ADatabaseWithSealedValuesRefusesAMissingOrOtherKey},
          {"RotationResealsEveryValueWithTheNewKey", RotationResealsEveryValueWithTheNewKey},
          {"ARotationThatCannotOpenAValueChangesNothing", ARotationThatCannotOpenAValueChangesNothing},
          {"ARotationStoppedByACrashIsFinishedOrForgotten", ARotationStoppedByACrashIsFinishedOrForgotten}};
}

}  // namespace mk::oma::test

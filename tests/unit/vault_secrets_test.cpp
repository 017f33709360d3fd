// The vault over a real store: round trips, bindings, tampering, and the value never showing up
// anywhere it should not (listings, the store's bytes on disk, error messages).
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <thread>

#include "base/fs.h"
#include "store/database.h"
#include "support/raw_sqlite.h"
#include "support/temp_dir.h"
#include "vault/secret_box.h"
#include "vault/vault.h"

using namespace moat;
using namespace moat::vault;
using moat::testing::TempDir;

namespace {

using moat::testing::raw_exec;

constexpr std::string_view kValue = "sk-ant-api03-VALUE-7f3c9e1d2b4a-unique-marker";
constexpr std::string_view kOther = "ghp_OTHERVALUE-99aa88bb77cc-unique-marker";

// Tampering as an attacker with the sqlite3 shell would: a separate connection, no moat code.
void flip_ciphertext_bit(const std::filesystem::path& path, const std::string& name, size_t at) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT ciphertext FROM secrets WHERE name = ?", -1, &st, nullptr), SQLITE_OK);
  sqlite3_bind_text(st, 1, name.c_str(), -1, SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  std::string blob(static_cast<const char*>(sqlite3_column_blob(st, 0)), sqlite3_column_bytes(st, 0));
  sqlite3_finalize(st);
  ASSERT_GT(blob.size(), at);
  blob[at] ^= 1;
  ASSERT_EQ(sqlite3_prepare_v2(db, "UPDATE secrets SET ciphertext = ? WHERE name = ?", -1, &st, nullptr), SQLITE_OK);
  sqlite3_bind_blob(st, 1, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, name.c_str(), -1, SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

SecretBinding binding(std::vector<std::string> agents, std::vector<std::string> hosts, std::string header = "x-api-key: {}",
                      std::string env = "") {
  SecretBinding b;
  b.agents = std::move(agents);
  b.hosts = std::move(hosts);
  b.header = std::move(header);
  b.env = std::move(env);
  return b;
}

struct Fixture {
  TempDir dir{"moat-vault"};
  std::filesystem::path db_path = dir / "moat.db";
  std::filesystem::path key_path = dir / "vault.key";
  std::optional<Database> db;
  std::unique_ptr<Vault> vault;

  Fixture() { reopen(); }
  void reopen() {
    vault.reset();
    db.reset();
    db.emplace(std::move(Database::open(db_path).value()));
    auto v = Vault::open(*db, key_path);
    ASSERT_TRUE(v) << v.error().message;
    vault = std::move(*v);
  }
  void close() {
    vault.reset();
    db.reset();
  }
  void set_anthropic() {
    auto r = vault->set("ANTHROPIC_API_KEY", kValue,
                        binding({"coder"}, {"api.anthropic.com:443"}, "x-api-key: {}", "ANTHROPIC_API_KEY"));
    ASSERT_TRUE(r) << r.error().message;
  }
  // Every byte the store keeps on disk: the database, its WAL and its shared-memory index.
  std::string store_bytes() {
    std::string all;
    for (auto suffix : {"", "-wal", "-shm", "-journal"}) {
      auto p = db_path;
      p += suffix;
      if (auto b = read_file(p)) all += *b;
    }
    return all;
  }
};

}  // namespace

TEST(Vault, RoundTripAndReopen) {
  Fixture f;
  EXPECT_EQ(f.vault->key_file(), f.key_path);
  struct stat st {};
  ASSERT_EQ(stat(f.key_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600);

  auto r = f.vault->set("ANTHROPIC_API_KEY", kValue,
                        binding({"coder"}, {"api.anthropic.com:443"}, "x-api-key: {}", "ANTHROPIC_API_KEY"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->replaced);
  EXPECT_EQ(r->info.name, "ANTHROPIC_API_KEY");
  EXPECT_EQ(r->info.placeholder, "moat-placeholder-ANTHROPIC_API_KEY");
  EXPECT_GT(r->info.created_ms, 0);
  EXPECT_EQ(r->info.last_used_ms, 0);

  auto check = [&] {
    auto b = f.vault->bound_for("coder", "api.anthropic.com", 443);
    ASSERT_TRUE(b) << b.error().message;
    ASSERT_EQ(b->size(), 1u);
    EXPECT_EQ((*b)[0].name, "ANTHROPIC_API_KEY");
    EXPECT_EQ((*b)[0].value.view(), kValue);
    EXPECT_EQ((*b)[0].header.name, "x-api-key");
    EXPECT_EQ((*b)[0].header_value().view(), kValue);
    EXPECT_EQ((*b)[0].placeholder, "moat-placeholder-ANTHROPIC_API_KEY");
  };
  check();
  f.reopen();  // same key file, same store
  check();

  // Replacing keeps the creation time and swaps value and binding.
  auto created = f.vault->get("ANTHROPIC_API_KEY")->created_ms;
  auto r2 = f.vault->set("ANTHROPIC_API_KEY", kOther, binding({"*"}, {"api.anthropic.com"}, "Authorization: Bearer {}"));
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_TRUE(r2->replaced);
  EXPECT_EQ(r2->info.created_ms, created);
  auto b = f.vault->bound_for("anyone", "api.anthropic.com", 443);
  ASSERT_TRUE(b);
  ASSERT_EQ(b->size(), 1u);
  EXPECT_EQ((*b)[0].value.view(), kOther);
  EXPECT_EQ((*b)[0].header_value().view(), "Bearer " + std::string(kOther));
}

TEST(Vault, BindingsMatchOnlyTheirAgentsAndHosts) {
  Fixture f;
  f.set_anthropic();
  ASSERT_TRUE(f.vault->set("github", kOther,
                           binding({"*"}, {"api.github.com", "*.api.github.com:443"}, "Authorization: token {}",
                                   "GH_TOKEN")));
  auto names = [&](std::string_view agent, std::string_view host, uint16_t port) {
    std::vector<std::string> out;
    auto b = f.vault->bound_for(agent, host, port);
    EXPECT_TRUE(b) << b.error().message;
    for (auto& s : *b) out.push_back(s.name);
    EXPECT_EQ(f.vault->has_binding_for_host(agent, host, port), !out.empty());
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(names("coder", "api.anthropic.com", 443), V{"ANTHROPIC_API_KEY"});
  EXPECT_EQ(names("coder", "API.Anthropic.COM.", 443), V{"ANTHROPIC_API_KEY"});
  EXPECT_EQ(names("other", "api.anthropic.com", 443), V{});           // another agent
  EXPECT_EQ(names("coder", "api.anthropic.com", 80), V{});            // another port
  EXPECT_EQ(names("coder", "anthropic.com", 443), V{});               // another host
  EXPECT_EQ(names("coder", "api.anthropic.com.evil.net", 443), V{});  // suffix trick
  EXPECT_EQ(names("coder", "evil.net", 443), V{});
  EXPECT_EQ(names("other", "api.github.com", 443), V{"github"});
  EXPECT_EQ(names("other", "api.github.com", 1234), V{});  // no port in the binding means 443 only
  EXPECT_EQ(names("coder", "uploads.api.github.com", 443), V{"github"});
  EXPECT_EQ(names("coder", "github.com", 443), V{});
  EXPECT_EQ(names("coder", "uploads.api.github.com", 80), V{});

  using P = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(f.vault->placeholders_for("coder"),
            (P{{"ANTHROPIC_API_KEY", "moat-placeholder-ANTHROPIC_API_KEY"}, {"GH_TOKEN", "moat-placeholder-github"}}));
  EXPECT_EQ(f.vault->placeholders_for("other"), (P{{"GH_TOKEN", "moat-placeholder-github"}}));

  ASSERT_TRUE(f.vault->remove("github"));
  EXPECT_EQ(names("other", "api.github.com", 443), V{});
  auto gone = f.vault->remove("github");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().kind, ErrorKind::NotFound);
  EXPECT_NE(gone.error().message.find("moat secret ls"), std::string::npos);
  f.reopen();
  EXPECT_EQ(f.vault->list()->size(), 1u);
}

TEST(Vault, EnvVarCannotHoldTwoPlaceholdersForOneAgent) {
  Fixture f;
  ASSERT_TRUE(f.vault->set("a", kValue, binding({"x"}, {"a.example.com"}, "x-api-key: {}", "API_KEY")));
  // Disjoint agents may share a variable name.
  ASSERT_TRUE(f.vault->set("b", kOther, binding({"y"}, {"b.example.com"}, "x-api-key: {}", "API_KEY")));
  auto c = f.vault->set("c", kOther, binding({"*"}, {"c.example.com"}, "x-api-key: {}", "API_KEY"));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().kind, ErrorKind::Conflict);
  EXPECT_NE(c.error().message.find("--env API_KEY"), std::string::npos) << c.error().message;
  // Re-setting the same secret with the same variable is not a conflict with itself.
  EXPECT_TRUE(f.vault->set("a", kOther, binding({"x"}, {"a.example.com"}, "x-api-key: {}", "API_KEY")));
}

TEST(Vault, ListingsNeverContainTheValue) {
  Fixture f;
  f.set_anthropic();
  Json all = Json::array();
  auto listed = f.vault->list();
  ASSERT_TRUE(listed);
  for (auto& s : *listed) all.push_back(secret_info_to_json(s));
  std::string text = all.dump();
  EXPECT_EQ(text.find(kValue), std::string::npos) << text;
  EXPECT_NE(text.find("ANTHROPIC_API_KEY"), std::string::npos);
  EXPECT_NE(text.find("moat-placeholder-ANTHROPIC_API_KEY"), std::string::npos);
  EXPECT_NE(text.find("api.anthropic.com:443"), std::string::npos);
  EXPECT_EQ(secret_info_to_json(f.vault->get("ANTHROPIC_API_KEY").value()).dump().find(kValue), std::string::npos);
}

TEST(Vault, TheStoreOnDiskNeverContainsTheValue) {
  Fixture f;
  f.set_anthropic();
  ASSERT_TRUE(f.vault->set("other", kOther, binding({"*"}, {"x.example.com"})));
  f.vault->mark_used("other");
  ASSERT_TRUE(f.vault->flush_usage());
  std::string bytes = f.store_bytes();
  ASSERT_GT(bytes.size(), 0u);
  EXPECT_NE(bytes.find("api.anthropic.com"), std::string::npos);  // the search does see plain text
  EXPECT_EQ(bytes.find(kValue), std::string::npos);
  EXPECT_EQ(bytes.find(kOther), std::string::npos);
  // Also after a checkpoint folds the WAL into the main file, and after the value was replaced.
  ASSERT_TRUE(f.vault->set("other", "replacement-value-unique-marker", binding({"*"}, {"x.example.com"})));
  ASSERT_TRUE(f.db->exec("PRAGMA wal_checkpoint(TRUNCATE)"));
  bytes = f.store_bytes();
  EXPECT_EQ(bytes.find(kValue), std::string::npos);
  EXPECT_EQ(bytes.find(kOther), std::string::npos);
  EXPECT_EQ(bytes.find("replacement-value-unique-marker"), std::string::npos);
  // Nor is the key in the store.
  auto key = read_file(f.key_path).value();
  EXPECT_EQ(bytes.find(key), std::string::npos);
}

TEST(Vault, TamperedCiphertextGivesAClearErrorNotGarbage) {
  Fixture f;
  f.set_anthropic();
  f.close();
  flip_ciphertext_bit(f.db_path, "ANTHROPIC_API_KEY", 20);
  f.reopen();  // opening still works: other secrets stay usable
  auto b = f.vault->bound_for("coder", "api.anthropic.com", 443);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().kind, ErrorKind::Conflict);
  EXPECT_NE(b.error().message.find("ANTHROPIC_API_KEY"), std::string::npos) << b.error().message;
  EXPECT_NE(b.error().message.find("cannot be decrypted"), std::string::npos) << b.error().message;
  EXPECT_NE(b.error().message.find("moat secret set"), std::string::npos) << b.error().message;
  EXPECT_EQ(b.error().message.find(kValue), std::string::npos);
  // The listing is unaffected, and setting it again repairs it.
  EXPECT_EQ(f.vault->list()->size(), 1u);
  f.set_anthropic();
  EXPECT_TRUE(f.vault->bound_for("coder", "api.anthropic.com", 443));
}

TEST(Vault, RowSwapsAndWidenedBindingsAreDetected) {
  Fixture f;
  f.set_anthropic();
  ASSERT_TRUE(f.vault->set("decoy", kOther, binding({"*"}, {"decoy.example.com"})));
  f.close();
  // Widen the binding in the store: the credential must not follow it to another host.
  raw_exec(f.db_path,
           "UPDATE secrets SET binding_json = "
           "'{\"agents\":[\"*\"],\"env\":\"\",\"header\":\"x-api-key: {}\",\"hosts\":[\"evil.example.net\"]}' "
           "WHERE name = 'ANTHROPIC_API_KEY'");
  f.reopen();
  auto b = f.vault->bound_for("anyone", "evil.example.net", 443);
  ASSERT_FALSE(b);
  EXPECT_NE(b.error().message.find("altered"), std::string::npos) << b.error().message;
  EXPECT_EQ(b.error().message.find(kValue), std::string::npos);
  f.close();
  // Move the decoy's sealed value under another name.
  raw_exec(f.db_path,
           "UPDATE secrets SET (nonce, ciphertext) = (SELECT nonce, ciphertext FROM secrets WHERE name = 'decoy') "
           "WHERE name = 'ANTHROPIC_API_KEY'");
  f.reopen();
  b = f.vault->bound_for("anyone", "evil.example.net", 443);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().message.find(kOther), std::string::npos);
}

TEST(Vault, WrongKeyFileIsAClearError) {
  Fixture f;
  f.set_anthropic();
  f.close();
  std::filesystem::remove(f.key_path);
  ASSERT_TRUE(create_key_file(f.key_path));  // a different random key
  f.reopen();
  auto b = f.vault->bound_for("coder", "api.anthropic.com", 443);
  ASSERT_FALSE(b);
  EXPECT_NE(b.error().message.find(f.key_path.string()), std::string::npos) << b.error().message;
}

TEST(Vault, MissingKeyWithSecretsStoredIsRefusedNotReplaced) {
  Fixture f;
  f.set_anthropic();
  f.close();
  std::filesystem::remove(f.key_path);
  auto db = Database::open(f.db_path).value();
  auto v = Vault::open(db, f.key_path);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().kind, ErrorKind::Conflict);
  EXPECT_NE(v.error().message.find(f.key_path.string()), std::string::npos) << v.error().message;
  EXPECT_NE(v.error().message.find("1 secret"), std::string::npos) << v.error().message;
  EXPECT_FALSE(std::filesystem::exists(f.key_path));
}

TEST(Vault, KeyReadableByOthersIsRefused) {
  Fixture f;
  f.close();
  ASSERT_EQ(chmod(f.key_path.c_str(), 0644), 0);
  auto db = Database::open(f.db_path).value();
  auto v = Vault::open(db, f.key_path);
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().message.find(f.key_path.string()), std::string::npos) << v.error().message;
  EXPECT_NE(v.error().message.find("chmod 600"), std::string::npos) << v.error().message;
}

TEST(Vault, BadInputIsRefusedWithoutTouchingTheStore) {
  Fixture f;
  auto bad_name = f.vault->set("no spaces", kValue, binding({"*"}, {"a.example.com"}));
  ASSERT_FALSE(bad_name);
  EXPECT_EQ(bad_name.error().kind, ErrorKind::InvalidInput);
  auto bad_value = f.vault->set("k", std::string(kValue) + "\r\nX-Injected: 1", binding({"*"}, {"a.example.com"}));
  ASSERT_FALSE(bad_value);
  EXPECT_EQ(bad_value.error().message.find(kValue), std::string::npos);
  EXPECT_FALSE(f.vault->set("k", "", binding({"*"}, {"a.example.com"})));
  EXPECT_FALSE(f.vault->set("k", kValue, binding({"*"}, {})));
  EXPECT_FALSE(f.vault->set("k", kValue, binding({"*"}, {"*"})));
  EXPECT_FALSE(f.vault->set("k", kValue, binding({"*"}, {"a.example.com"}, "x-api-key: nothing")));
  EXPECT_TRUE(f.vault->list()->empty());
  EXPECT_EQ(f.db->query_int64("SELECT count(*) FROM secrets").value(), 0);
}

TEST(Vault, LastUseIsCheapAndFlushedInBatches) {
  Fixture f;
  f.set_anthropic();
  EXPECT_EQ(f.vault->flush_usage().value(), 0u);
  f.vault->mark_used("ANTHROPIC_API_KEY");
  f.vault->mark_used("ANTHROPIC_API_KEY");
  f.vault->mark_used("no-such-secret");  // ignored
  auto shown = f.vault->get("ANTHROPIC_API_KEY")->last_used_ms;
  EXPECT_GT(shown, 0);  // visible at once in listings
  EXPECT_EQ(f.db->query_int64("SELECT last_used_at_ms FROM secrets").value(), 0);  // not yet written
  EXPECT_EQ(f.vault->flush_usage().value(), 1u);
  EXPECT_EQ(f.db->query_int64("SELECT last_used_at_ms FROM secrets").value(), shown);
  EXPECT_EQ(f.vault->flush_usage().value(), 0u);
  f.reopen();
  EXPECT_EQ(f.vault->get("ANTHROPIC_API_KEY")->last_used_ms, shown);
}

TEST(Vault, ConcurrentUse) {
  Fixture f;
  f.set_anthropic();
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      while (!stop) {
        auto b = f.vault->bound_for("coder", "api.anthropic.com", 443);
        if (!b || b->size() != 1 || (*b)[0].value.view() != kValue) ++bad;
        f.vault->mark_used("ANTHROPIC_API_KEY");
        (void)f.vault->has_binding_for_host("coder", "x.example.com", 443);
      }
    });
  }
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(f.vault->set(fmt::format("s{}", i), kOther, binding({"*"}, {"x.example.com"})));
    ASSERT_TRUE(f.vault->flush_usage());
    if (i % 2) {
      ASSERT_TRUE(f.vault->remove(fmt::format("s{}", i)));
    }
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(f.vault->list()->size(), 26u);
}

// A decrypted value lives in sodium_malloc'd memory: locked against swap (VmLck grows while it
// exists), marked to be left out of core dumps (VmFlags "dd" on its mapping), and freed with it.
TEST(SecretValue, LivesInLockedMemoryLeftOutOfCoreDumps) {
  auto status_kib = [](std::string_view field) -> long {
    auto text = read_file("/proc/self/status");
    if (!text) return -1;
    auto at = text->find(std::string(field) + ":");
    return at == std::string::npos ? -1 : std::stol(text->substr(at + field.size() + 1));
  };
  // The VmFlags of the mapping that holds `p`, from /proc/self/smaps.
  auto vm_flags_of = [](const void* p) -> std::string {
    auto smaps = read_file("/proc/self/smaps");
    if (!smaps) return "";
    auto addr = reinterpret_cast<uintptr_t>(p);
    bool inside = false;
    size_t at = 0;
    while (at < smaps->size()) {
      auto nl = smaps->find('\n', at);
      if (nl == std::string::npos) nl = smaps->size();
      std::string_view line(smaps->data() + at, nl - at);
      at = nl + 1;
      if (auto dash = line.find('-'); dash != std::string_view::npos && dash < 17 && line.find(' ') > dash) {
        uintptr_t lo = std::stoull(std::string(line.substr(0, dash)), nullptr, 16);
        uintptr_t hi = std::stoull(std::string(line.substr(dash + 1, line.find(' ') - dash - 1)), nullptr, 16);
        inside = lo <= addr && addr < hi;
      } else if (inside && line.starts_with("VmFlags:")) {
        return std::string(line.substr(8));
      }
    }
    return "";
  };
  long before = status_kib("VmLck");
  ASSERT_GE(before, 0);
  {
    SecretValue v(std::string_view("sk-ant-not-a-real-key"));
    EXPECT_EQ(v.view(), "sk-ant-not-a-real-key");
    if (geteuid() == 0) {  // unprivileged, mlock may be refused by RLIMIT_MEMLOCK (sodium carries on)
      EXPECT_GT(status_kib("VmLck"), before) << "the value's page is not locked";
    }
    auto flags = vm_flags_of(v.view().data());
    EXPECT_NE(flags.find(" dd"), std::string::npos) << "VmFlags:" << flags;
    SecretValue moved = std::move(v);
    EXPECT_TRUE(v.empty());
    EXPECT_EQ(moved.view(), "sk-ant-not-a-real-key");
    EXPECT_EQ(moved.clone().view(), "sk-ant-not-a-real-key");
  }
  EXPECT_EQ(status_kib("VmLck"), before);
}

// A binding stored before "no port" meant 443 (it matched every port) is re-sealed once with the port
// it now means, and the change is said (moatd logs and audits migrations()). The row is written as an
// older moat wrote it: the value sealed with its name and binding, in the vault's documented layout.
TEST(Vault, ABindingWithoutAPortIsMigratedToPort443OnceAndVisibly) {
  Fixture f;
  f.set_anthropic();
  f.close();
  std::string binding_json = R"({"agents":["*"],"env":"","header":"x-api-key: {}","hosts":["api.example.com"]})";
  std::string name = "OLD_KEY";
  std::string plain;
  plain += static_cast<char>(name.size());
  plain += name;
  for (int i = 0; i < 4; ++i) plain += static_cast<char>((binding_json.size() >> (8 * i)) & 0xff);
  plain += binding_json;
  plain += kOther;
  auto key = load_key_file(f.key_path);
  ASSERT_TRUE(key) << key.error().message;
  auto sealed = seal(*key, plain);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(f.db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "INSERT INTO secrets(name, nonce, ciphertext, binding_json, created_at_ms, updated_at_ms) "
                                   "VALUES(?, ?, ?, ?, 1, 1)", -1, &st, nullptr),
            SQLITE_OK);
  sqlite3_bind_text(st, 1, name.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_blob(st, 2, sealed.nonce.data(), static_cast<int>(sealed.nonce.size()), SQLITE_TRANSIENT);
  sqlite3_bind_blob(st, 3, sealed.ciphertext.data(), static_cast<int>(sealed.ciphertext.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 4, binding_json.c_str(), -1, SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  sqlite3_close(db);

  f.reopen();
  ASSERT_EQ(f.vault->migrations().size(), 1u);
  EXPECT_NE(f.vault->migrations()[0].find("OLD_KEY"), std::string::npos) << f.vault->migrations()[0];
  EXPECT_NE(f.vault->migrations()[0].find("api.example.com:443"), std::string::npos) << f.vault->migrations()[0];
  auto on443 = f.vault->bound_for("any", "api.example.com", 443);
  ASSERT_TRUE(on443);
  ASSERT_EQ(on443->size(), 1u);
  EXPECT_EQ((*on443)[0].header_value().view(), kOther);  // the value survived the re-seal
  EXPECT_TRUE(f.vault->bound_for("any", "api.example.com", 8080)->empty());
  // Once: the row now says what it means.
  f.reopen();
  EXPECT_TRUE(f.vault->migrations().empty());
  EXPECT_EQ(f.vault->get("OLD_KEY")->binding.hosts, std::vector<std::string>{"api.example.com:443"});
}

// A channel's bot token (Telegram's) is moatd's own: it cannot be bound to an agent, a host or an env
// var, the gateway's lookups never return it for any agent or host, an egress secret cannot stand in
// for it, and a row edited in the store to make it injectable fails to open.
TEST(Vault, AChannelTokenIsNeverBoundToASandboxsEgress) {
  Fixture f;
  constexpr std::string_view kToken = "123456:AAH-channel-token-unique-marker";
  SecretBinding channel;
  channel.use = SecretUse::Channel;
  // Trying to give it a destination, an agent or a placeholder in a sandbox is refused outright.
  for (auto bad : {binding({"*"}, {"api.telegram.org"}), binding({"coder"}, {}), binding({"*"}, {}, "x: {}", "TG_TOKEN")}) {
    bad.use = SecretUse::Channel;
    auto r = f.vault->set("tg-bot", kToken, bad);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("never injected into a sandbox's traffic"), std::string::npos) << r.error().message;
  }
  ASSERT_TRUE(f.vault->set("tg-bot", kToken, channel));
  f.set_anthropic();
  for (auto agent : {"coder", "*", "anyone"}) {
    EXPECT_FALSE(f.vault->has_binding_for_host(agent, "api.telegram.org", 443));
    auto b = f.vault->bound_for(agent, "api.telegram.org", 443);
    ASSERT_TRUE(b);
    EXPECT_TRUE(b->empty());
    for (auto& [env, placeholder] : f.vault->placeholders_for(agent)) EXPECT_NE(placeholder, placeholder_for("tg-bot"));
  }
  // moatd reads it as a channel token; an egress secret is refused as one.
  auto token = f.vault->channel_secret("tg-bot");
  ASSERT_TRUE(token) << token.error().message;
  EXPECT_EQ(token->view(), kToken);
  auto egress = f.vault->channel_secret("ANTHROPIC_API_KEY");
  ASSERT_FALSE(egress);
  EXPECT_NE(egress.error().message.find("not a channel token"), std::string::npos) << egress.error().message;
  EXPECT_EQ(f.vault->channel_secret("missing").error().kind, ErrorKind::NotFound);
  // It survives a reopen as a channel secret.
  f.reopen();
  EXPECT_TRUE(f.vault->channel_secret("tg-bot"));
  EXPECT_TRUE(f.vault->bound_for("coder", "api.telegram.org", 443)->empty());
  // Someone with the store rewrites its binding into an egress one for every agent: it no longer opens,
  // for the gateway or for moatd.
  f.close();
  raw_exec(f.db_path,
           "UPDATE secrets SET binding_json = "
           "'{\"agents\":[\"*\"],\"env\":\"\",\"header\":\"Authorization: Bearer {}\",\"hosts\":[\"api.telegram.org:443\"]}' "
           "WHERE name = 'tg-bot'");
  f.reopen();
  auto widened = f.vault->bound_for("coder", "api.telegram.org", 443);
  ASSERT_FALSE(widened);
  EXPECT_NE(widened.error().message.find("altered"), std::string::npos) << widened.error().message;
  EXPECT_EQ(widened.error().message.find(kToken), std::string::npos);
}

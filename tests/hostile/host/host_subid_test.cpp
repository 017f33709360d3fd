// Subordinate ids: a local user whose /etc/subuid range covers a sandbox's host ids can become that
// sandbox's root with newuidmap (as `podman unshare` does) and write its files, replace its sockets,
// signal its processes. moat gives sandboxes ids from a region of its own, registered in /etc/subuid
// and /etc/subgid ("moat:<first>:<count>") where Debian's useradd allocates around it, refuses to
// start a sandbox whose ids someone else holds (naming the entry), and moves an older sandbox into
// its region with `moat sandbox migrate-ids`. The users and entries the test makes are removed, and
// /etc/subuid and /etc/subgid are put back as they were.
#include <pwd.h>
#include <sys/stat.h>

#include <fstream>

#include "base/fs.h"
#include "base/json.h"
#include "base/subprocess.h"
#include "sandbox/id_ranges.h"
#include "support/hostile_sandbox.h"
#include "support/temp_dir.h"

using namespace moat;
using namespace moat::testing;
namespace fs = std::filesystem;

namespace {

// Keeps /etc/subuid and /etc/subgid as they were before the test, and a user made with useradd as a
// Debian administrator would (so it gets its own subordinate range).
class EtcGuard {
 public:
  EtcGuard() {
    for (auto f : {"/etc/subuid", "/etc/subgid"}) saved_.emplace_back(f, read_file(f).value_or(""));
  }
  ~EtcGuard() { restore(); }
  EtcGuard(const EtcGuard&) = delete;
  EtcGuard& operator=(const EtcGuard&) = delete;
  void restore() {
    for (auto& u : users_) (void)run_process({"userdel", u});
    users_.clear();
    for (auto& [path, text] : saved_) (void)write_file_atomic(path, text, 0644);
  }
  void add_user(const std::string& name) {
    (void)run_process({"userdel", name});
    auto r = run_process({"useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name});
    ASSERT_TRUE(r && r->ok()) << (r ? r->err : r.error().message);
    users_.push_back(name);
  }
  static void append(const std::string& path, const std::string& line) { std::ofstream(path, std::ios::app) << line << "\n"; }

 private:
  std::vector<std::pair<std::string, std::string>> saved_;
  std::vector<std::string> users_;
};

// The user's own subordinate uid range from /etc/subuid.
std::pair<int64_t, int64_t> subuid_of(const std::string& user) {
  auto text = read_file("/etc/subuid").value_or("");
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(user + ":", 0) != 0) continue;
    auto a = line.find(':'), b = line.find(':', a + 1);
    return {std::stoll(line.substr(a + 1, b - a - 1)), std::stoll(line.substr(b + 1))};
  }
  return {0, 0};
}

// As `user`, asks newuidmap/newgidmap (through util-linux unshare) to map `outer` as root of a new user
// namespace, and reports what that root is. Success means the user can act as host uid `outer`.
CliResult map_as_root(const std::string& user, int64_t outer) {
  auto map = fmt::format("{},0,1", outer);
  auto r = run_process({"runuser", "-u", user, "--", "unshare", "--user", "--map-users=" + map, "--map-groups=" + map,
                        "sh", "-c", "id -u"});
  if (!r) return {1, "", r.error().message};
  return {r->exit_code, r->out, r->err};
}

int64_t uid_base_of(const MoatEnv& env, const std::string& sandbox) {
  return Json::parse(env.ok({"--json", "sandbox", "inspect", sandbox}))["uid_base"].get<int64_t>();
}

class HostileSubordinateIds : public HostileSandbox {};

TEST_P(HostileSubordinateIds, NewSandboxesLiveInMoatsOwnRegionWhichNoUserCanMap) {
  EtcGuard etc;
  for (auto f : {"/etc/subuid", "/etc/subgid"}) {
    auto text = read_file(f).value_or("");
    EXPECT_NE(text.find(fmt::format("moat:{}:{}", kIdRegionFirst, kIdRegionCount)), std::string::npos) << f << ":\n" << text;
  }
  int64_t base = uid_base_of(*env_, "box");
  EXPECT_GE(base, kIdRegionFirst);
  // Two users as Debian makes them: each gets 65,536 subordinate ids, allocated around moat's entry.
  auto a = fmt::format("moat-sub-a{}", getpid() % 10000), b = fmt::format("moat-sub-b{}", getpid() % 10000);
  etc.add_user(a);
  etc.add_user(b);
  auto [first, count] = subuid_of(b);
  ASSERT_GT(count, 0) << "useradd gave " << b << " no subordinate ids";
  EXPECT_TRUE(first + count <= kIdRegionFirst || first >= kIdRegionFirst + kIdRegionCount) << first;

  // The user can map its own range (the tool works) but not the sandbox's root.
  auto own = map_as_root(b, first);
  report_.add("host user", "newuidmap: map its own subordinate range as root (control)", own.code == 0 ? "mapped" : own.err,
              true);
  ASSERT_EQ(own.code, 0) << own.err;
  auto theirs = map_as_root(b, base);
  auto outcome = theirs.code == 0 ? fmt::format("MAPPED: became host uid {}", base) : "denied: " + theirs.err.substr(0, 160);
  report_.add("host user", "newuidmap: map the sandbox's root (its host uid) as root of a new user namespace", outcome,
              theirs.code != 0);
}

TEST_P(HostileSubordinateIds, AnOlderSandboxOverlappingAUsersRangeIsRefusedThenMovedIntoTheRegion) {
  EtcGuard etc;
  // A sandbox as moat made them before its id region: created, then given a legacy base before its
  // first start lays out its disk with that owner.
  env_->ok({"sandbox", "create", "old"});
  env_->stop_daemon();
  auto sql = run_process({"sqlite3", "-cmd", ".timeout 10000", env_->db_path().string(),
                          fmt::format("UPDATE sandboxes SET uid_base = {} WHERE name = 'old'", kUidBaseFirst)});
  ASSERT_TRUE(sql && sql->ok()) << (sql ? sql->err : sql.error().message);
  env_->start_daemon();
  env_->ok({"sandbox", "start", "old"});
  env_->ok({"exec", "old", "--", "sh", "-c",
            "echo kept > /workspace/notes.txt && chown 1000:1000 /workspace/notes.txt && "
            "cp /bin/busybox /workspace/suid && chmod 4755 /workspace/suid"});
  auto before = env_->ok({"exec", "old", "--", "stat", "-c", "%u:%g %a", "/workspace/notes.txt", "/workspace/suid"});
  env_->ok({"sandbox", "stop", "old"});

  // A user with a Debian-style range that covers the old sandbox's root (as the second useradd'ed
  // user on Debian gets 165536-231071).
  auto user = fmt::format("moat-sub-c{}", getpid() % 10000);
  etc.add_user(user);
  EtcGuard::append("/etc/subuid", fmt::format("{}:165536:65536", user));
  EtcGuard::append("/etc/subgid", fmt::format("{}:165536:65536", user));
  auto refused = env_->moat({"sandbox", "start", "old"});
  EXPECT_NE(refused.code, 0);
  EXPECT_NE(refused.err.find(fmt::format("{}:165536:65536", user)), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("moat sandbox migrate-ids old"), std::string::npos) << refused.err;
  report_.add("host user", "start a sandbox whose host ids a user's subordinate range covers",
              refused.code != 0 ? "refused: " + refused.err.substr(0, 200) : "STARTED", refused.code != 0);

  // Moved into the region: a new range, the files re-owned inside-out the same, setuid kept.
  auto moved = env_->moat({"sandbox", "migrate-ids", "old"});
  ASSERT_EQ(moved.code, 0) << moved.err;
  EXPECT_NE(moved.err.find("moving sandbox 'old'"), std::string::npos) << moved.err;  // progress
  EXPECT_GE(uid_base_of(*env_, "old"), kIdRegionFirst);
  env_->ok({"sandbox", "start", "old"});
  EXPECT_EQ(env_->ok({"exec", "old", "--", "stat", "-c", "%u:%g %a", "/workspace/notes.txt", "/workspace/suid"}), before);
  EXPECT_EQ(env_->ok({"exec", "old", "--", "cat", "/workspace/notes.txt"}), "kept\n");
  // Nothing on its disk is left in the old range.
  auto disk_owners = run_process({"find", (env_->state_dir() / "sandboxes/old/volume").string(), "-xdev", "(", "-uid",
                                  std::to_string(kUidBaseFirst), "-o", "-gid", std::to_string(kUidBaseFirst), ")", "-print"});
  ASSERT_TRUE(disk_owners);
  EXPECT_EQ(disk_owners->out, "");
  // And the user who could map the old root cannot map the new one.
  auto map = map_as_root(user, uid_base_of(*env_, "old"));
  report_.add("host user", "newuidmap: map the moved sandbox's root", map.code == 0 ? "MAPPED" : "denied: " + map.err.substr(0, 160),
              map.code != 0);
  // Again is harmless.
  auto again = env_->ok({"--json", "sandbox", "migrate-ids", "old"});
  EXPECT_FALSE(Json::parse(again)["moved"].get<bool>());
}

// On a copy of /etc (moatd --etc-dir), so that no other test's moatd ever sees the intruder.
TEST_P(HostileSubordinateIds, AnEntryOverlappingMoatsRegionStopsMoatdNamingIt) {
  TempDir etc("moat-etc-copy");
  for (auto f : {"passwd", "group", "subuid", "subgid"})
    ASSERT_TRUE(write_file_atomic(etc / f, read_file(fs::path("/etc") / f).value_or(""), 0644));
  auto line = fmt::format("moat-intruder:{}:65536", kIdRegionFirst + 7 * 65536);
  EtcGuard::append((etc / "subuid").string(), line);
  TempDir state("moat-state-intruder");
  fs::permissions(state.path(), fs::perms(0711));
  auto r = run_process({MOAT_BUILD_DIR "/moatd", "--state-dir", state.path().string(), "--init-binary",
                        MOAT_BUILD_DIR "/moat-init", "--etc-dir", etc.path().string()});
  ASSERT_TRUE(r);
  EXPECT_NE(r->exit_code, 0);
  EXPECT_NE((r->out + r->err).find(line), std::string::npos) << r->out << r->err;
  report_.add("host user", "a subuid entry inside moat's id region", r->exit_code != 0 ? "moatd refuses to start, naming it" : "IGNORED",
              r->exit_code != 0);
  // Without the intruder, the same copy gets moat's own entry, once.
  ASSERT_TRUE(write_file_atomic(etc / "subuid", read_file("/etc/subuid").value_or(""), 0644));
  ASSERT_TRUE(register_id_region(etc.path()));
  ASSERT_TRUE(register_id_region(etc.path()));
  auto text = read_file(etc / "subgid").value_or("");
  auto entry = fmt::format("moat:{}:{}", kIdRegionFirst, kIdRegionCount);
  EXPECT_EQ(text.find(entry), text.rfind(entry)) << text;
  EXPECT_NE(text.find(entry), std::string::npos) << text;
}

MOAT_HOSTILE_ON_EVERY_RUNTIME(HostileSubordinateIds);

}  // namespace

// The host-user side of the hostile suite: someone already on the host, without root, goes after a
// running sandbox. The test makes a real unprivileged user (useradd; removed again at the end) and,
// from a child process that has become that user, tries each door: the sandbox's gateway socket
// (which would inject the agent's credentials), its files on the host (workspace, upper layer, root,
// disk image, CA files), moat-init's socket, moatd's control socket and store, and signals to every
// host process of the sandbox (under runsc: its Sentry and gofer). Every attempt must fail for lack
// of permission; each is a row of the hostile report, on runc and runsc.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "base/fs.h"
#include "base/json.h"

#include "base/subprocess.h"
#include "support/gateway_client.h"
#include "support/hostile_sandbox.h"
#include "support/wait.h"

using namespace moat;
using namespace moat::testing;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// Runs `attempt` in a child that has become uid:gid (no supplementary groups, no capabilities);
// returns what the attempt says happened.
std::string as_user(uid_t uid, gid_t gid, const std::function<std::string()>& attempt) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
      out = "SETUP FAILED: cannot become the user";
    else
      out = attempt();
    (void)!write(fds[1], out.data(), out.size());
    _exit(0);
  }
  close(fds[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return out;
}

// An unprivileged host user made for the test and removed (with anything it owns in /tmp) after it.
class HostUser {
 public:
  explicit HostUser(std::string name) : name_(std::move(name)) {
    (void)run_process({"userdel", name_});  // a leftover of a killed run
    auto r = run_process({"useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name_});
    if (!r || !r->ok()) throw std::runtime_error("useradd " + name_ + " failed: " + (r ? r->err : r.error().message));
    passwd* pw = getpwnam(name_.c_str());
    if (!pw) throw std::runtime_error("no passwd entry for " + name_);
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
  }
  ~HostUser() { (void)run_process({"userdel", name_}); }
  HostUser(const HostUser&) = delete;
  HostUser& operator=(const HostUser&) = delete;

  uid_t uid() const { return uid_; }

  // Runs `attempt` in a child that has become this user; what the attempt says happened.
  std::string attempt(const std::function<std::string()>& what) const { return as_user(uid_, gid_, what); }

 private:
  std::string name_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

// errno as an outcome: EACCES/EPERM are the safe answers.
std::string denied_or(const char* what, int err) {
  return fmt::format("{}: {} ({})", what, err == EACCES || err == EPERM ? "denied" : "FAILED OTHERWISE", strerror(err));
}
bool safe(const std::string& outcome) { return outcome.find(": denied (") != std::string::npos; }

std::string try_connect(const fs::path& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = errno;
  if (rc == 0) {
    // Connected: does anything answer? (The gateway refuses strangers at accept, without a word.)
    const char req[] = "CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: 192.0.2.1:443\r\n\r\n";
    (void)!send(fd, req, sizeof req - 1, MSG_NOSIGNAL);  // the gateway may have closed already
    char buf[64] = {};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n > 0 ? fmt::format("connect: CONNECTED and answered '{}'", std::string(buf, static_cast<size_t>(n)).substr(0, 20))
                 : "connect: CONNECTED, then closed without an answer";
  }
  close(fd);
  return denied_or("connect", err);
}

std::string try_open(const fs::path& path, int flags) {
  int fd = open(path.c_str(), flags | O_CLOEXEC);
  if (fd >= 0) {
    close(fd);
    return "open: OPENED";
  }
  return denied_or("open", errno);
}

class HostileHostUser : public HostileSandbox {};

TEST_P(HostileHostUser, AnUnprivilegedHostUserCannotUseOrReadTheSandbox) {
  auto box = env_->state_dir() / "sandboxes" / "box";
  // Something to steal and something to signal.
  env_->ok({"exec", "box", "--", "sh", "-c", "echo private > /workspace/notes.txt; echo layer > /root-secret"});
  env_->ok({"exec", "box", "--", "sh", "-c", "setsid sleep 600 </dev/null >/dev/null 2>&1 &"});
  HostUser user(fmt::format("moat-hostile{}", getpid() % 100000));

  struct Door {
    std::string name;
    std::function<std::string()> attempt;
  };
  std::vector<Door> doors = {
      {"connect to the sandbox's gateway socket (credential injection)", [&] { return try_connect(box / "egress/gw.sock"); }},
      {"read a file in the sandbox's /workspace on the host", [&] { return try_open(box / "volume/workspace/notes.txt", O_RDONLY); }},
      {"list the sandbox's /workspace on the host", [&] { return try_open(box / "volume/workspace", O_RDONLY | O_DIRECTORY); }},
      {"read the sandbox's upper layer on the host", [&] { return try_open(box / "volume/upper/root-secret", O_RDONLY); }},
      {"read through the sandbox's mounted root on the host", [&] { return try_open(box / "rootfs/root-secret", O_RDONLY); }},
      {"list the sandbox's mounted root", [&] { return try_open(box / "rootfs", O_RDONLY | O_DIRECTORY); }},
      {"open the sandbox's disk image", [&] { return try_open(box / "disk.img", O_RDONLY); }},
      {"read the sandbox's OCI bundle (config.json)", [&] { return try_open(box / "bundle/config.json", O_RDONLY); }},
      {"connect to the sandbox's moat-init socket", [&] { return try_connect(box / "volume/run/init.sock"); }},
      {"connect to moatd's control socket", [&] { return try_connect(env_->state_dir() / "moatd.sock"); }},
      {"read moatd's store", [&] { return try_open(env_->state_dir() / "moat.db", O_RDONLY); }},
      {"read the vault key", [&] { return try_open(env_->state_dir() / "vault.key", O_RDONLY); }},
      {"read the interception CA's key", [&] { return try_open(env_->state_dir() / "egress/ca.key", O_RDONLY); }},
  };
  for (const auto& d : doors) {
    auto outcome = user.attempt(d.attempt);
    report_.add("host user", d.name, outcome, safe(outcome));
  }

  // Every host process of the sandbox (runc: its processes; runsc: the Sentry, gofer and friends).
  auto pids = sandbox_processes("box");
  ASSERT_FALSE(pids.empty());
  std::string outcomes;
  bool all_denied = true;
  for (int pid : pids) {
    auto outcome = user.attempt([pid] {
      if (kill(pid, 0) == 0) return std::string("kill 0: PERMITTED");
      return denied_or("kill", errno);
    });
    all_denied &= safe(outcome) || outcome.find("No such process") != std::string::npos;
    if (!safe(outcome)) outcomes += fmt::format("pid {}: {}; ", pid, outcome);
  }
  report_.add("host user", fmt::format("signal each of the sandbox's {} host processes", pids.size()),
              outcomes.empty() ? "kill: denied (EPERM) for every one" : outcomes, all_denied);
  // The sleeper is still there: nothing above reached it.
  EXPECT_NE(env_->ok({"exec", "box", "--", "ps"}).find("sleep 600"), std::string::npos);
}

// Defence in depth: were the directory fence ever opened (a careless chmod), the gateway itself still
// refuses a stranger at accept, without an answer, and says so in the audit trail.
TEST_P(HostileHostUser, TheGatewayRefusesAStrangerEvenPastTheFence) {
  auto box = env_->state_dir() / "sandboxes" / "box";
  HostUser user(fmt::format("moat-stranger{}", getpid() % 100000));
  fs::permissions(box, fs::perms(0711));
  auto outcome = user.attempt([&] { return try_connect(box / "egress/gw.sock"); });
  // The socket itself is root:<sandbox root> 0660, so even past the fence connect() is refused; make
  // it connectable for a moment to reach the accept-time check.
  fs::permissions(box / "egress/gw.sock", fs::perms(0666));
  auto past_socket = user.attempt([&] { return try_connect(box / "egress/gw.sock"); });
  fs::permissions(box / "egress/gw.sock", fs::perms(0660));
  fs::permissions(box, fs::perms(0710));
  report_.add("host user", "connect to the gateway socket with the sandbox directory opened to others", outcome, safe(outcome));
  report_.add("host user", "connect to the gateway socket with the directory and the socket opened to others", past_socket,
              past_socket == "connect: CONNECTED, then closed without an answer");
  // The refusal is on record, naming the uid.
  // (The gateway's audit writer is a thread of its own.)
  EXPECT_TRUE(wait_until(
      [&] { return env_->ok({"audit", "export"}).find(fmt::format("host uid {}", user.uid())) != std::string::npos; }, 5s, 50ms));
  // The sandbox's own traffic still passes the check.
  auto through = sh("box", "printf 'CONNECT 192.0.2.1:443 HTTP/1.1\\r\\nHost: 192.0.2.1:443\\r\\n\\r\\n' | nc -w 5 127.0.0.1 3128 | head -1");
  EXPECT_NE(through.out.find(" 403 "), std::string::npos) << through.out << through.err;
}

// The host's own nobody (65534) is a user like any other, and the one runtimes like to run as: runsc ran
// its Sentry as host nobody, so every local nobody could signal every gVisor sandbox, and runsc chowned
// the stdio it was given, /dev/null included, to that uid. Now every host process of a sandbox runs as
// one of the sandbox's own ids, and no host device changes owner.
TEST_P(HostileHostUser, TheHostsNobodyCannotSignalTheSandboxAndOwnsNoHostDevice) {
  constexpr uid_t kNobody = 65534;
  auto shown = Json::parse(env_->ok({"sandbox", "inspect", "box"}));
  const int64_t base = shown["uid_base"].get<int64_t>();
  auto pids = sandbox_processes("box");
  ASSERT_FALSE(pids.empty());
  std::string foreign, signalled;
  for (int pid : pids) {
    auto status = read_file(fs::path("/proc") / std::to_string(pid) / "status");
    if (!status) continue;  // gone meanwhile
    auto at = status->find("\nUid:");
    ASSERT_NE(at, std::string::npos);
    std::istringstream uids(status->substr(at + 5));
    int64_t real = -1, effective = -1;
    uids >> real >> effective;
    if (real < base || real >= base + 65536 || effective < base || effective >= base + 65536)
      foreign += fmt::format("pid {} runs as host uid {}/{}; ", pid, real, effective);
    auto outcome = as_user(kNobody, kNobody, [pid] {
      if (kill(pid, 0) == 0) return std::string("kill 0: PERMITTED");
      return denied_or("kill", errno);
    });
    if (!safe(outcome) && outcome.find("No such process") == std::string::npos)
      signalled += fmt::format("pid {}: {}; ", pid, outcome);
  }
  report_.add("host user", fmt::format("each of the sandbox's {} host processes runs as one of its own ids", pids.size()),
              foreign.empty() ? "every one" : foreign, foreign.empty());
  report_.add("host user", "as the host's nobody (65534): signal each of the sandbox's host processes",
              signalled.empty() ? "kill: denied (EPERM) for every one" : signalled, signalled.empty());
  EXPECT_TRUE(foreign.empty()) << foreign;
  EXPECT_TRUE(signalled.empty()) << signalled;

  // Starting a sandbox (again: a restart takes the same path) leaves every host device with root. A
  // moat before this fix may have left /dev/null with nobody: give it back first, so the check is ours.
  const std::vector<const char*> devices = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"};
  for (const char* dev : devices) (void)!chown(dev, 0, 0);
  env_->ok({"sandbox", "stop", "box"});
  env_->ok({"sandbox", "start", "box"});
  std::string given;
  for (const char* dev : devices) {
    struct stat st {};
    if (stat(dev, &st) == 0 && (st.st_uid != 0 || st.st_gid != 0))
      given += fmt::format("{} is owned by {}:{}; ", dev, st.st_uid, st.st_gid);
  }
  report_.add("host user", "own a host device after a sandbox starts (runtimes chown the stdio they are given)",
              given.empty() ? "every device is still root's" : given, given.empty());
  EXPECT_TRUE(given.empty()) << given;
}

MOAT_HOSTILE_ON_EVERY_RUNTIME(HostileHostUser);

}  // namespace

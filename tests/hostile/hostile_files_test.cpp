// The hostile agent lays traps for the host's file operations: links planted where `moat cp` will
// read or write, a rename race during copies, `..` paths, paths too long for the kernel, names with
// control characters, links to host paths left for `sandbox rm`, and its own moat-init socket
// swapped for a link. File get/put run inside the sandbox (moat-init), so every path resolves in the
// sandbox's own root; these tests check from the host that nothing outside it was read or written.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <future>
#include <thread>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/unique_fd.h"
#include "support/hostile_sandbox.h"

using namespace moat;
using namespace moat::testing;
using namespace std::chrono_literals;

namespace {

class HostileFiles : public HostileSandbox {
 protected:
  void SetUp() override {
    HostileSandbox::SetUp();
    if (IsSkipped()) return;
    host_ = std::make_unique<TempDir>("moat-hostile-host");
    ASSERT_TRUE(write_file_atomic(canary(), "host's own file\n"));
    ASSERT_TRUE(write_file_atomic(payload(), "agent payload\n"));
  }
  // A host file the agent names in its links: it must never be read or changed through them.
  std::filesystem::path canary() const { return host_->path() / "canary"; }
  std::filesystem::path payload() const { return host_->path() / "payload"; }
  bool canary_untouched() const {
    auto text = read_file(canary());
    std::error_code ec;
    auto entries = std::distance(std::filesystem::directory_iterator(host_->path(), ec), {});
    return text && *text == "host's own file\n" && entries == 2;  // canary and payload, nothing new
  }
  CliResult put(const std::string& inside) { return env_->moat({"cp", payload().string(), "box:" + inside}); }
  CliResult get(const std::string& inside, const std::filesystem::path& to) {
    return env_->moat({"cp", "box:" + inside, to.string()});
  }
  static std::string outcome(const CliResult& r) {
    auto text = r.code == 0 ? std::string("copied") : fmt::format("refused (exit {}): {}", r.code, r.err);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    return text;
  }
  std::unique_ptr<TempDir> host_;
};

TEST_P(HostileFiles, PlantedLinksResolveInsideTheSandbox) {
  auto host = canary().string();
  env_->ok({"exec", "box", "--", "sh", "-c",
            fmt::format("ln -s {0} /workspace/to-host-file && ln -s {1} /workspace/to-host-dir && "
                        "ln -s / /workspace/to-root && ln -s /etc/../../../.. /workspace/up",
                        host, host_->path().string())});
  auto out = host_->path() / "got";
  auto r = get("/workspace/to-host-file", out);
  bool leaked = read_file(out).value_or("") == "host's own file\n";
  std::filesystem::remove(out);
  report_.add("files", "get through a symlink to a host file", outcome(r), !leaked && canary_untouched());
  r = put("/workspace/to-host-file");
  report_.add("files", "put through a symlink to a host file", outcome(r), canary_untouched());
  r = put("/workspace/to-host-dir/planted");
  report_.add("files", "put through a symlink to a host directory", outcome(r), canary_untouched());
  r = put("/workspace/to-root/etc/moat-hostile-planted");
  bool host_etc = std::filesystem::exists("/etc/moat-hostile-planted");
  report_.add("files", "put through a symlink to / into /etc",
              fmt::format("{}; host /etc/moat-hostile-planted {}", outcome(r), host_etc ? "EXISTS" : "absent"), !host_etc);
  r = put("/workspace/up/moat-hostile-up");
  report_.add("files", "put through a symlink climbing with ..", outcome(r),
              !std::filesystem::exists("/moat-hostile-up") && canary_untouched());
}

TEST_P(HostileFiles, HardLinkToTheSharedImageChangesOnlyThisSandbox) {
  env_->ok({"sandbox", "create", "other", "--start"});
  // The image is shared read-only between sandboxes; a hard link to one of its files, then a put
  // through the link, must change this sandbox's copy only.
  auto image_busybox = [&] {
    std::map<std::string, std::string> hashes;
    for (auto& e : std::filesystem::recursive_directory_iterator(env_->state_dir() / "images" / "blobs"))
      if (e.path().filename() == "busybox" && e.is_regular_file())
        if (auto data = read_file(e.path())) hashes[e.path()] = sha256_hex(*data);
    return hashes;
  };
  auto before = image_busybox();
  ASSERT_FALSE(before.empty());
  auto link = env_->moat({"exec", "box", "--", "ln", "/bin/busybox", "/root/busybox-link"});
  auto r = put("/root/busybox-link");
  bool other_fine = env_->moat({"exec", "other", "--", "echo", "alive"}).out == "alive\n";
  report_.add("files", "hard link to a shared image file, then put through it",
              fmt::format("link {}; put {}; image {}; other sandbox {}", link.code == 0 ? "made" : "refused", outcome(r),
                          image_busybox() == before ? "unchanged" : "CHANGED", other_fine ? "unaffected" : "BROKEN"),
              image_busybox() == before && other_fine);
}

TEST_P(HostileFiles, RenameRaceDuringCopiesStaysInside) {
  // The agent swaps /workspace/race between a directory and a symlink to the host directory as fast
  // as it can while the host copies into and out of it.
  auto racer = std::async(std::launch::async, [&] {
    return sh("box",
              fmt::format("end=$(( $(date +%s) + 6 )); n=0; while [ $(date +%s) -lt $end ]; do "
                          "rm -rf /workspace/race; mkdir /workspace/race; echo inside > /workspace/race/file; "
                          "rm -rf /workspace/race; ln -s {} /workspace/race; n=$((n+1)); done; echo $n swaps",
                          host_->path().string()),
              "30s");
  });
  int copied = 0, refused = 0;
  bool read_host_file = false;
  TempDir outside("moat-hostile-out");
  auto out = outside.path() / "out";
  for (int i = 0; i < 40; ++i) {
    auto r = put("/workspace/race/file");
    (r.code == 0 ? copied : refused)++;
    auto g = get("/workspace/race/canary", out);
    read_host_file |= g.code == 0 && read_file(out).value_or("") == "host's own file\n";
    std::filesystem::remove(out);
  }
  auto swaps = racer.get().out;
  while (!swaps.empty() && swaps.back() == '\n') swaps.pop_back();
  report_.add("files", "rename race (directory <-> symlink to a host directory) during 40 puts and 40 gets",
              fmt::format("{} puts landed inside, {} refused; the agent made {}; host directory {}{}", copied, refused, swaps,
                          canary_untouched() ? "untouched" : "CHANGED", read_host_file ? "; HOST FILE READ" : ""),
              !read_host_file && canary_untouched());
}

TEST_P(HostileFiles, DotDotLongAndControlCharacterPaths) {
  CliResult r;
  for (std::string path : {"../../../../../../tmp/moat-hostile-dotdot", "/workspace/../../../../../tmp/moat-hostile-dotdot"}) {
    r = put(path);
    bool host_tmp = std::filesystem::exists("/tmp/moat-hostile-dotdot");
    std::filesystem::remove("/tmp/moat-hostile-dotdot");
    report_.add("files", "put to " + path, fmt::format("{}; host /tmp {}", outcome(r), host_tmp ? "WRITTEN" : "untouched"),
                !host_tmp);
  }
  auto out = host_->path() / "hostname";
  r = get("/../../../../etc/hostname", out);
  auto host_name = read_file("/etc/hostname").value_or("?");
  bool host_read = r.code == 0 && read_file(out).value_or("") == host_name;
  std::filesystem::remove(out);
  report_.add("files", "get /../../../../etc/hostname", r.code == 0 ? "got the sandbox's own file" : outcome(r), !host_read);

  std::string long_path = "/workspace/" + std::string(5000, 'a');
  r = put(long_path);
  report_.add("files", "put to a 5,000-character path", outcome(r).substr(0, 160),
              r.code != 0 && !r.err.empty() && r.err.find('\n') == r.err.size() - 1);
  // A path close to PATH_MAX (busybox sh cannot cd deeper), built inside, then read from the host.
  env_->ok({"exec", "box", "--", "sh", "-c",
            "cd /workspace && i=0; while [ $i -lt 19 ]; do d=$(printf '%0200d' $i); mkdir $d && cd $d || exit 1; "
            "i=$((i+1)); done; echo deep > file"});
  std::string deep = "/workspace";
  for (int i = 0; i < 19; ++i) deep += fmt::format("/{:0200}", i);
  r = get(deep + "/file", out);
  // Either the sandbox's own file arrives whole, or one line says why not; nothing else is acceptable.
  bool whole = r.code == 0 && read_file(out).value_or("") == "deep\n";
  bool one_line = r.code != 0 && !r.err.empty() && r.err.find('\n') == r.err.size() - 1;
  report_.add("files", fmt::format("get a file {} characters deep", deep.size() + 5),
              whole ? "got the sandbox's file, whole" : outcome(r).substr(0, 160), whole || one_line);
  std::filesystem::remove(out);

  // File names with control characters: copied like any other, and never echoed raw to the operator.
  env_->ok({"exec", "box", "--", "sh", "-c", "printf x > \"$(printf '/workspace/a\\nb\\033[2J')\""});
  r = get("/workspace/a\nb\033[2J", out);
  report_.add("files", "get a file whose name holds a newline and a terminal escape", outcome(r), r.code == 0);
  std::filesystem::remove(out);
  r = get("/workspace/missing\033]0;pwned\007\033[2J", out);
  bool raw_escape = r.err.find('\033') != std::string::npos || r.err.find('\007') != std::string::npos;
  report_.add("files", "error naming a path with terminal escapes",
              raw_escape ? "RAW ESCAPES REACH THE TERMINAL" : outcome(r), r.code != 0 && !raw_escape);
}

TEST_P(HostileFiles, RemovingASandboxFollowsNoneOfItsLinks) {
  env_->ok({"exec", "box", "--", "sh", "-c",
            fmt::format("ln -s {0} /workspace/host-dir; ln -s {0} /root/host-dir; ln -s {1} /workspace/host-file; "
                        "mkdir -p /workspace/d; ln -s {0} /workspace/d/x",
                        host_->path().string(), canary().string())});
  auto r = env_->moat({"sandbox", "rm", "-f", "box"});
  report_.add("files", "sandbox rm with links to host paths planted in /workspace and the root",
              fmt::format("{}; host files {}", r.code == 0 ? "removed" : outcome(r), canary_untouched() ? "untouched" : "CHANGED"),
              r.code == 0 && canary_untouched());
}

TEST_P(HostileFiles, ASwappedInitSocketIsNotFollowed) {
  // moat-init's socket lives in a directory the agent can write: swap it for a link to a host socket.
  // The host must refuse the link, not connect to what it points at: the trap counts connections.
  TempDir trap_dir("moat-hostile-trap");
  auto trap_path = trap_dir.path() / "trap.sock";
  UniqueFd trap(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_un addr{.sun_family = AF_UNIX};
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", trap_path.c_str());
  ASSERT_EQ(::bind(trap.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(trap.get(), 16), 0);
  auto swap = sh("box", fmt::format("rm -f /run/moat/init.sock && ln -s {} /run/moat/init.sock && echo swapped",
                                    trap_path.string()));
  auto r = env_->moat({"exec", "--timeout", "20s", "box", "--", "echo", "after-the-swap"});
  int connections = 0;
  while (UniqueFd(::accept4(trap.get(), nullptr, nullptr, SOCK_CLOEXEC))) ++connections;
  report_.add("files", "swap moat-init's socket for a symlink to a host socket",
              fmt::format("swap {}; the next exec: {}; connections to the host socket: {}",
                          swap.out == "swapped\n" ? "made" : "refused", outcome(r).substr(0, 200), connections),
              connections == 0);
  // moatd keeps serving, and the sandbox can be restarted.
  EXPECT_EQ(env_->moat({"sandbox", "ls"}).code, 0);
  env_->moat({"sandbox", "stop", "box"});
  EXPECT_EQ(env_->moat({"sandbox", "start", "box"}).code, 0);
  EXPECT_EQ(env_->moat({"exec", "box", "--", "echo", "back"}).out, "back\n");
}

MOAT_HOSTILE_ON_EVERY_RUNTIME(HostileFiles);

}  // namespace

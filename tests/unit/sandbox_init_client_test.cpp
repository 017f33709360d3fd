// Drives the real moat-init binary (run as an ordinary process on a temp socket) through InitClient.
#include "sandbox/init_client.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "base/fs.h"
#include "base/ids.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "support/temp_dir.h"
#include "wire/frame.h"

using namespace moat;
using namespace std::chrono_literals;

namespace {

wire::ExecStart cmd(std::vector<std::string> argv) {
  wire::ExecStart e;
  e.argv = std::move(argv);
  return e;
}

wire::ExecStart sh(const std::string& script) { return cmd({"sh", "-c", script}); }

// A unique number of seconds: `sleep <marker>` sleeps for decades and is findable by its argv.
std::string marker() {
  return "9" + std::to_string(100000000 + std::stoull(random_hex_id(4), nullptr, 16) % 900000000);
}

// Living (non-zombie) processes with `arg` as one of their arguments.
int count_with_marker(const std::string& arg) {
  int n = 0;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    auto name = e.path().filename().string();
    if (name.empty() || !isdigit(static_cast<unsigned char>(name[0]))) continue;
    // Plain read(): the process may exit while we look (ifstream throws on that).
    std::string cmdline;
    UniqueFd f(::open((e.path() / "cmdline").c_str(), O_RDONLY | O_CLOEXEC));
    if (!f) continue;
    char buf[4096];
    ssize_t got;
    while ((got = ::read(f.get(), buf, sizeof buf)) > 0) cmdline.append(buf, static_cast<size_t>(got));
    size_t pos = 0;
    while (pos < cmdline.size()) {
      auto end = cmdline.find('\0', pos);
      if (end == std::string::npos) end = cmdline.size();
      if (cmdline.compare(pos, end - pos, arg) == 0) {
        ++n;
        break;
      }
      pos = end + 1;
    }
  }
  return n;
}

class InitFixture : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }
  void TearDown() override { stop(); }

  void start(std::vector<std::string> extra) {
    dir_ = std::make_unique<moat::testing::TempDir>("moat-init-test");
    sock_ = dir_->path() / "init.sock";
    std::vector<std::string> argv = {MOAT_BUILD_DIR "/moat-init", "--listen", sock_.string(), "--log",
                                     (dir_->path() / "init.log").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto child = spawn_process(argv);
    ASSERT_TRUE(child) << child.error().message;
    init_ = std::move(*child);
    client_ = std::make_unique<InitClient>(dir_->path());
    for (int i = 0; i < 500; ++i) {
      struct stat st {};
      if (lstat(sock_.c_str(), &st) == 0) return;
      std::this_thread::sleep_for(10ms);
    }
    FAIL() << "moat-init did not create its socket";
  }

  void stop() {
    if (init_.pid() > 0) {
      ::kill(init_.pid(), SIGTERM);
      for (int i = 0; i < 300; ++i) {
        int st = 0;
        if (waitpid(init_.pid(), &st, WNOHANG) == init_.pid()) {
          init_.release();
          break;
        }
        std::this_thread::sleep_for(10ms);
      }
    }
    init_ = ChildProcess();  // SIGKILLs it if it did not stop
    dir_.reset();
  }

  Result<ExecResult> run(const wire::ExecStart& e, std::string_view in = {}) { return client_->exec(e, in); }

  std::unique_ptr<moat::testing::TempDir> dir_;
  std::filesystem::path sock_;
  ChildProcess init_;
  std::unique_ptr<InitClient> client_;
};

TEST_F(InitFixture, HealthAnswers) {
  ASSERT_TRUE(client_->health(2s));
  auto h = client_->health_info(2s);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->processes, 0u);
}

TEST_F(InitFixture, ExecEcho) {
  auto r = run(cmd({"echo", "hello", "world"}));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->out, "hello world\n");
  EXPECT_EQ(r->err, "");
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->signal, 0);
  EXPECT_FALSE(r->timed_out);
}

TEST_F(InitFixture, StdoutAndStderrAreKeptApart) {
  auto r = run(sh("for i in 1 2 3; do echo out$i; echo err$i >&2; done; exit 3"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->out, "out1\nout2\nout3\n");
  EXPECT_EQ(r->err, "err1\nerr2\nerr3\n");
  EXPECT_EQ(r->exit_code, 3);
}

TEST_F(InitFixture, StdinRoundTrip) {
  std::string in;
  for (int i = 0; i < 3 << 20; ++i) in.push_back(static_cast<char>(i * 31 + (i >> 9)));
  auto r = run(cmd({"cat"}), in);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->out.size(), in.size());
  EXPECT_TRUE(r->out == in);
  // A command that never reads its stdin still finishes.
  auto t = run(cmd({"true"}), std::string(5 << 20, 'x'));
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t->exit_code, 0);
}

TEST_F(InitFixture, EnvironmentCwdAndDefaults) {
  auto e = sh("echo \"$FOO|$PATH|$(pwd)\"");
  e.env = {"FOO=bar", "PATH=/usr/bin:/bin"};
  e.cwd = "/tmp";
  auto r = run(e);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->out, "bar|/usr/bin:/bin|/tmp\n");
  // With no entries the command gets moat-init's own environment (in a sandbox: the proxy and CA
  // variables every process must see); entries add to it or replace a variable of the same name.
  auto env_of = [](const char* k) { return std::string(getenv(k) ? getenv(k) : "unset"); };
  auto d = run(sh("echo \"$PATH|$HOME|${TERM-unset}\""));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->out, fmt::format("{}|{}|{}\n", env_of("PATH"), env_of("HOME"), env_of("TERM")));
  auto o = sh("echo \"$HOME|$FOO\"");
  o.env = {"FOO=added"};
  auto ov = run(o);
  ASSERT_TRUE(ov);
  EXPECT_EQ(ov->out, fmt::format("{}|added\n", env_of("HOME")));
  auto u = sh("id -u; id -g");
  u.uid = 65534;
  u.gid = 65534;
  auto ur = run(u);
  ASSERT_TRUE(ur);
  if (geteuid() == 0) {
    EXPECT_EQ(ur->out, "65534\n65534\n");
  }
}

TEST_F(InitFixture, HundredMegabytesOfBinaryStdoutArriveByteExact) {
  // The bytes are made once, hashed here, and streamed by `cat` through moat-init.
  auto file = dir_->path() / "blob";
  auto gen = run_process({"sh", "-c", "head -c 100000000 /dev/urandom > " + file.string()});
  ASSERT_TRUE(gen && gen->ok());
  auto expected = sha256_file_hex(file);
  ASSERT_TRUE(expected);
  auto start = std::chrono::steady_clock::now();
  auto r = client_->exec(cmd({"cat", file.string()}), {}, 128 << 20);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 0);
  ASSERT_EQ(r->out.size(), 100000000u);
  EXPECT_EQ(r->out_bytes, 100000000u);
  EXPECT_EQ(sha256_hex(r->out), *expected);
  EXPECT_LT(took, 10s);
  std::cerr << "100 MB through moat-init in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms\n";
}

TEST_F(InitFixture, CaptureIsCappedButCounted) {
  auto r = client_->exec(sh("head -c 100000 /dev/zero"), {}, 1000);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->out.size(), 1000u);
  EXPECT_EQ(r->out_bytes, 100000u);
  EXPECT_TRUE(r->truncated());
}

TEST_F(InitFixture, ExitCodesAndSignals) {
  auto a = run(sh("exit 42"));
  ASSERT_TRUE(a);
  EXPECT_EQ(a->exit_code, 42);
  EXPECT_EQ(a->signal, 0);
  auto b = run(sh("kill -TERM $$"));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->exit_code, -1);
  EXPECT_EQ(b->signal, SIGTERM);
  auto c = run(sh("kill -9 $$"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->signal, 9);
}

TEST_F(InitFixture, MissingProgramIsAClearError) {
  auto r = run(cmd({"moat-no-such-program", "x"}));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 127);
  EXPECT_EQ(r->err, "moat-init: cannot execute 'moat-no-such-program': No such file or directory\n");
  auto noexec = (dir_->path() / "noexec").string();
  ASSERT_TRUE(write_file_atomic(noexec, "#!/bin/sh\n", 0644));
  auto p = run(cmd({noexec}));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->exit_code, 126);
  EXPECT_EQ(p->err, "moat-init: cannot execute '" + noexec + "': Permission denied\n");
  auto d = cmd({"true"});
  d.cwd = "/moat-no-such-dir";
  auto dr = run(d);
  ASSERT_TRUE(dr);
  EXPECT_EQ(dr->exit_code, 126);
  EXPECT_NE(dr->err.find("cannot change directory to '/moat-no-such-dir'"), std::string::npos);
  d.cwd = "tmp";
  auto rel = run(d);
  ASSERT_TRUE(rel);
  EXPECT_EQ(rel->exit_code, 126);
  EXPECT_NE(rel->err.find("must be an absolute path"), std::string::npos);
  auto huge = cmd({"true"});
  huge.timeout_ms = UINT64_MAX;
  auto hr = run(huge);
  ASSERT_TRUE(hr);
  EXPECT_FALSE(hr->timed_out);
  EXPECT_EQ(hr->exit_code, 0);
}

TEST_F(InitFixture, TimeoutKillsTheWholeTree) {
  std::string m = marker();
  // Grandchildren too, one of them in its own session.
  auto e = sh("sleep " + m + " & sh -c 'sleep " + m + "; true' & setsid sleep " + m + " & wait");
  e.timeout_ms = 300;
  auto r = run(e);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->signal, 9);
  EXPECT_GE(r->duration_ms, 300u);
  EXPECT_LT(r->duration_ms, 5000u);
  EXPECT_EQ(count_with_marker(m), 0);
}

TEST_F(InitFixture, BackgroundChildrenOutliveANormalExit) {
  std::string m = marker();
  auto start = std::chrono::steady_clock::now();
  auto r = run(sh("sleep " + m + " & echo started"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->out, "started\n");
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);  // did not wait for the background sleep
  EXPECT_EQ(count_with_marker(m), 1);
  auto h = client_->health_info(2s);
  ASSERT_TRUE(h);
  EXPECT_GE(h->processes, 1u);
  // Shutting moat-init down takes them with it.
  stop();
  EXPECT_EQ(count_with_marker(m), 0);
}

TEST_F(InitFixture, SignalsAndDisconnectKillTheTree) {
  std::string m = marker();
  auto fd = client_->start_exec(sh("sleep " + m + " & sleep " + m + "; echo never"));
  ASSERT_TRUE(fd) << fd.error().message;
  for (int i = 0; i < 200 && count_with_marker(m) < 2; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(wire::write_frame(fd->get(), wire::FrameType::Signal, wire::encode(wire::SignalMsg{SIGKILL})));
  for (;;) {
    auto f = wire::read_frame(fd->get());
    ASSERT_TRUE(f) << f.error().message;
    if (f->type != wire::FrameType::Exit) continue;
    auto x = wire::decode<wire::ExecExit>(f->payload);
    ASSERT_TRUE(x);
    EXPECT_EQ(x->signal, SIGKILL);
    break;
  }
  EXPECT_EQ(count_with_marker(m), 0);

  // The host vanishing mid-exec kills the tree too.
  std::string marker2 = marker();
  auto fd2 = client_->start_exec(sh("sleep " + marker2 + " & sleep " + marker2));
  ASSERT_TRUE(fd2);
  for (int i = 0; i < 200 && count_with_marker(marker2) < 1; ++i) std::this_thread::sleep_for(10ms);
  fd2->reset();
  int left = 1;
  for (int i = 0; i < 300 && (left = count_with_marker(marker2)) > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(left, 0);

  // A non-KILL signal goes to the command's process group.
  auto fd3 = client_->start_exec(sh("trap 'echo got-term; exit 7' TERM; while :; do sleep 0.05; done"));
  ASSERT_TRUE(fd3);
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(wire::write_frame(fd3->get(), wire::FrameType::Signal, wire::encode(wire::SignalMsg{SIGTERM})));
  std::string out;
  for (;;) {
    auto f = wire::read_frame(fd3->get());
    ASSERT_TRUE(f) << f.error().message;
    if (f->type == wire::FrameType::Stdout) out += f->payload;
    if (f->type != wire::FrameType::Exit) continue;
    auto x = wire::decode<wire::ExecExit>(f->payload);
    ASSERT_TRUE(x);
    EXPECT_TRUE(x->exit_code == 7 || x->signal == SIGTERM) << x->exit_code << " " << x->signal;
    break;
  }
}

// moat-init's connection processes whose parent is moat-init itself (workers and per-connection ones).
int init_children(pid_t init) {
  int n = 0;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    auto name = e.path().filename().string();
    if (name.empty() || !isdigit(static_cast<unsigned char>(name[0]))) continue;
    auto stat = read_file(e.path() / "stat");
    if (!stat) continue;
    auto close = stat->rfind(')');
    if (close == std::string::npos || stat->find("(moat-init)") == std::string::npos) continue;
    int ppid = 0;
    char state = 0;
    if (sscanf(stat->c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == init && state != 'Z') ++n;
  }
  return n;
}

TEST_F(InitFixture, ConnectionWorkersAreReusedAndReplaced) {
  for (int i = 0; i < 30; ++i) {
    auto r = run(cmd({"true"}));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->exit_code, 0);
  }
  // A worker with nothing left behind serves the next connection: a few wait, not one per exec.
  int workers = init_children(init_.pid());
  EXPECT_GE(workers, 1);
  EXPECT_LE(workers, 3);
  // Killed workers are replaced, and connections keep being served meanwhile.
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    auto stat = read_file(e.path() / "stat");
    if (!stat || stat->find("(moat-init)") == std::string::npos) continue;
    int ppid = 0;
    char state = 0;
    auto close = stat->rfind(')');
    if (sscanf(stat->c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == init_.pid())
      ::kill(std::stoi(e.path().filename().string()), SIGKILL);
  }
  for (int i = 0; i < 5; ++i) {
    auto r = run(cmd({"echo", "still"}));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->out, "still\n");
  }
  EXPECT_TRUE(client_->health(2s));
}

TEST_F(InitFixture, ALaterExecsTimeoutSparesAnEarlierExecsBackgroundProcess) {
  // The first exec leaves a background process behind; its connection process keeps it (and is not
  // reused), so a later exec that times out kills only its own tree.
  std::string kept = marker();
  auto first = run(sh("sleep " + kept + " & echo started"));
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(count_with_marker(kept), 1);
  std::string killed = marker();
  auto e = sh("sleep " + killed + " & sleep " + killed);
  e.timeout_ms = 300;
  for (int i = 0; i < 3; ++i) {
    auto r = run(e);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_TRUE(r->timed_out);
  }
  EXPECT_EQ(count_with_marker(killed), 0);
  EXPECT_EQ(count_with_marker(kept), 1) << "an exec's timeout reached another exec's process";
}

TEST_F(InitFixture, ThirtyTwoConcurrentExecs) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 32; ++i) {
    threads.emplace_back([&, i] {
      auto r = client_->exec(sh("sleep 0.3; echo " + std::to_string(i) + "; head -c 200000 /dev/zero"));
      if (r && r->exit_code == 0 && r->out.size() == 200000 + std::to_string(i).size() + 1 &&
          r->out.starts_with(std::to_string(i) + "\n"))
        ++ok;
    });
  }
  auto start = std::chrono::steady_clock::now();
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 32);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);  // they ran at the same time, not one by one
}

TEST_F(InitFixture, FilePutGetRoundTrip) {
  std::string data;
  for (int i = 0; i < 300000; ++i) data.push_back(static_cast<char>(i ^ (i >> 8)));
  auto target = (dir_->path() / "put.bin").string();
  ASSERT_TRUE(client_->put_file(target, data, 0640, 123, 456));
  struct stat st {};
  ASSERT_EQ(stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  if (geteuid() == 0) {
    EXPECT_EQ(st.st_uid, 123u);
    EXPECT_EQ(st.st_gid, 456u);
  }
  auto back = client_->get_file(target);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_TRUE(*back == data);
  // Overwrite atomically with something smaller; an empty file works too.
  ASSERT_TRUE(client_->put_file(target, "small"));
  EXPECT_EQ(*client_->get_file(target), "small");
  ASSERT_TRUE(client_->put_file(target, ""));
  EXPECT_EQ(*client_->get_file(target), "");
  // No temp files left behind.
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(dir_->path()))
    if (e.path().filename().string().starts_with(".moat-put")) ++entries;
  EXPECT_EQ(entries, 0);
}

TEST_F(InitFixture, FileErrorsAreClear) {
  auto missing = client_->get_file((dir_->path() / "nope").string());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().kind, ErrorKind::NotFound);
  EXPECT_NE(missing.error().message.find("no such file"), std::string::npos) << missing.error().message;
  auto dir = client_->get_file(dir_->path().string());
  ASSERT_FALSE(dir);
  EXPECT_NE(dir.error().message.find("not a regular file"), std::string::npos) << dir.error().message;
  auto relative = client_->get_file("etc/passwd");
  ASSERT_FALSE(relative);
  EXPECT_NE(relative.error().message.find("absolute"), std::string::npos);
  auto no_parent = client_->put_file((dir_->path() / "no/such/dir/f").string(), std::string(1 << 20, 'x'));
  ASSERT_FALSE(no_parent);
  EXPECT_NE(no_parent.error().message.find("does not exist"), std::string::npos) << no_parent.error().message;
  auto onto_dir = client_->put_file(dir_->path().string() + "/", "x");
  ASSERT_FALSE(onto_dir);
  // moat-init still serves afterwards.
  EXPECT_TRUE(client_->health(2s));
}

TEST_F(InitFixture, SymlinkedSocketIsRefused) {
  moat::testing::TempDir other("moat-init-link");
  std::filesystem::create_symlink(sock_, other.path() / "init.sock");
  auto c = connect_init_socket(other.path());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(c.error().message.find("symbolic link"), std::string::npos) << c.error().message;
  EXPECT_FALSE(InitClient(other.path()).health(1s));
  // A regular file is not a socket.
  ASSERT_TRUE(write_file_atomic(other.path() / "plain.sock", "x"));
  auto p = connect_init_socket(other.path(), "plain.sock");
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message.find("not a socket"), std::string::npos);
  EXPECT_FALSE(connect_init_socket(other.path(), "../init.sock"));
  auto none = connect_init_socket(other.path(), "absent.sock");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().kind, ErrorKind::Unavailable);
  // The real one works.
  EXPECT_TRUE(connect_init_socket(dir_->path()));
}

TEST_F(InitFixture, PtyMode) {
  auto e = sh("tty; stty size; test -t 0 && test -t 1 && test -t 2 && echo all-tty; echo \"$TERM\"");
  e.tty = true;
  e.rows = 33;
  e.cols = 101;
  auto r = run(e);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_TRUE(r->out.starts_with("/dev/pts/")) << r->out;
  EXPECT_NE(r->out.find("33 101\r\n"), std::string::npos) << r->out;
  EXPECT_NE(r->out.find("all-tty"), std::string::npos);
  EXPECT_NE(r->out.find("xterm"), std::string::npos);

  // Resize while running: the command sees the new size.
  auto s = sh("trap 'stty size' WINCH; echo ready; read line; stty size");
  s.tty = true;
  auto fd = client_->start_exec(s);
  ASSERT_TRUE(fd) << fd.error().message;
  std::string out;
  auto read_until = [&](std::string_view what) {
    while (out.find(what) == std::string::npos) {
      auto f = wire::read_frame(fd->get());
      if (!f || f->type == wire::FrameType::Exit) return false;
      if (f->type == wire::FrameType::Stdout) out += f->payload;
    }
    return true;
  };
  ASSERT_TRUE(read_until("ready"));
  ASSERT_TRUE(wire::write_frame(fd->get(), wire::FrameType::Resize, wire::encode(wire::Resize{50, 160})));
  ASSERT_TRUE(wire::write_frame(fd->get(), wire::FrameType::Stdin, "go\n"));
  ASSERT_TRUE(read_until("50 160"));
  // Stdin on a PTY: StdinEof is end-of-input for a reading program.
  auto c = cmd({"cat"});
  c.tty = true;
  auto cr = run(c, "typed\n");
  ASSERT_TRUE(cr) << cr.error().message;
  EXPECT_EQ(cr->exit_code, 0) << "signal " << cr->signal << " out: " << cr->out << " err: " << cr->err;
  EXPECT_NE(cr->out.find("typed"), std::string::npos);
}

TEST_F(InitFixture, HostileClientsGetAnErrorAndMoatInitKeepsServing) {
  auto raw = [&](std::string bytes) -> std::string {
    auto fd = connect_init_socket(dir_->path());
    EXPECT_TRUE(fd);
    if (!fd) return {};
    (void)wire::write_all(fd->get(), bytes);
    auto f = wire::read_frame(fd->get());
    if (!f) return "closed: " + f.error().message;
    if (f->type != wire::FrameType::Error) return "type " + wire::frame_type_name(f->type);
    auto m = wire::decode<wire::ErrorMsg>(f->payload);
    return m ? m->message : "bad error";
  };
  EXPECT_NE(raw("GET / HTTP/1.1\r\n\r\n").find("protocol error"), std::string::npos);
  EXPECT_NE(raw(std::string("\0\0\0\0\0", 5)).find("zero-length"), std::string::npos);
  EXPECT_NE(raw(wire::encode_frame(wire::FrameType::Hello, "{not json")).find("not valid JSON"), std::string::npos);
  EXPECT_NE(raw(wire::encode_frame(wire::FrameType::Hello, R"({"version":99})")).find("version 99"), std::string::npos);
  EXPECT_NE(raw(wire::encode_frame(wire::FrameType::Stdout, "x")).find("expected Hello"), std::string::npos);
  std::string hello = wire::encode_frame(wire::FrameType::Hello, wire::encode(wire::HelloMsg{1, "t"}));
  // After a good Hello: HelloOk comes first, then the error for a bad request.
  {
    auto fd = connect_init_socket(dir_->path());
    ASSERT_TRUE(fd);
    ASSERT_TRUE(wire::write_all(fd->get(), hello + wire::encode_frame(wire::FrameType::ExecStart, R"({"argv":[]})")));
    auto ok = wire::read_frame(fd->get());
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->type, wire::FrameType::HelloOk);
    auto err = wire::read_frame(fd->get());
    ASSERT_TRUE(err);
    EXPECT_EQ(err->type, wire::FrameType::Error);
    EXPECT_NE(err->payload.find("argv"), std::string::npos);
  }
  // Garbage in the middle of an exec: Error, and the command's tree is killed.
  {
    std::string m = marker();
    auto fd = client_->start_exec(sh("sleep " + m + "; true"));
    ASSERT_TRUE(fd);
    for (int i = 0; i < 200 && count_with_marker(m) < 1; ++i) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(wire::write_all(fd->get(), std::string("\xff\xff\xff\xff\x07", 5)));
    bool got_error = false;
    for (;;) {
      auto f = wire::read_frame(fd->get());
      if (!f) break;
      if (f->type == wire::FrameType::Error) got_error = true;
    }
    EXPECT_TRUE(got_error);
    int left = 1;
    for (int i = 0; i < 300 && (left = count_with_marker(m)) > 0; ++i) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(left, 0);
  }
  // Random junk from many clients at once.
  std::vector<std::thread> ts;
  for (int i = 0; i < 16; ++i) {
    ts.emplace_back([&, i] {
      auto fd = connect_init_socket(dir_->path());
      if (!fd) return;
      std::string junk(1000 + i * 100, '\0');
      for (size_t k = 0; k < junk.size(); ++k) junk[k] = static_cast<char>((k * 2654435761u + i) >> 13);
      (void)wire::write_all(fd->get(), junk);
      (void)wire::read_frame(fd->get());
    });
  }
  for (auto& t : ts) t.join();
  auto r = run(cmd({"echo", "still here"}));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->out, "still here\n");
}

class HostPeersOnly : public InitFixture {
 protected:
  void SetUp() override { start({"--host-peers-only"}); }
};

TEST_F(HostPeersOnly, RefusesPeersInItsOwnPidNamespace) {
  // This test process shares moat-init's pid namespace, so it looks like a process inside the sandbox.
  auto h = client_->health(2s);
  ASSERT_FALSE(h);
  EXPECT_NE(h.error().message.find("refused"), std::string::npos) << h.error().message;
}

// moat-init as PID 1 of its own pid namespace: the host (outside) is accepted with --host-peers-only,
// orphans are reaped, and SIGTERM stops it once everything has exited.
TEST(InitPid1, ServesFromItsOwnPidNamespace) {
  MOAT_REQUIRE_ROOT();
  if (!find_program("unshare")) GTEST_SKIP() << "unshare(1) not installed";
  moat::testing::TempDir dir("moat-init-pid1");
  auto sock = dir.path() / "init.sock";
  auto child = spawn_process({"unshare", "--pid", "--fork", "--mount-proc", MOAT_BUILD_DIR "/moat-init", "--listen",
                              sock.string(), "--host-peers-only", "--log", (dir.path() / "init.log").string()});
  ASSERT_TRUE(child) << child.error().message;
  InitClient client(dir.path());
  bool up = false;
  for (int i = 0; i < 300 && !up; ++i) {
    up = static_cast<bool>(client.health(1s));
    if (!up) std::this_thread::sleep_for(10ms);
  }
  if (!up) {
    auto log = read_file(dir.path() / "init.log");
    GTEST_SKIP() << "cannot start moat-init in a new pid namespace here: " << (log ? *log : "");
  }
  // Inside, pids are small: the command is a child of moat-init's connection process.
  auto r = client.exec(sh("echo $$"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_LT(std::stoi(r->out), 100);
  auto bg = client.exec(sh("sleep 100 & echo ok"));
  ASSERT_TRUE(bg);
  auto h = client.health_info(2s);
  ASSERT_TRUE(h);
  EXPECT_GE(h->processes, 1u);
  // SIGTERM to unshare is not forwarded; signal moat-init (its child) directly.
  auto pid = run_process({"sh", "-c", "pgrep -P " + std::to_string(child->pid())});
  ASSERT_TRUE(pid);
  ASSERT_FALSE(pid->out.empty());
  ::kill(std::stoi(pid->out), SIGTERM);
  int st = 0;
  for (int i = 0; i < 300; ++i) {
    if (waitpid(child->pid(), &st, WNOHANG) == child->pid()) {
      child->release();
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(child->pid(), -1) << "moat-init as PID 1 did not stop on SIGTERM";
}

}  // namespace

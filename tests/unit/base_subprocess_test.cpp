#include "base/subprocess.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include "base/fs.h"
#include "base/ids.h"
#include "support/temp_dir.h"

using namespace moat;

TEST(Subprocess, CapturesStdoutStderrAndExitCode) {
  auto r = run_process({"sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_EQ(r->exit_code, 3);
}

TEST(Subprocess, FeedsStdinAndReportsSignals) {
  auto r = run_process({"cat"}, {.stdin_data = std::string(300000, 'x')});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->out.size(), 300000u);
  auto k = run_process({"sh", "-c", "kill -9 $$"});
  ASSERT_TRUE(k);
  EXPECT_EQ(k->signal, 9);
}

TEST(Subprocess, TimeoutKills) {
  auto r = run_process({"sleep", "10"}, {.timeout = std::chrono::milliseconds(100)});
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->timed_out);
}

TEST(Subprocess, MissingProgramIsAClearError) {
  auto r = run_process({"moat-no-such-program"});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("moat-no-such-program"), std::string::npos);
  EXPECT_EQ(r.error().kind, ErrorKind::Unavailable);
}

TEST(Names, RejectsPathTricks) {
  EXPECT_TRUE(validate_name("sandbox", "web-1"));
  EXPECT_FALSE(validate_name("sandbox", "../etc"));
  EXPECT_FALSE(validate_name("sandbox", "a/b"));
  EXPECT_FALSE(validate_name("sandbox", ""));
  EXPECT_FALSE(validate_name("sandbox", std::string(64, 'a')));
}

TEST(OpenBeneath, RefusesSymlinksAndDotDot) {
  char tmpl[] = "/tmp/moat-fs-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  ASSERT_EQ(symlink("/etc/passwd", (dir + "/link").c_str()), 0);
  UniqueFd d(open(dir.c_str(), O_DIRECTORY | O_RDONLY));
  EXPECT_FALSE(open_beneath(d.get(), "link", O_RDONLY));
  EXPECT_FALSE(open_beneath(d.get(), "../etc/passwd", O_RDONLY));
  EXPECT_TRUE(open_beneath(d.get(), "new", O_WRONLY | O_CREAT, 0600));
  remove_tree(dir);
}

// The real default image: minimal Debian bookworm built by mmdebstrap, used by a real sandbox.
#include <gtest/gtest.h>

#include "base/json.h"
#include "support/moat_env.h"

using namespace moat;
using namespace moat::testing;

TEST(DebianImage, BuildsAndRunsAPersistentDebianMachine) {
  MOAT_REQUIRE_ROOT();
  MoatEnv env("[sandbox]\nimage = \"default\"\ndisk = \"2GiB\"\n");
  auto build = env.moat({"image", "build", "default"}, {}, 900);
  ASSERT_EQ(build.code, 0) << build.err;
  EXPECT_NE(build.err.find("hashing"), std::string::npos) << "expected a progress line per step:\n" << build.err;
  auto images = Json::parse(env.ok({"--json", "image", "ls"}));
  bool found = false;
  for (auto& i : images) found |= i["name"] == "default" && i["digest"].get<std::string>().starts_with("sha256:");
  EXPECT_TRUE(found) << images.dump();

  env.ok({"sandbox", "create", "deb", "--start"});
  auto tools = env.ok({"exec", "deb", "--", "bash", "-c",
                       "python3 -c 'print(6*7)'; git --version | cut -d' ' -f1; curl --version | head -c 4; echo; "
                       "apt-get --version | head -c 3; echo; test -s /etc/ssl/certs/ca-certificates.crt && echo certs"});
  EXPECT_EQ(tools, "42\ngit\ncurl\napt\ncerts\n");
  // apt-style changes: a tool in /usr/local/bin and a dpkg-visible change persist across restarts.
  env.ok({"exec", "deb", "--", "bash", "-c",
          "printf '#!/bin/bash\\necho installed\\n' > /usr/local/bin/mytool && chmod 755 /usr/local/bin/mytool && "
          "mkdir -p /var/lib/mytool && echo state > /var/lib/mytool/db && echo hi > /workspace/w"});
  env.ok({"sandbox", "restart", "deb"});
  EXPECT_EQ(env.ok({"exec", "deb", "--", "mytool"}), "installed\n");
  EXPECT_EQ(env.ok({"exec", "deb", "--", "cat", "/var/lib/mytool/db"}), "state\n");
  env.ok({"sandbox", "reset", "deb"});
  EXPECT_NE(env.moat({"exec", "deb", "--", "mytool"}).code, 0);
  EXPECT_EQ(env.ok({"exec", "deb", "--", "python3", "-c", "print('image intact')"}), "image intact\n");
  EXPECT_EQ(env.ok({"exec", "deb", "--", "cat", "/workspace/w"}), "hi\n");
}

// The web chat in a real browser: Debian's chromium, driven by tests/e2e/web_chat.mjs
// (playwright-core), against the real HTTP server, with a fake turn that streams live events (text,
// a tool call and its result) and then delivers "echo: <text>" durably. Proves the page works
// under its own CSP, renders tool activity, and shows the durable reply once.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "base/subprocess.h"
#include "channels/web/web_chat.h"
#include "channels_test_client.h"
#include "net/http_server.h"

namespace moat::channels {
namespace {

namespace fs = std::filesystem;

const fs::path kE2e = fs::path(MOAT_SOURCE_DIR) / "tests" / "e2e";

// Empty when the browser test can run; otherwise why not.
std::string browser_missing() {
  if (!fs::exists("/usr/bin/chromium") && getenv("CHROMIUM") == nullptr) {
    return "chromium is not installed (scripts/install-deps installs it)";
  }
  if (!find_program("node")) return "node is not installed (scripts/install-deps installs nodejs)";
  auto setup = run_process({(kE2e / "setup.sh").string()}, RunOptions{.timeout = std::chrono::minutes(3)});
  if (!setup || !setup->ok()) {
    return fmt::format("tests/e2e/setup.sh could not install playwright-core: {}",
                       setup ? setup->err : setup.error().message);
  }
  if (!fs::exists(kE2e / "node_modules" / "playwright-core")) return "tests/e2e/node_modules has no playwright-core";
  return {};
}

// What the agent runtime does for a turn, reduced to its effect on the channel.
class FakeTurns {
 public:
  FakeTurns(testing::FakeRouter& router, WebChat& chat) : router_(router), chat_(chat) {
    thread_ = std::thread([this] { run(); });
  }
  ~FakeTurns() {
    router_.stop();
    thread_.join();
  }

 private:
  void run() {
    for (size_t n = 1;; ++n) {
      auto e = router_.wait_for(n, std::chrono::seconds(60));
      if (!e) return;
      auto ev = [&](std::string kind, Json data) {
        chat_.live(router::LiveEvent{"web", e->chat, e->agent, std::move(kind), std::move(data)});
      };
      ev("turn_started", Json::object());
      ev("tool_call", Json{{"name", "echo_tool"}, {"input", {{"text", e->text}}}});
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      ev("tool_result", Json{{"name", "echo_tool"}, {"output", "<b>not bold</b> " + e->text}, {"is_error", false}});
      ev("text", Json{{"text", "echo: "}});
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      ev("text", Json{{"text", e->text}});
      ev("turn_ended", Json::object());
      router::Outbound o;
      o.key = fmt::format("o{}", n);
      o.channel = "web";
      o.chat = e->chat;
      o.agent = e->agent;
      o.text = "echo: " + e->text;
      o.in_reply_to = e->id;
      (void)chat_.deliver(o);
      (void)chat_.deliver(o);  // a redelivery must not show twice
    }
  }
  testing::FakeRouter& router_;
  WebChat& chat_;
  std::thread thread_;
};

TEST(WebChatBrowserTest, ChromiumSendsAMessageAndSeesTheStreamedReplyAndToolActivity) {
  if (auto why = browser_missing(); !why.empty()) GTEST_SKIP() << "browser test skipped: " << why;

  testing::FakeRouter router;
  WebChat chat(router.accept_fn(), [] { return std::vector<AgentInfo>{{"helper", "echoes"}, {"other", ""}}; });
  net::ServerOptions o;
  o.port = 0;
  net::HttpServer server(o);
  chat.register_routes(server);
  ASSERT_TRUE(server.start());
  FakeTurns turns(router, chat);

  std::string message = "hello <i>browser</i> & friends";
  auto r = run_process({"node", (kE2e / "web_chat.mjs").string(), server.base_url() + "/", "helper", message,
                        "echo: " + message, "--tool", "echo_tool", "--timeout", "30000"},
                       RunOptions{.timeout = std::chrono::seconds(120)});
  ASSERT_TRUE(r) << r.error().message;
  SCOPED_TRACE("web_chat.mjs stdout: " + r->out + "\nstderr: " + r->err);
  ASSERT_TRUE(r->ok()) << "the browser run failed";
  Json result = Json::parse(r->out, nullptr, false);
  ASSERT_TRUE(result.is_object());
  EXPECT_EQ(result["ok"], true);
  EXPECT_EQ(result["reply"], "echo: " + message);  // shown as text, not parsed as HTML
  EXPECT_EQ(result["reply_key"], "o1");
  EXPECT_NE(result["tool_activity"].get<std::string>().find("echo_tool"), std::string::npos);
  EXPECT_EQ(result["tool_result_collapsed"], true);
  EXPECT_EQ(result["agent_messages"], 1);  // the streamed text was replaced, not duplicated
  EXPECT_TRUE(result["problems"].empty()) << result["problems"].dump();

  auto envs = router.envelopes();
  ASSERT_EQ(envs.size(), 1u);
  EXPECT_EQ(envs[0].agent, "helper");
  EXPECT_EQ(envs[0].text, message);
  EXPECT_TRUE(envs[0].chat.starts_with("helper/web-"));
  server.stop();
}

}  // namespace
}  // namespace moat::channels

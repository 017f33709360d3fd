// Done-when 2 of issue 4, in a real browser: Debian's chromium, driven by playwright-core, opens
// moatd's web chat, picks the agent and writes to it; the agent's model (a provider double) asks for
// the bash tool, the command runs in the agent's own sandbox, and the reply that reports its output
// appears in the page, with the tool activity shown.
#include <gtest/gtest.h>

#include "base/json.h"
#include "base/subprocess.h"
#include "support/moat_env.h"
#include "support/provider_double.h"

namespace moat::testing {
namespace {

const std::filesystem::path kE2e = std::filesystem::path(MOAT_SOURCE_DIR) / "tests" / "e2e";

TEST(WebChatBrowser, AMessageRunsBashInTheSandboxAndTheReplyAppears) {
  MOAT_REQUIRE_ROOT();
  ASSERT_TRUE(std::filesystem::exists("/usr/bin/chromium")) << "chromium is missing: run scripts/install-deps";
  auto setup = run_process({"bash", (kE2e / "setup.sh").string()}, {.timeout = std::chrono::seconds(300)});
  ASSERT_TRUE(setup && setup->ok()) << "tests/e2e/setup.sh failed: " << (setup ? setup->err : setup.error().message);

  ProviderDouble model({.api_key = "web-key"});
  model.set_reply_function([](const ProviderRequest& r) {
    auto results = r.last_tool_results();
    if (!results.empty()) return ScriptedReply::say("The sandbox says: " + results[0]["content"].get<std::string>());
    return ScriptedReply::call("bash", {{"command", "echo browser-$((6*7))-from-$(cat /proc/sys/kernel/hostname)"}});
  });
  MoatEnv env(fmt::format("[agents.assistant]\nmodel = {{ provider = \"anthropic\", model = \"claude-sonnet-4-5\", "
                          "base_url = \"{}\" }}\n",
                          model.anthropic_base_url()));
  env.ok({"secret", "set", "web-key", "--host", fmt::format("127.0.0.1:{}", model.port()), "--header", "x-api-key: {}"},
         "web-key");
  std::string url = env.web_url();
  ASSERT_FALSE(url.empty());

  auto r = run_process({"node", (kE2e / "web_chat.mjs").string(), url + "/", "assistant", "what is six times seven?",
                        "browser-42-from-", "--tool", "bash", "--timeout", "60000"},
                       {.timeout = std::chrono::seconds(120)});
  ASSERT_TRUE(r) << r.error().message;
  auto j = Json::parse(r->out.substr(r->out.find('{')), nullptr, false);
  EXPECT_TRUE(r->ok() && !j.is_discarded() && j.value("ok", false)) << r->out << r->err;

  // The command really ran in the agent's sandbox: the audit trail has the tool call and its exec.
  std::string audit = env.ok({"audit", "export"});
  EXPECT_NE(audit.find("\"tool.call\""), std::string::npos);
  EXPECT_NE(audit.find("browser-$((6*7))"), std::string::npos);
}

}  // namespace
}  // namespace moat::testing

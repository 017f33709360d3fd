// The hostile agent hunts for a credential after a turn that used it: a command agent calls its model
// through the gateway with the placeholder, the gateway swaps in the real key, and then the agent
// searches everything it can see (process environments and arguments, every file including shell
// history) for the value. The host checks the audit records, moatd's log and the CLI too.
#include "base/fs.h"
#include "base/json.h"
#include "support/hostile_sandbox.h"
#include "support/provider_double.h"
#include "support/test_ca.h"

using namespace moat;
using namespace moat::testing;

namespace {

// The command agent: the conversation on stdin, one model call through the gateway's base-URL route
// with the placeholder key, the model's text on stdout; it keeps a shell history as a person would.
constexpr const char* kAgent = R"SH(#!/bin/sh
input=$(cat | tr -d '"\\' | tr '\n' ' ')
echo "wget --header \"x-api-key: $ANTHROPIC_API_KEY\" $ANTHROPIC_BASE_URL/v1/messages" >> /root/.ash_history
body="{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"$input\"}]}"
wget -q -Y off -O - --header "x-api-key: $ANTHROPIC_API_KEY" --header "anthropic-version: 2023-06-01" \
  --header "content-type: application/json" --post-data "$body" "$ANTHROPIC_BASE_URL/v1/messages" |
  sed -n 's/.*"text":"\([^"]*\)".*/\1/p'
)SH";

class HostileSecrets : public HostileSandbox {
 protected:
  HostileSecrets()
      : pki_("moat-hostile-pki"),
        ca_(pki_.path()),
        cert_(ca_.issue("model", {"localhost"})),
        model_({.api_key = key_, .tls = UpstreamServer::TlsFiles{cert_.cert_path, cert_.key_path}}) {
    model_.set_reply_function([](const ProviderRequest&) { return ScriptedReply::say("the model says hi"); });
  }
  std::string extra_config() const override {
    return fmt::format("[egress]\nupstream_ca_file = \"{}\"\n[egress.routes.anthropic]\nupstream = \"https://localhost:{}\"\n"
                       "env = \"ANTHROPIC_BASE_URL\"\n[agents.scripted]\ncommand = [\"/bin/sh\", \"/workspace/agent.sh\"]\n"
                       "[agents.scripted.egress]\nallow = [\"localhost:{}\", \"127.0.0.1:{}\"]\n",
                       ca_.ca_cert_path().string(), model_.port(), model_.port(), model_.port());
  }
  const std::string key_ = "sk-ant-hostile-" + std::to_string(::getpid()) + "-5ec2e7";
  TempDir pki_;
  TestCa ca_;
  CertFiles cert_;
  ProviderDouble model_;
};

TEST_P(HostileSecrets, AfterATurnTheCredentialIsNowhereTheAgentCanLook) {
  env_->ok({"secret", "set", "ANTHROPIC_API_KEY", "--host", fmt::format("localhost:{}", model_.port()), "--agent",
            "scripted", "--header", "x-api-key: {}", "--env", "ANTHROPIC_API_KEY"},
           key_);
  env_->ok({"sandbox", "create", "scripted"});
  env_->ok({"exec", "-i", "scripted", "--", "sh", "-c", "cat > /workspace/agent.sh"}, kAgent);
  auto reply = env_->moat({"chat", "scripted", "-m", "say hi"});
  ASSERT_EQ(reply.out, "the model says hi\n") << reply.err;
  auto reqs = model_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  report_.add("secrets", "the turn's model call", fmt::format("the upstream received the {} key",
                                                              reqs[0].api_key() == key_ ? "real" : "WRONG"),
              reqs[0].api_key() == key_);

  // The needle arrives on stdin, so the search itself puts it in no argv, environment or audit record.
  auto search = [&](const std::string& what, const std::string& script) {
    auto r = env_->moat({"exec", "scripted", "--", "sh", "-c", "read -r v; " + script + "; echo searched"}, key_ + "\n");
    report_.add("secrets", "search " + what + " for the value",
                r.out == "searched\n" ? "not found" : "FOUND in " + r.out.substr(0, 200), r.out == "searched\n");
  };
  search("every process's environment",
         "for f in /proc/[0-9]*/environ; do grep -l -F \"$v\" $f 2>/dev/null; done");
  search("every process's arguments", "for f in /proc/[0-9]*/cmdline; do grep -l -F \"$v\" $f 2>/dev/null; done");
  search("every file (the root, /workspace, /tmp, /run)",
         "for d in /*; do case $d in /proc|/sys|/dev) ;; *) grep -r -l -F \"$v\" $d 2>/dev/null;; esac; done");
  auto history = env_->moat({"exec", "scripted", "--", "cat", "/root/.ash_history"});
  report_.add("secrets", "the agent's shell history",
              history.out.find(key_) == std::string::npos ? "holds the placeholder only" : "HOLDS THE VALUE",
              history.out.find("moat-placeholder-ANTHROPIC_API_KEY") != std::string::npos &&
                  history.out.find(key_) == std::string::npos);

  auto audit = env_->ok({"audit", "export"});
  report_.add("secrets", "the audit records (which name the credential)",
              audit.find(key_) == std::string::npos ? "the value is absent" : "THE VALUE IS THERE",
              audit.find(key_) == std::string::npos && audit.find("ANTHROPIC_API_KEY") != std::string::npos);
  auto log = read_file(env_->state_dir() / "moatd.log").value_or("");
  report_.add("secrets", "moatd's log", log.find(key_) == std::string::npos ? "the value is absent" : "THE VALUE IS THERE",
              log.find(key_) == std::string::npos);
  auto ls = env_->ok({"--json", "secret", "ls"});
  report_.add("secrets", "`moat secret ls --json`", ls.find(key_) == std::string::npos ? "names only" : "RETURNS THE VALUE",
              ls.find(key_) == std::string::npos);
}

MOAT_HOSTILE_ON_EVERY_RUNTIME(HostileSecrets);

}  // namespace

// The agent loop against a REAL sandbox (busybox image, runc, moat-init), with a scripted model:
// tools run inside the sandbox and what they produce reaches the model's next request; command
// agents run their command there. The SandboxManager is in-process (no moatd, no gateway), so
// these tests need root like the other sandbox tests.
#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>

#include "agent/sandbox_workbench.h"
#include "store/attachment_stage.h"
#include "support/temp_dir.h"
#include "unit/agent_test_doubles.h"

using namespace moat;
using namespace moat::agent;
using namespace moat::agent::testing;
namespace fs = std::filesystem;

namespace {

constexpr const char* kAgent = "it-agent";

// One store, audit log, image store and manager for the suite: creating a sandbox is the slow part.
struct World {
  moat::testing::TempDir state{"moat-agent-it"};
  std::optional<Database> db;
  std::unique_ptr<AuditLog> audit;
  std::optional<image::ImageStore> images;
  std::unique_ptr<SandboxManager> manager;
  std::shared_ptr<SandboxWorkbench> bench;
  std::unique_ptr<AttachmentStage> stage;

  std::string setup() {
    fs::permissions(state.path(), fs::perms(0711));
    auto d = Database::open(state.path() / "moat.db");
    if (!d) return d.error().message;
    db.emplace(std::move(*d));
    audit = std::make_unique<AuditLog>(*db);
    auto im = image::ImageStore::open(state.path() / "images");
    if (!im) return im.error().message;
    images.emplace(std::move(*im));
    auto tar = state.path() / "tiny.tar.gz";
    moat::testing::make_busybox_tarball(tar);
    if (auto r = images->import_tarball("tiny", tar); !r) return r.error().message;
    ManagerOptions mo;
    mo.state_dir = state.path();
    mo.init_binary = fs::path(MOAT_BUILD_DIR) / "moat-init";
    mo.defaults.image = "tiny";
    mo.defaults.disk_bytes = 256ull << 20;
    mo.defaults.memory_bytes = 256ull << 20;
    manager = std::make_unique<SandboxManager>(mo, *db, *audit, *images);
    if (auto st = manager->prepare(); !st) return st.error().message;
    auto st = AttachmentStage::open(state.path() / "attachments", {.max_file = 64 << 10});
    if (!st) return st.error().message;
    stage = std::move(*st);
    AgentSpec spec;
    spec.name = kAgent;
    bench = std::make_shared<SandboxWorkbench>(*manager, kAgent, [spec] { return sandbox_request_for(spec); });
    return "";
  }

  ~World() {
    if (manager) (void)manager->remove(kAgent, true, "test");
    bench.reset();
    manager.reset();
  }
};

World* world = nullptr;

class AgentSandbox : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    world = new World();
    setup_error_ = world->setup();
  }
  static void TearDownTestSuite() {
    delete world;
    world = nullptr;
  }

  void SetUp() override {
    MOAT_REQUIRE_ROOT();
    ASSERT_EQ(setup_error_, "");
    spec_.name = kAgent;
    spec_.model.model = "claude-sonnet-4-5";
    RuntimeHooks h;
    h.workbench = [](const AgentSpec&) -> Result<std::shared_ptr<Workbench>> { return world->bench; };
    h.provider = [this](const AgentSpec&) -> Result<std::unique_ptr<Provider>> {
      return std::make_unique<ScriptedProvider>(script_);
    };
    h.read_attachment = [](std::string_view staged) { return world->stage->read(staged); };
    runtime_ = std::make_unique<AgentRuntime>(*world->db, *world->audit, std::move(h));
  }

  Result<router::TurnResult> run(std::string text, std::vector<router::Attachment> attachments = {}) {
    router::Turn t;
    t.agent = kAgent;
    t.channel = "web";
    t.chat = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    router::Envelope e;
    e.channel = t.channel;
    e.chat = t.chat;
    e.sender = "u1";
    e.sender_name = "Ada";
    e.text = std::move(text);
    e.attachments = std::move(attachments);
    t.envelopes.push_back(e);
    return runtime_->run_turn(spec_, t, {});
  }

  // Runs one scripted tool call and returns the result the model got back.
  ContentBlock tool(std::string name, Json input) {
    script_->push(tool_reply({tool_use("t1", std::move(name), std::move(input))}));
    script_->push(text_reply("ok"));
    size_t before = script_->count();
    auto r = run("do it");
    EXPECT_TRUE(r) << r.error().message;
    auto res = tool_results(script_->request(before + 1));
    EXPECT_EQ(res.size(), 1u);
    return res.empty() ? ContentBlock{} : res[0];
  }

  static std::string setup_error_;
  std::shared_ptr<Script> script_ = std::make_shared<Script>();
  std::unique_ptr<AgentRuntime> runtime_;
  AgentSpec spec_;
};
std::string AgentSandbox::setup_error_;

}  // namespace

TEST_F(AgentSandbox, BashRunsInTheSandboxAndItsResultReachesTheModel) {
  auto r = tool("bash", Json{{"command", "echo hello from $(hostname) in $(pwd); echo oops >&2; exit 3"}});
  EXPECT_TRUE(r.is_error);
  EXPECT_NE(r.text.find("hello from it-agent in /workspace\n"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("[stderr]\noops\n"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("[exit code: 3]"), std::string::npos) << r.text;
  // The manager audited the exec, attributed to the agent.
  auto events = world->audit->read_after(0, 100000);
  ASSERT_TRUE(events);
  bool exec = false, call = false, result = false;
  for (auto& e : *events) {
    exec |= e.kind == "exec" && e.actor == "agent:it-agent" && e.data["argv"][0] == "/bin/sh";
    call |= e.kind == "tool.call" && e.subject == "bash";
    result |= e.kind == "tool.result" && e.subject == "bash" && e.data["is_error"] == true;
  }
  EXPECT_TRUE(exec && call && result);
}

TEST_F(AgentSandbox, LongOutputIsCutWithANote) {
  auto r = tool("bash", Json{{"command", "head -c 100000 /dev/zero | tr '\\000' x"}});
  EXPECT_FALSE(r.is_error) << r.text;
  EXPECT_NE(r.text.find("[output truncated: 69280 bytes not shown]"), std::string::npos) << r.text.substr(30000);
  EXPECT_LT(r.text.size(), 31 * 1024u);
}

TEST_F(AgentSandbox, TimeoutKillsTheCommand) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = tool("bash", Json{{"command", "echo started; sleep 30"}, {"timeout_seconds", 1}});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15));
  EXPECT_TRUE(r.is_error);
  EXPECT_NE(r.text.find("started"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("[timed out after 1 s"), std::string::npos) << r.text;
}

TEST_F(AgentSandbox, FileToolsWorkInsideTheSandbox) {
  auto w = tool("write_file", Json{{"path", "notes/deep/a.txt"}, {"content", "one two two\nline2\nline3\n"}});
  EXPECT_FALSE(w.is_error) << w.text;
  auto none = tool("edit_file", Json{{"path", "notes/deep/a.txt"}, {"old_string", "three"}, {"new_string", "3"}});
  EXPECT_TRUE(none.is_error);
  EXPECT_NE(none.text.find("not found"), std::string::npos) << none.text;
  auto two = tool("edit_file", Json{{"path", "notes/deep/a.txt"}, {"old_string", "two"}, {"new_string", "2"}});
  EXPECT_TRUE(two.is_error);
  EXPECT_NE(two.text.find("occurs 2 times"), std::string::npos) << two.text;
  auto one = tool("edit_file", Json{{"path", "/workspace/notes/deep/a.txt"}, {"old_string", "one"}, {"new_string", "1"}});
  EXPECT_FALSE(one.is_error) << one.text;
  auto part = tool("read_file", Json{{"path", "notes/deep/a.txt"}, {"offset", 2}, {"limit", 1}});
  EXPECT_EQ(part.text, "line2\n");
  auto all = tool("read_file", Json{{"path", "notes/deep/a.txt"}});
  EXPECT_EQ(all.text, "1 two two\nline2\nline3\n");
  auto missing = tool("read_file", Json{{"path", "nope.txt"}});
  EXPECT_TRUE(missing.is_error);
  auto ls = tool("list_files", Json{{"path", "notes"}, {"depth", 3}});
  EXPECT_FALSE(ls.is_error) << ls.text;
  EXPECT_NE(ls.text.find("deep/\n"), std::string::npos) << ls.text;
  EXPECT_NE(ls.text.find("deep/a.txt\n"), std::string::npos) << ls.text;
  auto cat = world->bench->run({"cat", "/workspace/notes/deep/a.txt"}, {}, std::chrono::seconds(10), 1024);
  ASSERT_TRUE(cat);
  EXPECT_EQ(cat->out, "1 two two\nline2\nline3\n");
}

TEST_F(AgentSandbox, RememberReachesTheNextTurnThroughMemoryMd) {
  (void)world->bench->run({"rm", "-f", "/workspace/MEMORY.md"}, {}, std::chrono::seconds(10), 1024);
  auto r = tool("remember", Json{{"note", "the deploy key lives in vault slot 7"}});
  EXPECT_FALSE(r.is_error) << r.text;
  script_->push(text_reply("sure"));
  ASSERT_TRUE(run("what do you remember?"));
  auto sys = script_->request(script_->count() - 1).system;
  EXPECT_NE(sys.find("# Memory (/workspace/MEMORY.md)\n- 20"), std::string::npos) << sys;
  EXPECT_NE(sys.find("the deploy key lives in vault slot 7"), std::string::npos);
}

TEST_F(AgentSandbox, WebFetchRefusesNonHttpUrlsAndReportsFailures) {
  auto bad = tool("web_fetch", Json{{"url", "file:///etc/passwd"}});
  EXPECT_TRUE(bad.is_error);
  // No gateway in this test: the fetch fails inside the sandbox, and the model is told so.
  auto r = tool("web_fetch", Json{{"url", "http://example.invalid/"}});
  EXPECT_TRUE(r.is_error) << r.text;
}

TEST_F(AgentSandbox, CommandAgentRepliesWithItsStdout) {
  auto st = world->bench->write_file("/workspace/echo-agent.sh",
                                     "#!/bin/sh\n"
                                     "input=$(cat)\n"
                                     "echo \"agent=$MOAT_AGENT channel=$MOAT_CHANNEL chat=$MOAT_CHAT\"\n"
                                     "printf '%s\\n' \"$input\" | grep -c '^\\[user\\]'\n"
                                     "printf '%s\\n' \"$input\" | tail -n 1\n");
  ASSERT_TRUE(st) << st.error().message;
  spec_.command = {"/bin/sh", "/workspace/echo-agent.sh"};
  auto r1 = run("first");
  ASSERT_TRUE(r1) << r1.error().message;
  ASSERT_EQ(r1->replies.size(), 1u);
  EXPECT_EQ(r1->replies[0], "agent=it-agent channel=web chat=CommandAgentRepliesWithItsStdout\n1\nAda: first");
  // The second turn's stdin carries the first exchange too.
  auto r2 = run("second");
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_NE(r2->replies.at(0).find("\n2\nAda: second"), std::string::npos) << r2->replies[0];
  spec_.command = {"/bin/sh", "-c", "echo broken >&2; exit 5"};
  auto bad = run("third");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("exited with 5: broken"), std::string::npos) << bad.error().message;
}

// The manager's own check (config/limits.h) stands behind every caller: an agent spec built in code,
// which never went through agent_spec_from_json, or a CreateRequest with a limit switched off, makes
// no sandbox.
TEST_F(AgentSandbox, TheManagerRefusesLimitsOutOfRangeWhateverTheCaller) {
  auto& m = *world->manager;
  struct Case {
    std::function<void(CreateRequest&)> set;
    std::string says;
  };
  std::vector<Case> cases = {
      {[](CreateRequest& r) { r.pids = 0; }, "pids: 0 is out of range; allowed 16 to 4194304"},
      {[](CreateRequest& r) { r.pids = 1; }, "pids: 1 is out of range"},
      {[](CreateRequest& r) { r.cpus = -1; }, "cpus: -1 is out of range; allowed 0.01 to 1024 CPUs"},
      {[](CreateRequest& r) { r.cpus = 0; }, "cpus: 0 is out of range"},
      {[](CreateRequest& r) { r.memory_bytes = 0; }, "memory_bytes: 0B is out of range; allowed 32MiB to 4TiB"},
      {[](CreateRequest& r) { r.disk_bytes = 1 << 20; }, "disk_bytes: 1MiB is out of range; allowed 64MiB to 8TiB"},
  };
  for (const auto& c : cases) {
    CreateRequest req;
    req.name = "limits-x";
    c.set(req);
    auto made = m.create(req, "test");
    ASSERT_FALSE(made) << c.says << " was accepted";
    EXPECT_EQ(made.error().kind, ErrorKind::InvalidInput);
    EXPECT_NE(made.error().message.find(c.says), std::string::npos) << made.error().message;
  }
  AgentSpec unbounded;
  unbounded.name = "limits-agent";
  unbounded.pids = 0;
  SandboxWorkbench bench(m, unbounded.name, [unbounded] { return sandbox_request_for(unbounded); });
  auto st = bench.run({"true"}, "", std::chrono::seconds(10), 1024);  // creates the sandbox first
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("pids: 0 is out of range"), std::string::npos) << st.error().message;
  EXPECT_EQ(m.get("limits-x").error().kind, ErrorKind::NotFound);
  EXPECT_EQ(m.get("limits-agent").error().kind, ErrorKind::NotFound);
  EXPECT_FALSE(fs::exists(world->state.path() / "sandboxes" / "limits-x"));
}

// An attachment a channel staged on the host is in the sandbox when the turn starts (copied through
// moat-init), the model is told where, and one that was too large is named as unavailable while the
// turn still runs.
TEST_F(AgentSandbox, StagedAttachmentsAreCopiedIntoTheSandboxAndNamedInThePrompt) {
  auto w = world->stage->begin("telegram", "notes from Ada.txt");
  ASSERT_TRUE(w);
  ASSERT_TRUE(w->write("line one\nline two\n"));
  auto staged = w->commit();
  ASSERT_TRUE(staged) << staged.error().message;
  std::vector<router::Attachment> atts{
      {.name = "notes from Ada.txt", .mime = "text/plain", .size = 18, .staged = *staged},
      {.name = "video.mp4", .mime = "video/mp4", .size = 50u << 20, .unavailable = "larger than the 64 KiB limit"}};
  std::string path = fmt::format("/workspace/attachments/{}", staged->substr(staged->find('/') + 1));
  script_->push(tool_reply({tool_use("t1", "bash", Json{{"command", "cat '" + path + "'"}})}));
  script_->push(text_reply("read it"));
  size_t before = script_->count();
  auto r = run("please read the attached notes", atts);
  ASSERT_TRUE(r) << r.error().message;
  auto first = script_->request(before);
  std::string prompt = first.messages.back().content[0].text;
  EXPECT_NE(prompt.find("[attachment: notes from Ada.txt (text/plain, 18 bytes) saved at " + path + "]"), std::string::npos)
      << prompt;
  EXPECT_NE(prompt.find("[attachment: video.mp4 (video/mp4, 52428800 bytes) not available: larger than the 64 KiB limit]"),
            std::string::npos)
      << prompt;
  auto res = tool_results(script_->request(before + 1));
  ASSERT_EQ(res.size(), 1u);
  EXPECT_TRUE(res[0].text.starts_with("line one\nline two\n")) << res[0].text;
}

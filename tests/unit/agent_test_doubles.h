#pragma once
// Test doubles for the agent loop: a Provider that replays scripted model responses and records
// every request, and an in-memory Workbench for tests that need no real sandbox.
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "agent/agent_runtime.h"

namespace moat::agent::testing {

struct Script {
  std::mutex mu;
  std::deque<Result<ModelResponse>> responses;
  std::vector<ModelRequest> requests;

  void push(Result<ModelResponse> r) {
    std::lock_guard g(mu);
    responses.push_back(std::move(r));
  }
  ModelRequest request(size_t i) {
    std::lock_guard g(mu);
    return requests.at(i);
  }
  size_t count() {
    std::lock_guard g(mu);
    return requests.size();
  }
};

class ScriptedProvider : public Provider {
 public:
  explicit ScriptedProvider(std::shared_ptr<Script> s) : s_(std::move(s)) {}
  Result<ModelResponse> complete(const ModelRequest& req, const StreamCallbacks& cb) override {
    Result<ModelResponse> r;
    {
      std::lock_guard g(s_->mu);
      s_->requests.push_back(req);
      if (s_->responses.empty()) {
        ModelResponse done;
        done.content.push_back(ContentBlock::text_block("(script ended)"));
        done.stop_reason = "end_turn";
        return done;
      }
      r = std::move(s_->responses.front());
      s_->responses.pop_front();
    }
    if (r && cb.on_text)
      for (const auto& b : r->content)
        if (b.kind == ContentBlock::Kind::Text) cb.on_text(b.text);
    return r;
  }

 private:
  std::shared_ptr<Script> s_;
};

inline ModelResponse text_reply(std::string text, uint64_t in = 100, uint64_t out = 20) {
  ModelResponse r;
  r.content.push_back(ContentBlock::text_block(std::move(text)));
  r.stop_reason = "end_turn";
  r.usage = {in, out};
  return r;
}

inline ContentBlock tool_use(std::string id, std::string name, Json input) {
  ContentBlock b;
  b.kind = ContentBlock::Kind::ToolUse;
  b.id = std::move(id);
  b.name = std::move(name);
  b.input = std::move(input);
  return b;
}

inline ModelResponse tool_reply(std::vector<ContentBlock> calls, std::string text = "", uint64_t in = 100,
                                uint64_t out = 20) {
  ModelResponse r;
  if (!text.empty()) r.content.push_back(ContentBlock::text_block(std::move(text)));
  for (auto& c : calls) r.content.push_back(std::move(c));
  r.stop_reason = "tool_use";
  r.usage = {in, out};
  return r;
}

// The tool_result blocks of the last message of a request.
inline std::vector<ContentBlock> tool_results(const ModelRequest& req) {
  std::vector<ContentBlock> out;
  if (req.messages.empty()) return out;
  for (const auto& b : req.messages.back().content)
    if (b.kind == ContentBlock::Kind::ToolResult) out.push_back(b);
  return out;
}

class MemoryWorkbench : public Workbench {
 public:
  Result<CommandResult> run(const std::vector<std::string>& argv, std::string_view, std::chrono::milliseconds, size_t,
                            const std::vector<std::string>& env, const std::string&) override {
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    std::lock_guard g(mu);
    runs.push_back(argv);
    envs.push_back(env);
    return next_result;
  }
  Result<std::string> read_file(const std::string& path, size_t) override {
    std::lock_guard g(mu);
    auto it = files.find(path);
    if (it == files.end()) return fail(ErrorKind::NotFound, "no such file: '{}'", path);
    return it->second;
  }
  Status write_file(const std::string& path, std::string_view data) override {
    std::lock_guard g(mu);
    files[path] = std::string(data);
    return {};
  }

  std::mutex mu;
  std::map<std::string, std::string> files;
  std::vector<std::vector<std::string>> runs;
  std::vector<std::vector<std::string>> envs;
  CommandResult next_result{0, 0, false, "", "", false};
  std::chrono::milliseconds delay{0};  // how long each run() takes
};

}  // namespace moat::agent::testing

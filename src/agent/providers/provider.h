#pragma once
// A model provider, as the agent loop sees it: one call takes the conversation and the tools and
// returns the model's next message (text and tool calls), streaming text as it comes. Two wire
// formats implement it: Anthropic's Messages API and OpenAI-compatible chat completions (OpenAI,
// Ollama, vLLM, llama.cpp server). moatd makes these calls itself; the key never enters a sandbox.
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/json.h"
#include "base/result.h"
#include "net/backoff.h"
#include "net/url.h"

namespace moat::agent {

struct ContentBlock {
  enum class Kind { Text, ToolUse, ToolResult } kind = Kind::Text;
  std::string text;     // Text; ToolResult: the result's text
  std::string id;       // ToolUse: the call's id; ToolResult: the id it answers
  std::string name;     // ToolUse: the tool's name
  Json input;           // ToolUse: the arguments (an object)
  bool is_error = false;  // ToolResult

  static ContentBlock text_block(std::string t) { return {Kind::Text, std::move(t)}; }
};

struct Message {
  std::string role;  // "user" | "assistant"
  std::vector<ContentBlock> content;
};

struct ToolSpec {
  std::string name;
  std::string description;
  Json input_schema;  // JSON Schema of the arguments object
};

struct ModelRequest {
  std::string model;
  std::string system;
  std::vector<Message> messages;
  std::vector<ToolSpec> tools;
  int max_tokens = 4096;
};

struct Usage {
  uint64_t input_tokens = 0, output_tokens = 0;
};

struct ModelResponse {
  std::vector<ContentBlock> content;  // Text and ToolUse blocks, in order
  std::string stop_reason;            // normalised: "end_turn" | "tool_use" | "max_tokens" | other
  Usage usage;
};

// One extra header per credential, resolved per call by the caller (from the vault, bound to the
// agent and the provider's host:port like any other destination).
struct Credential {
  std::string header;  // e.g. "x-api-key", "authorization"
  std::string value;   // wiped by the provider after use
};
using CredentialSource = std::function<Result<std::vector<Credential>>(const std::string& host, uint16_t port)>;

struct ProviderConfig {
  std::string kind;      // "anthropic" | "openai"
  std::string base_url;  // "https://api.anthropic.com", "https://api.openai.com/v1", "http://127.0.0.1:11434/v1"
  std::chrono::milliseconds timeout{120000};  // per HTTP attempt: until the response head, then the
                                              // longest silence allowed while the answer streams
  int max_retries = 4;                        // on 429 (honouring retry-after) and 5xx / connection errors
  std::chrono::milliseconds max_backoff{30000};
  std::chrono::milliseconds initial_backoff{500};  // first backoff before jitter; doubles per retry
  std::filesystem::path extra_ca_file;  // extra CAs to trust (tests); the host's store always applies
};

// The retry policy a provider's config describes: exponential from initial_backoff, capped at
// max_backoff, each wait cut by up to half at random (agents that failed together spread out),
// max_retries retries after the first attempt. A provider's own retry-after hint replaces the wait.
net::Backoff backoff_policy(const ProviderConfig& cfg);

struct StreamCallbacks {
  std::function<void(std::string_view text_delta)> on_text;  // may be empty
  std::function<bool()> cancelled;                           // may be empty; true stops the call
};

class Provider {
 public:
  virtual ~Provider() = default;
  // Unavailable for network failures after the retries; ResourceLimit for 429 after the retries;
  // InvalidInput for a 4xx the provider explains (bad key, unknown model) with its message quoted.
  virtual Result<ModelResponse> complete(const ModelRequest& req, const StreamCallbacks& cb) = 0;
};

// A provider's base_url ("https://api.anthropic.com", "http://127.0.0.1:11434/v1"): http or https,
// an optional port and path prefix, no query or fragment; InvalidInput naming the problem.
Result<net::Url> parse_base_url(std::string_view text);

Result<std::unique_ptr<Provider>> make_provider(const ProviderConfig& cfg, CredentialSource credentials);

}  // namespace moat::agent

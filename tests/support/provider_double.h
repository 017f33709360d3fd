#pragma once
// A double of the two model-provider wire formats moatd speaks, on a real UpstreamServer (real
// sockets, optional TLS from TestCa, chunked streaming):
//
//   POST /v1/messages                          Anthropic Messages API
//   POST /v1/chat/completions, /chat/completions  OpenAI-compatible chat completions
//
// Each answer is streamed exactly as the real services do when the request says "stream": true
// (Anthropic's event sequence message_start, content_block_start, ping, content_block_delta...,
// content_block_stop, message_delta, message_stop; OpenAI's chat.completion.chunk objects with
// tool_calls fragments by index, a usage-only last chunk when stream_options.include_usage, and
// "data: [DONE]"), and as one JSON object otherwise. Errors use each service's error shapes.
// Requests are checked the way the services check them (API key, anthropic-version, required
// fields, every tool result answering a tool call of the previous assistant turn), so a client
// that serialises a conversation wrongly fails here as it would in production.
//
// What the model "says" is scripted: a FIFO of ScriptedReply consumed one per request, then a
// reply function that sees the parsed request (to answer from the conversation), then a default
// that echoes the last user message. Failures are scripted the same way (429 + retry-after, 500,
// 529 overloaded, malformed or cut streams, slow chunks, an HTML page instead of the wire format,
// a request never answered).
//
//   ProviderDouble model({.api_key = "sk-test"});
//   model.enqueue(ScriptedReply::call("bash", {{"command", "ls"}}));  // first turn: a tool call
//   model.enqueue(ScriptedReply::say("Done: 3 files."));              // second turn: text
//   model.set_reply_function([](const ProviderRequest& r) {          // afterwards: by content
//     return ScriptedReply::say("echo: " + r.last_user_text());
//   });
//   ... point the provider at model.anthropic_base_url() or model.openai_base_url() ...
//   auto reqs = model.requests();  // reqs[1].body["messages"] holds the tool_result
//
// Thread-safe; usable from any number of client connections at once.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/upstream_server.h"

namespace moat::testing {

struct ScriptedToolCall {
  std::string id;  // empty = generated in the wire's style ("toolu_01...", "call_...")
  std::string name;
  nlohmann::json input = nlohmann::json::object();
};

// One scripted model turn, or one injected failure.
struct ScriptedReply {
  enum class Fault {
    None,
    HttpError,        // answer `status` with the wire's error body (error_type, error_message) and retry_after
    StreamError,      // 200 stream that breaks off with an in-stream error (Anthropic "event: error",
                      // OpenAI a chunk {"error":{...}}) after the first text delta
    MalformedStream,  // 200 event stream whose data is not JSON
    CutStream,        // 200 stream that stops halfway and closes the connection (no message_stop / [DONE])
    Garbage,          // 200 text/html page that is neither wire format (a captive portal or a misrouted proxy);
                      // it echoes the request's headers, as such debug pages do, key included
    Hang,             // reads the request and never answers; the connection stays open until the double stops
  };

  std::vector<std::string> text;            // text deltas in order: one event (chunk) each
  std::vector<ScriptedToolCall> tool_calls;  // after the text, one content block / tool_calls entry each
  std::string stop_reason;                   // Anthropic vocabulary ("end_turn", "tool_use", "max_tokens");
                                             // empty = tool_use when there are tool calls, else end_turn.
                                             // The OpenAI wire maps it to stop / tool_calls / length.
  std::optional<uint64_t> input_tokens;      // reported usage; empty = about body bytes / 4
  std::optional<uint64_t> output_tokens;     // empty = number of deltas (text and JSON pieces)
  std::chrono::milliseconds delay{0};        // pause before each event after the first (slow streams)

  Fault fault = Fault::None;
  int status = 200;                          // HttpError
  std::string error_type;                    // HttpError/StreamError: the wire's error type; empty = by status
  std::string error_message;                 // HttpError/StreamError; empty = the service's usual text
  std::optional<std::string> retry_after;    // HttpError: a retry-after header value ("2" or an HTTP date)
  std::vector<std::pair<std::string, std::string>> extra_headers;  // added to the response

  // Text split into word-sized deltas ("Hello world" -> "Hello", " world").
  static ScriptedReply say(std::string_view text);
  static ScriptedReply say_pieces(std::vector<std::string> pieces);
  // One tool call (optionally after some text).
  static ScriptedReply call(std::string name, nlohmann::json input, std::string id = "", std::string_view text = "");
  static ScriptedReply rate_limited(std::string retry_after = "1");  // 429
  static ScriptedReply server_error(int status = 500);               // 500 api_error / server_error
  static ScriptedReply overloaded();                                 // 529 overloaded_error (OpenAI wire: 503)
  static ScriptedReply http_error(int status, std::string message = "");
  static ScriptedReply stream_error(std::string message = "Overloaded");
  static ScriptedReply malformed_stream();
  static ScriptedReply cut_stream();
  static ScriptedReply garbage();
  static ScriptedReply hang();
};

enum class ProviderWire { Anthropic, OpenAi };

// One request as the double received it.
struct ProviderRequest {
  ProviderWire wire = ProviderWire::Anthropic;
  RecordedRequest http;  // method, target, every header (x-api-key, authorization...), raw body
  nlohmann::json body;   // the parsed JSON body (null when it was not JSON)
  bool stream = false;   // body["stream"] == true

  std::string model() const;
  std::string system() const;           // Anthropic "system" or the OpenAI system message
  std::string last_user_text() const;   // text of the last user message (tool results not included)
  std::optional<std::string> api_key() const;  // x-api-key, or the token of "authorization: Bearer ..."
  // Tool results in the last user turn (Anthropic tool_result blocks, OpenAI role "tool" messages)
  // as {tool_use_id, content, is_error} objects, in order.
  nlohmann::json last_tool_results() const;
};

using ReplyFunction = std::function<ScriptedReply(const ProviderRequest&)>;

struct ProviderDoubleOptions {
  std::string api_key;                        // non-empty: required (x-api-key / Bearer), else the wire's 401
  std::optional<UpstreamServer::TlsFiles> tls;  // serve HTTPS with this certificate (from TestCa::issue)
  std::string bind_address = "127.0.0.1";
};

class ProviderDouble {
 public:
  explicit ProviderDouble(ProviderDoubleOptions options = {});
  ~ProviderDouble();
  ProviderDouble(const ProviderDouble&) = delete;
  ProviderDouble& operator=(const ProviderDouble&) = delete;

  std::string origin() const;              // "http://127.0.0.1:PORT" (https with tls)
  std::string anthropic_base_url() const;  // origin(): the provider appends /v1/messages
  std::string openai_base_url() const;     // origin() + "/v1": the provider appends /chat/completions
  uint16_t port() const;

  void enqueue(ScriptedReply reply);  // answers the next request not answered by an earlier one
  size_t pending() const;             // replies still queued
  void set_reply_function(ReplyFunction fn);  // when the queue is empty; empty = echo the last user text

  std::vector<ProviderRequest> requests() const;  // every request to a model endpoint, in arrival order
  bool wait_for_requests(size_t n, Clock::duration timeout = std::chrono::seconds(10)) const;
  void clear_requests();
  size_t replies_served() const;  // 200 answers completed

  UpstreamServer& server() { return *server_; }

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::unique_ptr<UpstreamServer> server_;  // last: its threads stop before state_ goes
};

}  // namespace moat::testing

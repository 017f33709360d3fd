#include "support/provider_double.h"

#include <ctime>
#include <deque>
#include <mutex>
#include <random>

#include <fmt/format.h>

namespace moat::testing {
namespace {

using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;  // keeps field order as the services send it

std::string random_suffix(size_t n) {
  static constexpr std::string_view kAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string out;
  for (size_t i = 0; i < n; ++i) out += kAlphabet[rng() % kAlphabet.size()];
  return out;
}

std::string str(const Json& obj, const char* field) {
  if (!obj.is_object()) return {};
  auto it = obj.find(field);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A boolean field, false when absent or not a boolean (client bodies may be anything).
bool flag(const Json& obj, const char* field) {
  if (!obj.is_object()) return false;
  auto it = obj.find(field);
  return it != obj.end() && it->is_boolean() && it->get<bool>();
}

// Splits a JSON text into a few pieces, the way the services stream tool arguments.
std::vector<std::string> json_pieces(const std::string& json) {
  std::vector<std::string> out;
  const size_t step = std::max<size_t>(4, json.size() / 3 + 1);
  for (size_t i = 0; i < json.size(); i += step) out.push_back(json.substr(i, step));
  return out;
}

std::string openai_finish(const std::string& stop_reason) {
  if (stop_reason == "end_turn" || stop_reason == "stop_sequence") return "stop";
  if (stop_reason == "tool_use") return "tool_calls";
  if (stop_reason == "max_tokens") return "length";
  return stop_reason;
}

// Text content of a message in either wire's shape (a string, or an array of blocks/parts).
std::string content_text(const Json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string out;
  if (content.is_array())
    for (const auto& part : content)
      if (str(part, "type") == "text") out += str(part, "text");
  return out;
}

HttpResponse anthropic_error(int status, std::string type, std::string message) {
  OJson doc = {{"type", "error"}, {"error", {{"type", type}, {"message", message}}}};
  std::string id = "req_011C" + random_suffix(22);
  doc["request_id"] = id;
  HttpResponse r = HttpResponse::json(status, doc.dump());
  r.headers.emplace_back("request-id", id);
  return r;
}

HttpResponse openai_error(int status, std::string type, std::string message, Json code = nullptr) {
  OJson doc = {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", code}}}};
  HttpResponse r = HttpResponse::json(status, doc.dump());
  r.headers.emplace_back("x-request-id", "req_" + random_suffix(32));
  return r;
}

std::string default_error_type(ProviderWire wire, int status) {
  if (wire == ProviderWire::Anthropic) {
    switch (status) {
      case 400: return "invalid_request_error";
      case 401: return "authentication_error";
      case 403: return "permission_error";
      case 404: return "not_found_error";
      case 413: return "request_too_large";
      case 429: return "rate_limit_error";
      case 529: return "overloaded_error";
      default: return "api_error";
    }
  }
  switch (status) {
    case 401:
    case 400:
    case 404: return "invalid_request_error";
    case 429: return "requests";
    case 503: return "server_error";
    default: return "server_error";
  }
}

std::string default_error_message(ProviderWire wire, int status) {
  switch (status) {
    case 429:
      return wire == ProviderWire::Anthropic
                 ? "Number of request tokens has exceeded your per-minute rate limit"
                 : "Rate limit reached for requests. Please try again in 1s.";
    case 529: return "Overloaded";
    case 503: return "The engine is currently overloaded, please try again later";
    case 500:
      return wire == ProviderWire::Anthropic ? "Internal server error"
                                             : "The server had an error while processing your request. Sorry about that!";
    case 404: return "model: not found";
    default: return fmt::format("HTTP {}", status);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ScriptedReply

ScriptedReply ScriptedReply::say(std::string_view text) {
  ScriptedReply r;
  size_t start = 0;
  for (size_t i = 1; i <= text.size(); ++i)
    if (i == text.size() || text[i] == ' ') {
      r.text.emplace_back(text.substr(start, i - start));
      start = i;
    }
  return r;
}

ScriptedReply ScriptedReply::say_pieces(std::vector<std::string> pieces) {
  ScriptedReply r;
  r.text = std::move(pieces);
  return r;
}

ScriptedReply ScriptedReply::call(std::string name, nlohmann::json input, std::string id, std::string_view text) {
  ScriptedReply r = say(text);
  r.tool_calls.push_back({std::move(id), std::move(name), std::move(input)});
  return r;
}

ScriptedReply ScriptedReply::rate_limited(std::string retry_after) {
  ScriptedReply r = http_error(429);
  if (!retry_after.empty()) r.retry_after = std::move(retry_after);
  return r;
}

ScriptedReply ScriptedReply::server_error(int status) { return http_error(status); }
ScriptedReply ScriptedReply::overloaded() { return http_error(529); }

ScriptedReply ScriptedReply::http_error(int status, std::string message) {
  ScriptedReply r;
  r.fault = Fault::HttpError;
  r.status = status;
  r.error_message = std::move(message);
  return r;
}

ScriptedReply ScriptedReply::stream_error(std::string message) {
  ScriptedReply r = say("Partial answer");
  r.fault = Fault::StreamError;
  r.error_type = "overloaded_error";
  r.error_message = std::move(message);
  return r;
}

ScriptedReply ScriptedReply::malformed_stream() {
  ScriptedReply r;
  r.fault = Fault::MalformedStream;
  return r;
}

ScriptedReply ScriptedReply::cut_stream() {
  ScriptedReply r = say("This answer is cut off in the middle");
  r.fault = Fault::CutStream;
  return r;
}

ScriptedReply ScriptedReply::garbage() {
  ScriptedReply r;
  r.fault = Fault::Garbage;
  return r;
}

ScriptedReply ScriptedReply::hang() {
  ScriptedReply r;
  r.fault = Fault::Hang;
  return r;
}

// ---------------------------------------------------------------------------------------------
// ProviderRequest

std::string ProviderRequest::model() const { return str(body, "model"); }

std::string ProviderRequest::system() const {
  if (wire == ProviderWire::Anthropic) {
    if (body.is_object() && body.contains("system")) return content_text(body["system"]);
    return {};
  }
  if (body.is_object() && body.contains("messages") && body["messages"].is_array())
    for (const auto& m : body["messages"])
      if (str(m, "role") == "system" || str(m, "role") == "developer") return content_text(m.value("content", Json()));
  return {};
}

std::string ProviderRequest::last_user_text() const {
  if (!body.is_object() || !body.contains("messages") || !body["messages"].is_array()) return {};
  const Json& messages = body["messages"];
  for (auto it = messages.rbegin(); it != messages.rend(); ++it)
    if (str(*it, "role") == "user") {
      std::string t = content_text(it->value("content", Json()));
      if (!t.empty()) return t;
    }
  return {};
}

std::optional<std::string> ProviderRequest::api_key() const {
  if (auto k = http.header("x-api-key")) return k;
  if (auto a = http.header("authorization")) {
    if (a->size() > 7 && (a->starts_with("Bearer ") || a->starts_with("bearer "))) return a->substr(7);
    return a;
  }
  return std::nullopt;
}

nlohmann::json ProviderRequest::last_tool_results() const {
  Json out = Json::array();
  if (!body.is_object() || !body.contains("messages") || !body["messages"].is_array()) return out;
  const Json& messages = body["messages"];
  if (wire == ProviderWire::Anthropic) {
    for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
      if (str(*it, "role") != "user") continue;
      if (auto c = it->find("content"); c != it->end() && c->is_array())
        for (const auto& b : *c)
          if (str(b, "type") == "tool_result")
            out.push_back({{"tool_use_id", str(b, "tool_use_id")},
                           {"content", content_text(b.value("content", Json()))},
                           {"is_error", flag(b, "is_error")}});
      break;
    }
    return out;
  }
  // OpenAI: the run of "tool" messages after the last assistant message.
  size_t last_assistant = messages.size();
  for (size_t i = messages.size(); i-- > 0;)
    if (str(messages[i], "role") == "assistant") {
      last_assistant = i;
      break;
    }
  for (size_t i = last_assistant == messages.size() ? 0 : last_assistant + 1; i < messages.size(); ++i)
    if (str(messages[i], "role") == "tool")
      out.push_back({{"tool_use_id", str(messages[i], "tool_call_id")},
                     {"content", content_text(messages[i].value("content", Json()))},
                     {"is_error", false}});
  return out;
}

// ---------------------------------------------------------------------------------------------
// ProviderDouble

struct ProviderDouble::State {
  ProviderDoubleOptions options;
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  std::deque<ScriptedReply> queue;
  ReplyFunction fn;
  std::vector<ProviderRequest> requests;
  size_t served = 0;

  ScriptedReply next(const ProviderRequest& req) {
    ReplyFunction f;
    {
      std::lock_guard lock(mu);
      if (!queue.empty()) {
        ScriptedReply r = std::move(queue.front());
        queue.pop_front();
        return r;
      }
      f = fn;
    }
    if (f) return f(req);
    std::string said = req.last_user_text();
    return ScriptedReply::say("You said: " + (said.empty() ? std::string("nothing") : said));
  }

  void done() {
    std::lock_guard lock(mu);
    served++;
  }

  void handle(const RecordedRequest& http, ResponseWriter& w);
  void handle_guarded(const RecordedRequest& http, ResponseWriter& w);
};

namespace {

// Everything both wires need to render one reply.
struct Rendered {
  const ScriptedReply& reply;
  std::string model;
  std::string stop_reason;
  uint64_t input_tokens = 0, output_tokens = 0;
  std::vector<ScriptedToolCall> calls;  // with ids filled in
};

Rendered render(const ScriptedReply& reply, const ProviderRequest& req) {
  Rendered r{reply, req.model()};
  r.stop_reason = !reply.stop_reason.empty() ? reply.stop_reason : reply.tool_calls.empty() ? "end_turn" : "tool_use";
  r.calls = reply.tool_calls;
  size_t pieces = reply.text.size();
  for (auto& c : r.calls) {
    if (c.id.empty())
      c.id = req.wire == ProviderWire::Anthropic ? "toolu_01" + random_suffix(22) : "call_" + random_suffix(24);
    if (!c.input.is_object()) c.input = Json::object();
    pieces += json_pieces(c.input.dump()).size();
  }
  r.input_tokens = reply.input_tokens.value_or(std::max<uint64_t>(1, req.http.body.size() / 4));
  r.output_tokens = reply.output_tokens.value_or(std::max<size_t>(1, pieces));
  return r;
}

// Validation the real Messages API does that catches client serialisation bugs.
std::optional<HttpResponse> check_anthropic(const ProviderRequest& req, const std::string& key) {
  const auto& h = req.http;
  if (!key.empty()) {
    auto k = h.header("x-api-key");
    if (!k) return anthropic_error(401, "authentication_error", "x-api-key header is required");
    if (*k != key) return anthropic_error(401, "authentication_error", "invalid x-api-key");
  }
  auto version = h.header("anthropic-version");
  if (!version) return anthropic_error(400, "invalid_request_error", "anthropic-version: header is required");
  if (*version != "2023-06-01" && *version != "2023-01-01")
    return anthropic_error(400, "invalid_request_error", fmt::format("anthropic-version: \"{}\" is not a valid version", *version));
  const Json& b = req.body;
  if (!b.is_object())
    return anthropic_error(400, "invalid_request_error", "There was an error parsing the body of your request: it is not a JSON object");
  for (const char* field : {"model", "max_tokens", "messages"})
    if (!b.contains(field)) return anthropic_error(400, "invalid_request_error", fmt::format("{}: Field required", field));
  if (!b["model"].is_string() || !b["max_tokens"].is_number_integer() || !b["messages"].is_array())
    return anthropic_error(400, "invalid_request_error", "model, max_tokens or messages has the wrong type");
  const Json& messages = b["messages"];
  if (messages.empty()) return anthropic_error(400, "invalid_request_error", "messages: at least one message is required");
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    std::string role = str(m, "role");
    if (role != "user" && role != "assistant")
      return anthropic_error(400, "invalid_request_error", fmt::format("messages.{}.role: Input should be 'user' or 'assistant'", i));
    if (!m.contains("content") || !(m["content"].is_string() || m["content"].is_array()))
      return anthropic_error(400, "invalid_request_error", fmt::format("messages.{}.content: Field required", i));
    if (!m["content"].is_array()) continue;
    for (size_t j = 0; j < m["content"].size(); ++j) {
      const Json& c = m["content"][j];
      std::string type = str(c, "type");
      if (type == "text" && str(c, "text").empty())
        return anthropic_error(400, "invalid_request_error", fmt::format("messages.{}.content.{}: text content blocks must be non-empty", i, j));
      if (type == "tool_use" && (role != "assistant" || !c.contains("input") || !c["input"].is_object() || str(c, "id").empty()))
        return anthropic_error(400, "invalid_request_error", fmt::format("messages.{}.content.{}: malformed tool_use block", i, j));
      if (type == "tool_result") {
        // Each tool_result must answer a tool_use of the assistant message just before it.
        std::string id = str(c, "tool_use_id");
        bool found = false;
        if (i > 0 && str(messages[i - 1], "role") == "assistant" && messages[i - 1]["content"].is_array())
          for (const auto& prev : messages[i - 1]["content"])
            if (str(prev, "type") == "tool_use" && str(prev, "id") == id) found = true;
        if (!found)
          return anthropic_error(400, "invalid_request_error",
                                 fmt::format("messages.{}.content.{}: unexpected `tool_use_id` found in `tool_result` blocks: {}. "
                                             "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
                                             i, j, id));
      }
    }
  }
  if (b.contains("tools")) {
    if (!b["tools"].is_array()) return anthropic_error(400, "invalid_request_error", "tools: Input should be a valid list");
    for (size_t i = 0; i < b["tools"].size(); ++i)
      if (str(b["tools"][i], "name").empty() || !b["tools"][i].contains("input_schema"))
        return anthropic_error(400, "invalid_request_error", fmt::format("tools.{}: name and input_schema are required", i));
  }
  return std::nullopt;
}

std::optional<HttpResponse> check_openai(const ProviderRequest& req, const std::string& key) {
  if (!key.empty()) {
    auto auth = req.http.header("authorization");
    if (!auth)
      return openai_error(401, "invalid_request_error",
                          "You didn't provide an API key. You need to provide your API key in an Authorization header "
                          "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).");
    auto given = req.api_key().value_or("");
    if (!auth->starts_with("Bearer ") || given != key) {
      // The real message shows the key's ends only.
      std::string masked = given.size() > 8 ? given.substr(0, 3) + std::string(given.size() - 7, '*') + given.substr(given.size() - 4)
                                            : std::string("****");
      return openai_error(401, "invalid_request_error",
                          fmt::format("Incorrect API key provided: {}. You can find your API key at "
                                      "https://platform.openai.com/account/api-keys.", masked),
                          "invalid_api_key");
    }
  }
  const Json& b = req.body;
  if (!b.is_object())
    return openai_error(400, "invalid_request_error", "We could not parse the JSON body of your request.");
  if (!b.contains("model") || !b["model"].is_string())
    return openai_error(400, "invalid_request_error", "you must provide a model parameter");
  if (!b.contains("messages") || !b["messages"].is_array() || b["messages"].empty())
    return openai_error(400, "invalid_request_error", "'messages' must contain at least one message", "invalid_request");
  const Json& messages = b["messages"];
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    std::string role = str(m, "role");
    if (role != "system" && role != "developer" && role != "user" && role != "assistant" && role != "tool")
      return openai_error(400, "invalid_request_error", fmt::format("Invalid value: '{}'. Supported values are: 'system', 'assistant', 'user', 'tool'.", role));
    if (role == "assistant" && m.contains("tool_calls")) {
      // Every call must be answered by a "tool" message right after it.
      std::vector<std::string> answered;
      for (size_t k = i + 1; k < messages.size() && str(messages[k], "role") == "tool"; ++k)
        answered.push_back(str(messages[k], "tool_call_id"));
      for (const auto& tc : m["tool_calls"]) {
        const Json fn = tc.value("function", Json::object());
        if (str(tc, "type") != "function" || str(fn, "name").empty() || !fn.contains("arguments") || !fn["arguments"].is_string())
          return openai_error(400, "invalid_request_error", fmt::format("messages[{}].tool_calls: malformed tool call", i));
        if (i + 1 < messages.size() && std::find(answered.begin(), answered.end(), str(tc, "id")) == answered.end())
          return openai_error(400, "invalid_request_error",
                              fmt::format("An assistant message with 'tool_calls' must be followed by tool messages responding "
                                          "to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                                          str(tc, "id")));
      }
    }
    if (role == "tool") {
      bool follows = false;
      for (size_t k = i; k-- > 0;) {
        if (str(messages[k], "role") == "tool") continue;
        if (str(messages[k], "role") == "assistant" && messages[k].contains("tool_calls")) follows = true;
        break;
      }
      if (!follows)
        return openai_error(400, "invalid_request_error",
                            "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.");
    }
  }
  return std::nullopt;
}

void send_error(ResponseWriter& w, ProviderWire wire, const ScriptedReply& reply) {
  int status = reply.status;
  if (wire == ProviderWire::OpenAi && status == 529) status = 503;  // OpenAI has no 529
  std::string type = reply.error_type.empty() ? default_error_type(wire, status) : reply.error_type;
  std::string message = reply.error_message.empty() ? default_error_message(wire, status) : reply.error_message;
  HttpResponse r = wire == ProviderWire::Anthropic ? anthropic_error(status, type, message)
                                                   : openai_error(status, type, message, status == 429 ? Json("rate_limit_exceeded") : Json());
  if (reply.retry_after) r.headers.emplace_back("retry-after", *reply.retry_after);
  for (const auto& h : reply.extra_headers) r.headers.push_back(h);
  w.send(r);
}

// Writes one SSE frame per event, `delay` apart; false when the client went away.
class EventWriter {
 public:
  EventWriter(ResponseWriter& w, std::chrono::milliseconds delay) : w_(w), delay_(delay) {}
  bool event(std::string_view name, const OJson& data) {
    return frame(name.empty() ? fmt::format("data: {}\n\n", data.dump())
                              : fmt::format("event: {}\ndata: {}\n\n", name, data.dump()));
  }
  bool frame(const std::string& bytes) {
    if (count_++ > 0 && delay_.count() > 0 && !w_.sleep_for(delay_)) return false;
    return w_.write(bytes);
  }

 private:
  ResponseWriter& w_;
  std::chrono::milliseconds delay_;
  size_t count_ = 0;
};

HttpHeaders stream_headers(const ScriptedReply& reply) {
  HttpHeaders h = {{"Content-Type", "text/event-stream; charset=utf-8"}, {"Cache-Control", "no-cache"}};
  for (const auto& x : reply.extra_headers) h.push_back(x);
  return h;
}

// Garbage: what a captive portal or a misrouted proxy answers, 200 and not the wire format; it lists
// the request's headers (the API key among them), so a client that quotes answers must redact them.
void send_garbage(ResponseWriter& w, const RecordedRequest& http) {
  std::string body = "<html><head><title>Gateway</title></head><body><h1>Welcome!</h1><pre>\n";
  for (const auto& [name, value] : http.headers) body += fmt::format("{}: {}\n", name, value);
  body += "</pre></body></html>\n";
  HttpResponse resp = HttpResponse::text(200, std::move(body));
  resp.headers = {{"Content-Type", "text/html; charset=utf-8"}};
  w.send(resp);
}

// For CutStream: declare a body far longer than what is sent, so closing early is a framing error
// at the client (as a connection reset mid-answer is).
constexpr uint64_t kCutLength = 1 << 20;

bool begin_stream(ResponseWriter& w, const ScriptedReply& reply) {
  if (reply.fault == ScriptedReply::Fault::CutStream) {
    w.close_connection();
    return w.begin(200, stream_headers(reply), kCutLength);
  }
  return w.begin(200, stream_headers(reply));
}

bool serve_anthropic(ResponseWriter& w, const ProviderRequest& req, const ScriptedReply& reply) {
  Rendered r = render(reply, req);
  const std::string id = "msg_01" + random_suffix(22);
  OJson usage = {{"input_tokens", r.input_tokens}, {"cache_creation_input_tokens", 0}, {"cache_read_input_tokens", 0}};

  std::string full_text;
  for (const auto& t : reply.text) full_text += t;

  if (!req.stream) {
    OJson content = OJson::array();
    if (!full_text.empty()) content.push_back({{"type", "text"}, {"text", full_text}});
    for (const auto& c : r.calls) content.push_back({{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", c.input}});
    usage["output_tokens"] = r.output_tokens;
    OJson msg = {{"id", id},          {"type", "message"},         {"role", "assistant"},    {"model", r.model},
                 {"content", content}, {"stop_reason", r.stop_reason}, {"stop_sequence", nullptr}, {"usage", usage}};
    HttpResponse resp = HttpResponse::json(200, msg.dump());
    for (const auto& h : reply.extra_headers) resp.headers.push_back(h);
    w.send(resp);
    return true;
  }

  if (!begin_stream(w, reply)) return false;
  EventWriter ev(w, reply.delay);
  if (reply.fault == ScriptedReply::Fault::MalformedStream) {
    ev.frame("event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\"id\": \n\n");
    return ev.frame("event: message_stop\ndata: not json at all\n\n");
  }
  OJson start_usage = usage;
  start_usage["output_tokens"] = 1;
  if (!ev.event("message_start", {{"type", "message_start"},
                                  {"message",
                                   {{"id", id},
                                    {"type", "message"},
                                    {"role", "assistant"},
                                    {"model", r.model},
                                    {"content", OJson::array()},
                                    {"stop_reason", nullptr},
                                    {"stop_sequence", nullptr},
                                    {"usage", start_usage}}}}))
    return false;
  int index = 0;
  bool pinged = false;
  auto ping = [&] {
    if (pinged) return true;
    pinged = true;
    return ev.event("ping", {{"type", "ping"}});
  };
  if (!reply.text.empty()) {
    if (!ev.event("content_block_start", {{"type", "content_block_start"}, {"index", index}, {"content_block", {{"type", "text"}, {"text", ""}}}}))
      return false;
    if (!ping()) return false;
    for (size_t i = 0; i < reply.text.size(); ++i) {
      if (!ev.event("content_block_delta", {{"type", "content_block_delta"}, {"index", index}, {"delta", {{"type", "text_delta"}, {"text", reply.text[i]}}}}))
        return false;
      if (i == 0 && reply.fault == ScriptedReply::Fault::StreamError) {
        std::string type = reply.error_type.empty() ? "overloaded_error" : reply.error_type;
        return ev.event("error", {{"type", "error"}, {"error", {{"type", type}, {"message", reply.error_message}}}});
      }
      if (reply.fault == ScriptedReply::Fault::CutStream && i + 1 >= (reply.text.size() + 1) / 2) return true;
    }
    if (!ev.event("content_block_stop", {{"type", "content_block_stop"}, {"index", index}})) return false;
    index++;
  }
  for (const auto& c : r.calls) {
    if (!ev.event("content_block_start", {{"type", "content_block_start"},
                                          {"index", index},
                                          {"content_block", {{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", OJson::object()}}}}))
      return false;
    if (!ping()) return false;
    // The service opens with an empty fragment, then the JSON in pieces.
    std::vector<std::string> pieces = json_pieces(c.input.dump());
    pieces.insert(pieces.begin(), "");
    for (const auto& p : pieces)
      if (!ev.event("content_block_delta", {{"type", "content_block_delta"}, {"index", index}, {"delta", {{"type", "input_json_delta"}, {"partial_json", p}}}}))
        return false;
    if (!ev.event("content_block_stop", {{"type", "content_block_stop"}, {"index", index}})) return false;
    index++;
  }
  if (reply.fault == ScriptedReply::Fault::CutStream) return true;
  if (!ev.event("message_delta", {{"type", "message_delta"},
                                  {"delta", {{"stop_reason", r.stop_reason}, {"stop_sequence", nullptr}}},
                                  {"usage", {{"output_tokens", r.output_tokens}}}}))
    return false;
  return ev.event("message_stop", {{"type", "message_stop"}});
}

bool serve_openai(ResponseWriter& w, const ProviderRequest& req, const ScriptedReply& reply) {
  Rendered r = render(reply, req);
  const std::string id = "chatcmpl-" + random_suffix(29);
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  const std::string finish = openai_finish(r.stop_reason);
  OJson usage = {{"prompt_tokens", r.input_tokens},
                 {"completion_tokens", r.output_tokens},
                 {"total_tokens", r.input_tokens + r.output_tokens}};
  std::string full_text;
  for (const auto& t : reply.text) full_text += t;

  if (!req.stream) {
    OJson message = {{"role", "assistant"}, {"content", full_text.empty() ? OJson(nullptr) : OJson(full_text)}};
    if (!r.calls.empty()) {
      OJson calls = OJson::array();
      for (const auto& c : r.calls)
        calls.push_back({{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.input.dump()}}}});
      message["tool_calls"] = calls;
    }
    OJson doc = {{"id", id},
                 {"object", "chat.completion"},
                 {"created", created},
                 {"model", r.model},
                 {"choices", OJson::array({{{"index", 0}, {"message", message}, {"logprobs", nullptr}, {"finish_reason", finish}}})},
                 {"usage", usage}};
    HttpResponse resp = HttpResponse::json(200, doc.dump());
    for (const auto& h : reply.extra_headers) resp.headers.push_back(h);
    w.send(resp);
    return true;
  }

  const bool include_usage = req.body.is_object() && flag(req.body.value("stream_options", Json::object()), "include_usage");
  auto chunk = [&](OJson delta, OJson finish_reason) {
    OJson c = {{"id", id},
               {"object", "chat.completion.chunk"},
               {"created", created},
               {"model", r.model},
               {"system_fingerprint", "fp_moat_double"},
               {"choices", OJson::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", finish_reason}}})}};
    if (include_usage) c["usage"] = nullptr;  // every chunk but the last says usage: null
    return c;
  };

  if (!begin_stream(w, reply)) return false;
  EventWriter ev(w, reply.delay);
  if (reply.fault == ScriptedReply::Fault::MalformedStream) {
    ev.frame("data: {\"id\": \"chatcmpl-broken\", \"choices\": [{\n\n");
    return ev.frame("data: [DONE]\n\n");
  }
  if (!ev.event("", chunk({{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}}, nullptr))) return false;
  for (size_t i = 0; i < reply.text.size(); ++i) {
    if (!ev.event("", chunk({{"content", reply.text[i]}}, nullptr))) return false;
    if (i == 0 && reply.fault == ScriptedReply::Fault::StreamError) {
      std::string type = reply.error_type.empty() ? "server_error" : reply.error_type;
      return ev.event("", OJson{{"error", {{"message", reply.error_message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}});
    }
    if (reply.fault == ScriptedReply::Fault::CutStream && i + 1 >= (reply.text.size() + 1) / 2) return true;
  }
  for (size_t k = 0; k < r.calls.size(); ++k) {
    const auto& c = r.calls[k];
    OJson first = {{"index", k}, {"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", ""}}}};
    if (!ev.event("", chunk({{"tool_calls", OJson::array({first})}}, nullptr))) return false;
    for (const auto& p : json_pieces(c.input.dump()))
      if (!ev.event("", chunk({{"tool_calls", OJson::array({{{"index", k}, {"function", {{"arguments", p}}}}})}}, nullptr)))
        return false;
  }
  if (reply.fault == ScriptedReply::Fault::CutStream) return true;
  if (!ev.event("", chunk(OJson::object(), finish))) return false;
  if (include_usage) {
    OJson last = {{"id", id},           {"object", "chat.completion.chunk"}, {"created", created}, {"model", r.model},
                  {"system_fingerprint", "fp_moat_double"}, {"choices", OJson::array()}, {"usage", usage}};
    if (!ev.event("", last)) return false;
  }
  return ev.frame("data: [DONE]\n\n");
}

}  // namespace

void ProviderDouble::State::handle_guarded(const RecordedRequest& http, ResponseWriter& w) {
  // A body of unexpected shape must give the client an error, not take the test process down.
  try {
    handle(http, w);
  } catch (const std::exception& e) {
    if (!w.started()) w.send(HttpResponse::json(500, OJson{{"error", {{"message", fmt::format("provider double: {}", e.what())}, {"type", "api_error"}}}}.dump()));
  }
}

void ProviderDouble::State::handle(const RecordedRequest& http, ResponseWriter& w) {
  const std::string path = http.path();
  ProviderRequest req;
  if (path == "/v1/messages") {
    req.wire = ProviderWire::Anthropic;
  } else if (path == "/v1/chat/completions" || path == "/chat/completions") {
    req.wire = ProviderWire::OpenAi;
  } else {
    return w.send(HttpResponse::json(404, R"({"error":{"message":"Not Found","type":"not_found_error"}})"));
  }
  req.http = http;
  req.body = Json::parse(http.body, nullptr, false);
  if (req.body.is_discarded()) req.body = nullptr;
  req.stream = flag(req.body, "stream");
  {
    std::lock_guard lock(mu);
    requests.push_back(req);
    cv.notify_all();
  }
  if (http.method != "POST")
    return w.send(req.wire == ProviderWire::Anthropic ? anthropic_error(405, "invalid_request_error", "Method Not Allowed")
                                                      : openai_error(405, "invalid_request_error", "Method Not Allowed"));
  auto rejected = req.wire == ProviderWire::Anthropic ? check_anthropic(req, options.api_key) : check_openai(req, options.api_key);
  if (rejected) return w.send(*rejected);

  ScriptedReply reply = next(req);
  if (reply.fault == ScriptedReply::Fault::HttpError) return send_error(w, req.wire, reply);
  if (reply.fault == ScriptedReply::Fault::Garbage) return send_garbage(w, http);
  if (reply.fault == ScriptedReply::Fault::Hang) {
    w.sleep_for(std::chrono::hours(1));  // ends when the double stops
    return w.close_connection();
  }
  bool ok = req.wire == ProviderWire::Anthropic ? serve_anthropic(w, req, reply) : serve_openai(w, req, reply);
  if (ok && reply.fault == ScriptedReply::Fault::None) done();
}

ProviderDouble::ProviderDouble(ProviderDoubleOptions options) : state_(std::make_shared<State>()) {
  state_->options = std::move(options);
  UpstreamServer::Options so;
  so.bind_address = state_->options.bind_address;
  so.tls = state_->options.tls;
  so.handler = [state = state_](const RecordedRequest& req, ResponseWriter& w) { state->handle_guarded(req, w); };
  server_ = std::make_unique<UpstreamServer>(std::move(so));
}

ProviderDouble::~ProviderDouble() { server_->stop(); }

std::string ProviderDouble::origin() const { return server_->origin(); }
std::string ProviderDouble::anthropic_base_url() const { return origin(); }
std::string ProviderDouble::openai_base_url() const { return origin() + "/v1"; }
uint16_t ProviderDouble::port() const { return server_->port(); }

void ProviderDouble::enqueue(ScriptedReply reply) {
  std::lock_guard lock(state_->mu);
  state_->queue.push_back(std::move(reply));
}

size_t ProviderDouble::pending() const {
  std::lock_guard lock(state_->mu);
  return state_->queue.size();
}

void ProviderDouble::set_reply_function(ReplyFunction fn) {
  std::lock_guard lock(state_->mu);
  state_->fn = std::move(fn);
}

std::vector<ProviderRequest> ProviderDouble::requests() const {
  std::lock_guard lock(state_->mu);
  return state_->requests;
}

bool ProviderDouble::wait_for_requests(size_t n, Clock::duration timeout) const {
  std::unique_lock lock(state_->mu);
  return state_->cv.wait_for(lock, timeout, [&] { return state_->requests.size() >= n; });
}

void ProviderDouble::clear_requests() {
  std::lock_guard lock(state_->mu);
  state_->requests.clear();
}

size_t ProviderDouble::replies_served() const {
  std::lock_guard lock(state_->mu);
  return state_->served;
}

}  // namespace moat::testing

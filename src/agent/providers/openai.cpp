#include "agent/providers/openai.h"

#include <map>

#include "agent/providers/sse.h"

namespace moat::agent {
namespace {

std::string str(const Json& obj, const char* field) {
  if (!obj.is_object()) return {};
  auto it = obj.find(field);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

uint64_t count(const Json& obj, const char* field) {
  auto it = obj.find(field);
  return it != obj.end() && it->is_number_integer() ? static_cast<uint64_t>(std::max<int64_t>(0, it->get<int64_t>())) : 0;
}

// OpenAI's finish reasons in the agent loop's (Anthropic-shaped) vocabulary.
std::string normalise_finish(const std::string& reason, bool has_tool_calls) {
  // Some servers (Ollama) say "stop" even when the turn ends in tool calls.
  if (has_tool_calls && (reason == "stop" || reason.empty())) return "tool_use";
  if (reason == "stop") return "end_turn";
  if (reason == "tool_calls" || reason == "function_call") return "tool_use";
  if (reason == "length") return "max_tokens";
  return reason;
}

class OpenAiParser final : public detail::ResponseParser {
 public:
  OpenAiParser(bool streaming, const StreamCallbacks& cb)
      : streaming_(streaming), cb_(cb), sse_([this](const SseEvent& e) { guarded(e); }) {}

  void feed(std::string_view bytes) override {
    if (streaming_)
      sse_.feed(bytes);
    else
      whole_.append(bytes);
  }
  bool failed() const override { return error_.has_value(); }
  bool emitted() const override { return emitted_; }

  Result<ModelResponse> finish(bool transport_complete) override {
    if (!streaming_ && !error_) {
      try {
        parse_whole();
      } catch (const Json::exception& ex) {
        error(ErrorKind::Unavailable, fmt::format("malformed answer: {}", ex.what()));
      }
    }
    if (error_) return std::unexpected(*error_);
    // [DONE] is the end marker; a stream that said why it finished and then closed is complete too.
    if (!done_ && !(transport_complete && !finish_reason_.empty()))
      return fail(ErrorKind::Unavailable, "the chunk stream ended before [DONE]{}", transport_complete ? "" : " (connection lost)");
    ModelResponse out;
    if (!text_.empty()) out.content.push_back(ContentBlock::text_block(std::move(text_)));
    for (auto& [index, call] : calls_) {
      ContentBlock b;
      b.kind = ContentBlock::Kind::ToolUse;
      b.id = call.id.empty() ? fmt::format("call_{}", index) : call.id;
      b.name = call.name;
      b.input = Json::object();
      if (!call.arguments.empty()) {
        Json args = Json::parse(call.arguments, nullptr, false);
        if (args.is_discarded() || !args.is_object())
          return fail(ErrorKind::Unavailable, "the arguments of tool call {} ({}) are not a JSON object", b.id, b.name);
        b.input = std::move(args);
      }
      out.content.push_back(std::move(b));
    }
    out.stop_reason = normalise_finish(finish_reason_, !calls_.empty());
    out.usage = usage_;
    return out;
  }

 private:
  struct Call {
    std::string id, name, arguments;
  };

  void error(std::string message) { error(ErrorKind::Unavailable, std::move(message)); }
  void error(ErrorKind kind, std::string message) {
    if (!error_) error_ = Error{kind, std::move(message)};
  }

  void text(std::string_view t) {
    if (t.empty()) return;
    text_ += t;
    emitted_ = true;
    if (cb_.on_text) cb_.on_text(t);
  }

  void usage(const Json& u) {
    if (!u.is_object()) return;
    usage_.input_tokens = count(u, "prompt_tokens");
    usage_.output_tokens = count(u, "completion_tokens");
  }

  // nlohmann throws on a field of an unexpected type; from the network that is a malformed event.
  void guarded(const SseEvent& e) {
    try {
      on_event(e);
    } catch (const Json::exception& ex) {
      error(ErrorKind::Unavailable, fmt::format("malformed {} event: {}", e.event, ex.what()));
    }
  }

  void on_event(const SseEvent& e) {
    if (error_ || done_) return;
    if (e.data == "[DONE]") {
      done_ = true;
      return;
    }
    Json d = Json::parse(e.data, nullptr, false);
    if (d.is_discarded() || !d.is_object()) return error("malformed chunk: not a JSON object");
    if (auto err = d.find("error"); err != d.end() && !err->is_null()) {
      std::string msg = err->is_string() ? err->get<std::string>() : str(*err, "message");
      return error(fmt::format("the stream reported an error: {}", msg.empty() ? err->dump() : msg));
    }
    if (auto u = d.find("usage"); u != d.end()) usage(*u);
    auto choices = d.find("choices");
    if (choices == d.end() || !choices->is_array()) return;  // the usage-only chunk (choices [] or null)
    for (const auto& choice : *choices) {
      if (choice.value("index", 0) != 0) continue;  // we ask for one choice
      if (auto fr = choice.find("finish_reason"); fr != choice.end() && fr->is_string()) finish_reason_ = *fr;
      const Json delta = choice.value("delta", Json::object());
      text(str(delta, "content"));
      auto calls = delta.find("tool_calls");
      if (calls == delta.end() || !calls->is_array()) continue;
      for (const auto& tc : *calls) {
        int index = tc.value("index", static_cast<int>(calls_.size()));
        Call& c = calls_[index];
        // id and name come whole in the call's first fragment; arguments arrive in pieces.
        if (auto id = str(tc, "id"); !id.empty()) c.id = id;
        const Json fn = tc.value("function", Json::object());
        if (auto name = str(fn, "name"); !name.empty()) c.name = name;
        c.arguments += str(fn, "arguments");
      }
    }
  }

  void parse_whole() {
    Json d = Json::parse(whole_, nullptr, false);
    if (d.is_discarded() || !d.is_object() || !d.contains("choices") || !d["choices"].is_array() || d["choices"].empty())
      return error("the answer is neither a chunk stream nor a chat completion");
    const Json& choice = d["choices"][0];
    const Json msg = choice.value("message", Json::object());
    text(str(msg, "content"));
    int i = 0;
    if (auto calls = msg.find("tool_calls"); calls != msg.end() && calls->is_array())
      for (const auto& tc : *calls) {
        Call& c = calls_[i++];
        c.id = str(tc, "id");
        const Json fn = tc.value("function", Json::object());
        c.name = str(fn, "name");
        // Some servers (Ollama's native shape) give arguments as an object rather than a string.
        auto args = fn.find("arguments");
        if (args != fn.end()) c.arguments = args->is_string() ? args->get<std::string>() : args->dump();
      }
    finish_reason_ = str(choice, "finish_reason");
    if (auto u = d.find("usage"); u != d.end()) usage(*u);
    done_ = true;
  }

  bool streaming_;
  const StreamCallbacks& cb_;
  SseParser sse_;
  std::string whole_;
  std::string text_;
  std::map<int, Call> calls_;  // by the index the server gives each call
  std::string finish_reason_;
  Usage usage_;
  bool done_ = false;
  bool emitted_ = false;
  std::optional<Error> error_;
};

class OpenAiProvider final : public detail::HttpProvider {
 public:
  using HttpProvider::HttpProvider;

 protected:
  detail::WireCall build(const ModelRequest& req) const override {
    return {url_.join("/chat/completions"),
            {{"content-type", "application/json"}, {"accept", "text/event-stream"}, {"user-agent", "moatd"}},
            openai_request_body(req).dump(-1, ' ', false, Json::error_handler_t::replace)};
  }
  std::unique_ptr<detail::ResponseParser> parser(bool streaming, const StreamCallbacks& cb) const override {
    return make_openai_parser(streaming, cb);
  }
};

}  // namespace

std::unique_ptr<detail::ResponseParser> make_openai_parser(bool streaming, const StreamCallbacks& cb) {
  return std::make_unique<OpenAiParser>(streaming, cb);
}

Json openai_request_body(const ModelRequest& req) {
  Json messages = Json::array();
  if (!req.system.empty()) messages.push_back({{"role", "system"}, {"content", req.system}});
  for (const auto& m : req.messages) {
    std::string text;
    Json tool_calls = Json::array();
    for (const auto& b : m.content) {
      switch (b.kind) {
        case ContentBlock::Kind::Text:
          if (!text.empty() && !b.text.empty()) text += "\n\n";
          text += b.text;
          break;
        case ContentBlock::Kind::ToolUse:
          tool_calls.push_back({{"id", b.id},
                                {"type", "function"},
                                {"function",
                                 {{"name", b.name}, {"arguments", (b.input.is_object() ? b.input : Json::object()).dump()}}}});
          break;
        case ContentBlock::Kind::ToolResult:
          // Each result is its own "tool" message, and they must directly follow the assistant
          // message that made the calls: so they go before any text of the same user turn. The
          // format has no error flag; the model learns of the failure from the text.
          messages.push_back(
              {{"role", "tool"}, {"tool_call_id", b.id}, {"content", b.is_error ? "Error: " + b.text : b.text}});
          break;
      }
    }
    if (m.role == "assistant") {
      Json msg = {{"role", "assistant"}, {"content", text.empty() ? Json(nullptr) : Json(text)}};
      if (!tool_calls.empty()) msg["tool_calls"] = std::move(tool_calls);
      messages.push_back(std::move(msg));
    } else if (!text.empty()) {
      messages.push_back({{"role", m.role}, {"content", text}});
    }
  }
  // max_tokens rather than max_completion_tokens: every OpenAI-compatible server takes it.
  Json body = {{"model", req.model},
               {"messages", std::move(messages)},
               {"max_tokens", req.max_tokens},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  if (!req.tools.empty()) {
    Json tools = Json::array();
    for (const auto& t : req.tools)
      tools.push_back({{"type", "function"},
                       {"function",
                        {{"name", t.name},
                         {"description", t.description},
                         {"parameters", t.input_schema.is_object() ? t.input_schema : Json{{"type", "object"}}}}}});
    body["tools"] = std::move(tools);
  }
  return body;
}

std::unique_ptr<Provider> make_openai_provider(ProviderConfig cfg, net::Url url, CredentialSource credentials) {
  std::string name = fmt::format("openai-compatible provider at {}", url.authority());
  return std::make_unique<OpenAiProvider>(std::move(cfg), std::move(url), std::move(credentials), std::move(name));
}

}  // namespace moat::agent

#include "agent/providers/anthropic.h"

#include <map>

#include "agent/providers/sse.h"

namespace moat::agent {
namespace {

Json input_object(const Json& input) { return input.is_object() ? input : Json::object(); }

Json block_json(const ContentBlock& b) {
  switch (b.kind) {
    case ContentBlock::Kind::Text:
      return {{"type", "text"}, {"text", b.text}};
    case ContentBlock::Kind::ToolUse:
      return {{"type", "tool_use"}, {"id", b.id}, {"name", b.name}, {"input", input_object(b.input)}};
    case ContentBlock::Kind::ToolResult: {
      Json j = {{"type", "tool_result"}, {"tool_use_id", b.id}, {"content", b.text}};
      if (b.is_error) j["is_error"] = true;
      return j;
    }
  }
  return Json::object();
}

uint64_t count(const Json& obj, const char* field) {
  auto it = obj.find(field);
  return it != obj.end() && it->is_number_unsigned() ? it->get<uint64_t>()
         : it != obj.end() && it->is_number_integer() ? static_cast<uint64_t>(std::max<int64_t>(0, it->get<int64_t>()))
                                                      : 0;
}

// Cache writes and reads are input too (billed, and they fill the context window).
uint64_t input_tokens(const Json& usage) {
  return count(usage, "input_tokens") + count(usage, "cache_creation_input_tokens") +
         count(usage, "cache_read_input_tokens");
}

std::string str(const Json& obj, const char* field) {
  auto it = obj.find(field);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

class AnthropicParser final : public detail::ResponseParser {
 public:
  AnthropicParser(bool streaming, const StreamCallbacks& cb)
      : streaming_(streaming), cb_(cb), sse_([this](const SseEvent& e) { guarded(e); }) {}

  void feed(std::string_view bytes) override {
    if (streaming_)
      sse_.feed(bytes);
    else
      whole_.append(bytes);
  }
  bool failed() const override { return error_.has_value(); }
  bool emitted() const override { return emitted_; }
  bool retryable() const override { return retryable_; }

  Result<ModelResponse> finish(bool transport_complete) override {
    if (!streaming_ && !error_) {
      try {
        parse_whole();
      } catch (const Json::exception& ex) {
        error(ErrorKind::Unavailable, fmt::format("malformed answer: {}", ex.what()));
      }
    }
    if (error_) return std::unexpected(*error_);
    if (!stopped_)
      return fail(ErrorKind::Unavailable, "the event stream ended before message_stop{}",
                  transport_complete ? "" : " (connection lost)");
    ModelResponse out;
    for (auto& [index, b] : blocks_)
      if (b.kind != Block::Other) out.content.push_back(std::move(b.block));
    out.stop_reason = stop_reason_;
    out.usage = usage_;
    return out;
  }

 private:
  struct Block {
    enum { Text, ToolUse, Other } kind = Other;
    ContentBlock block;
    std::string json;  // accumulated partial_json of a tool_use
    bool closed = false;
  };

  void error(ErrorKind kind, std::string message, bool retryable = true) {
    if (!error_) error_ = Error{kind, std::move(message)};
    retryable_ = retryable;
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
    if (error_) return;
    Json d = Json::parse(e.data, nullptr, false);
    if (d.is_discarded() || !d.is_object())
      return error(ErrorKind::Unavailable, fmt::format("malformed {} event: not a JSON object", e.event));
    // The data's "type" is authoritative; the event: line repeats it.
    std::string type = str(d, "type");
    if (type.empty()) type = e.event;
    int index = d.contains("index") && d["index"].is_number_integer() ? d["index"].get<int>() : -1;

    if (type == "message_start") {
      if (auto m = d.find("message"); m != d.end() && m->is_object() && m->contains("usage")) {
        const Json& u = (*m)["usage"];
        usage_.input_tokens = input_tokens(u);
        usage_.output_tokens = count(u, "output_tokens");
      }
    } else if (type == "content_block_start") {
      const Json cb = d.value("content_block", Json::object());
      Block b;
      std::string kind = str(cb, "type");
      if (kind == "text") {
        b.kind = Block::Text;
        b.block = ContentBlock::text_block(str(cb, "text"));
        if (!b.block.text.empty()) text(b.block.text);
      } else if (kind == "tool_use") {
        b.kind = Block::ToolUse;
        b.block.kind = ContentBlock::Kind::ToolUse;
        b.block.id = str(cb, "id");
        b.block.name = str(cb, "name");
        b.block.input = input_object(cb.value("input", Json::object()));
      }  // thinking, server tools...: not part of what the loop sees
      blocks_[index] = std::move(b);
    } else if (type == "content_block_delta") {
      auto it = blocks_.find(index);
      if (it == blocks_.end()) return error(ErrorKind::Unavailable, fmt::format("content_block_delta for unknown block {}", index));
      const Json delta = d.value("delta", Json::object());
      std::string kind = str(delta, "type");
      if (kind == "text_delta" && it->second.kind == Block::Text) {
        std::string t = str(delta, "text");
        it->second.block.text += t;
        text(t);
      } else if (kind == "input_json_delta" && it->second.kind == Block::ToolUse) {
        it->second.json += str(delta, "partial_json");
      }
    } else if (type == "content_block_stop") {
      auto it = blocks_.find(index);
      if (it == blocks_.end()) return error(ErrorKind::Unavailable, fmt::format("content_block_stop for unknown block {}", index));
      Block& b = it->second;
      b.closed = true;
      if (b.kind == Block::ToolUse && !b.json.empty()) {
        Json input = Json::parse(b.json, nullptr, false);
        if (input.is_discarded() || !input.is_object())
          return error(ErrorKind::Unavailable,
                       fmt::format("the input of tool call {} ({}) is not a JSON object", b.block.id, b.block.name));
        b.block.input = std::move(input);
      }
    } else if (type == "message_delta") {
      const Json delta = d.value("delta", Json::object());
      if (delta.contains("stop_reason") && delta["stop_reason"].is_string()) stop_reason_ = delta["stop_reason"];
      if (auto u = d.find("usage"); u != d.end() && u->is_object()) {
        // output_tokens here is cumulative; newer API versions repeat the input counts too.
        if (u->contains("output_tokens")) usage_.output_tokens = count(*u, "output_tokens");
        if (u->contains("input_tokens")) usage_.input_tokens = input_tokens(*u);
      }
    } else if (type == "message_stop") {
      stopped_ = true;
    } else if (type == "error") {
      const Json err = d.value("error", Json::object());
      std::string etype = str(err, "type");
      std::string msg = str(err, "message");
      // overloaded_error and api_error are transient on Anthropic's side; the rest are ours.
      bool transient = etype == "overloaded_error" || etype == "api_error" || etype.empty();
      error(transient ? ErrorKind::Unavailable : ErrorKind::InvalidInput,
            fmt::format("the stream reported an error: {}{}", msg.empty() ? "(no message)" : msg,
                        etype.empty() ? "" : fmt::format(" ({})", etype)),
            transient);
    }
    // ping and unknown event types are ignored, as the API's versioning policy asks.
  }

  void text(std::string_view t) {
    if (t.empty()) return;
    emitted_ = true;
    if (cb_.on_text) cb_.on_text(t);
  }

  void parse_whole() {
    Json m = Json::parse(whole_, nullptr, false);
    if (m.is_discarded() || !m.is_object() || str(m, "type") != "message")
      return error(ErrorKind::Unavailable, "the answer is neither an event stream nor a Message object");
    int i = 0;
    for (const auto& c : m.value("content", Json::array())) {
      Block b;
      if (str(c, "type") == "text") {
        b.kind = Block::Text;
        b.block = ContentBlock::text_block(str(c, "text"));
        text(b.block.text);
      } else if (str(c, "type") == "tool_use") {
        b.kind = Block::ToolUse;
        b.block.kind = ContentBlock::Kind::ToolUse;
        b.block.id = str(c, "id");
        b.block.name = str(c, "name");
        b.block.input = input_object(c.value("input", Json::object()));
      }
      blocks_[i++] = std::move(b);
    }
    stop_reason_ = str(m, "stop_reason");
    const Json u = m.value("usage", Json::object());
    usage_.input_tokens = input_tokens(u);
    usage_.output_tokens = count(u, "output_tokens");
    stopped_ = true;
  }

  bool streaming_;
  const StreamCallbacks& cb_;
  SseParser sse_;
  std::string whole_;
  std::map<int, Block> blocks_;  // by index: the order the model produced them
  std::string stop_reason_;
  Usage usage_;
  bool stopped_ = false;
  bool emitted_ = false;
  bool retryable_ = true;
  std::optional<Error> error_;
};

class AnthropicProvider final : public detail::HttpProvider {
 public:
  using HttpProvider::HttpProvider;

 protected:
  detail::WireCall build(const ModelRequest& req) const override {
    return {url_.join("/v1/messages"),
            {{"anthropic-version", "2023-06-01"},
             {"content-type", "application/json"},
             {"accept", "text/event-stream"},
             {"user-agent", "moatd"}},
            anthropic_request_body(req).dump(-1, ' ', false, Json::error_handler_t::replace)};
  }
  std::unique_ptr<detail::ResponseParser> parser(bool streaming, const StreamCallbacks& cb) const override {
    return make_anthropic_parser(streaming, cb);
  }
};

}  // namespace

std::unique_ptr<detail::ResponseParser> make_anthropic_parser(bool streaming, const StreamCallbacks& cb) {
  return std::make_unique<AnthropicParser>(streaming, cb);
}

Json anthropic_request_body(const ModelRequest& req) {
  Json messages = Json::array();
  for (const auto& m : req.messages) {
    Json content = Json::array();
    for (const auto& b : m.content) {
      if (b.kind == ContentBlock::Kind::Text && b.text.empty()) continue;  // the API rejects empty text blocks
      content.push_back(block_json(b));
    }
    messages.push_back({{"role", m.role}, {"content", std::move(content)}});
  }
  Json body = {{"model", req.model}, {"max_tokens", req.max_tokens}, {"messages", std::move(messages)}, {"stream", true}};
  if (!req.system.empty()) body["system"] = req.system;
  if (!req.tools.empty()) {
    Json tools = Json::array();
    for (const auto& t : req.tools)
      tools.push_back({{"name", t.name},
                       {"description", t.description},
                       {"input_schema", t.input_schema.is_object() ? t.input_schema : Json{{"type", "object"}}}});
    body["tools"] = std::move(tools);
  }
  return body;
}

std::unique_ptr<Provider> make_anthropic_provider(ProviderConfig cfg, net::Url url, CredentialSource credentials) {
  std::string name = fmt::format("anthropic provider at {}", url.authority());
  return std::make_unique<AnthropicProvider>(std::move(cfg), std::move(url), std::move(credentials), std::move(name));
}

}  // namespace moat::agent

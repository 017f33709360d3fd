// The model providers' response parsers: Anthropic Messages and OpenAI chat completions, streamed
// (server-sent events) or whole JSON bodies, as they arrive from a server moat does not control.
// The first byte picks the provider (bit 0), streamed or whole (bit 1) and how many bytes arrive at
// a time (the rest); the stream cut that way must give the same answer as in one piece.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "agent/providers/anthropic.h"
#include "agent/providers/openai.h"

using namespace moat::agent;

namespace {

struct Outcome {
  bool ok = false;
  std::string text, stop_reason, error;
  size_t blocks = 0;
};

Outcome parse(bool anthropic, bool streaming, std::string_view body, size_t chunk) {
  std::string streamed;
  StreamCallbacks cb{.on_text = [&](std::string_view t) { streamed.append(t); }, .cancelled = {}};
  auto p = anthropic ? make_anthropic_parser(streaming, cb) : make_openai_parser(streaming, cb);
  for (size_t i = 0; i < body.size() && !p->failed(); i += chunk) p->feed(body.substr(i, chunk));
  (void)p->emitted();
  (void)p->retryable();
  auto r = p->finish(true);
  Outcome o;
  o.ok = r.has_value();
  if (!r) {
    o.error = r.error().message;
    return o;
  }
  o.stop_reason = r->stop_reason;
  o.blocks = r->content.size();
  for (const auto& b : r->content) {
    o.text += b.text;
    if (b.kind == ContentBlock::Kind::ToolUse) o.text += b.name + b.input.dump();
  }
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool anthropic = data[0] & 1, streaming = data[0] & 2;
  const size_t chunk = (data[0] >> 2) + 1;
  std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  Outcome whole = parse(anthropic, streaming, body, body.empty() ? 1 : body.size());
  Outcome cut = parse(anthropic, streaming, body, chunk);
  // A stream that failed part-way stops reading early, so only successes must agree exactly.
  if (whole.ok != cut.ok) std::abort();
  if (whole.ok && (whole.text != cut.text || whole.stop_reason != cut.stop_reason || whole.blocks != cut.blocks))
    std::abort();
  return 0;
}

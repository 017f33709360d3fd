#pragma once
// OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, llama.cpp server): POST
// {base}/chat/completions with "stream": true and stream_options.include_usage, parsed from the
// "data: {chunk}" events up to "data: [DONE]". Also accepts a whole chat.completion object.
#include <memory>

#include "agent/providers/http_provider.h"

namespace moat::agent {

Json openai_request_body(const ModelRequest& req);

// The parser of one response body, streamed or whole (exposed for fuzz/fuzz_provider_stream).
std::unique_ptr<detail::ResponseParser> make_openai_parser(bool streaming, const StreamCallbacks& cb);

std::unique_ptr<Provider> make_openai_provider(ProviderConfig cfg, net::Url url, CredentialSource credentials);

}  // namespace moat::agent

#pragma once
// Anthropic's Messages API: POST {base}/v1/messages with "stream": true, parsed from its
// server-sent events (message_start, content_block_start/delta/stop, message_delta, message_stop,
// ping, error). Also accepts a whole Message object when a server answers without streaming.
#include <memory>

#include "agent/providers/http_provider.h"

namespace moat::agent {

// The request body the provider sends (exposed for tests and for logging request shapes).
Json anthropic_request_body(const ModelRequest& req);

// The parser of one response body, streamed or whole (exposed for fuzz/fuzz_provider_stream).
std::unique_ptr<detail::ResponseParser> make_anthropic_parser(bool streaming, const StreamCallbacks& cb);

std::unique_ptr<Provider> make_anthropic_provider(ProviderConfig cfg, net::Url url, CredentialSource credentials);

}  // namespace moat::agent

#pragma once
// What the two wire formats share: one streamed POST per attempt, the retry policy (429 with the
// provider's retry hints, 5xx/529 and broken connections with exponential backoff and jitter),
// credentials fetched per attempt and wiped after it, and provider errors turned into one sentence
// that names the provider and the model but never the key. Internal to src/agent/providers.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/providers/provider.h"
#include "net/http_client.h"

namespace moat::agent::detail {

// Parses one response body (streamed or whole) into a ModelResponse. A fresh one per attempt.
class ResponseParser {
 public:
  virtual ~ResponseParser() = default;
  // Body bytes of a 2xx answer, as they arrive.
  virtual void feed(std::string_view bytes) = 0;
  // The body ended (transport_complete = the HTTP framing was complete).
  virtual Result<ModelResponse> finish(bool transport_complete) = 0;
  // Once an error is known mid-stream, reading stops early.
  virtual bool failed() const = 0;
  // Text already handed to on_text: a retry would show it twice, so none is made after this.
  virtual bool emitted() const = 0;
  // A failure the provider reported in-stream that a retry may cure (overloaded, api_error).
  virtual bool retryable() const { return true; }
};

struct WireCall {
  std::string target;  // "/v1/messages"
  net::HeaderList headers;  // without credentials
  std::string body;
};

class HttpProvider : public Provider {
 public:
  // The provider's HTTP client (its connections are reused across turns) honours HTTPS_PROXY and
  // NO_PROXY from moatd's environment.
  HttpProvider(ProviderConfig cfg, net::Url url, CredentialSource credentials, std::string display_name)
      : cfg_(std::move(cfg)),
        url_(std::move(url)),
        client_(std::make_unique<net::HttpClient>(
            net::ClientOptions{.extra_ca_file = cfg_.extra_ca_file, .proxy = net::ProxySettings::from_environment()})),
        credentials_(std::move(credentials)),
        name_(std::move(display_name)) {}

  Result<ModelResponse> complete(const ModelRequest& req, const StreamCallbacks& cb) final;

 protected:
  virtual WireCall build(const ModelRequest& req) const = 0;
  virtual std::unique_ptr<ResponseParser> parser(bool streaming, const StreamCallbacks& cb) const = 0;

  ProviderConfig cfg_;
  net::Url url_;

 private:
  std::unique_ptr<net::HttpClient> client_;
  CredentialSource credentials_;
  std::string name_;  // "anthropic provider at api.anthropic.com:443"
};

// The message of a provider's JSON error body: {"error":{"message":...}} (Anthropic, OpenAI),
// {"error":"..."} (Ollama) or {"message":...}; otherwise the start of the body.
std::string provider_error_message(std::string_view body);

// How long a 429/503 asks us to wait, from retry-after-ms, retry-after (seconds or HTTP date),
// then the reset time of an exhausted limit (anthropic-ratelimit-*-reset as RFC 3339,
// x-ratelimit-reset-* as "1m2.5s" durations). nullopt = no hint.
std::optional<std::chrono::milliseconds> retry_hint(const net::HttpResponseHead& head,
                                                    std::chrono::system_clock::time_point now);

// "6m0s", "1.5s", "20ms", "1h2m" -> milliseconds.
std::optional<std::chrono::milliseconds> parse_go_duration(std::string_view s);

// Replaces every occurrence of a secret (and of the token after "Bearer ") with "[redacted]".
std::string redact(std::string text, const std::vector<Credential>& secrets);

// Wipes credential values in place (OPENSSL_cleanse) and clears them.
void wipe(std::vector<Credential>& creds);

}  // namespace moat::agent::detail

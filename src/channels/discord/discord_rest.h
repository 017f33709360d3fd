#pragma once
// Discord's REST API as the channel calls it: Bot-token auth, JSON in and out, and the platform's rate
// limits kept here rather than discovered by failing (https://discord.com/developers/docs/topics/rate-limits).
//
// - Per-route buckets: each answer's X-RateLimit-Bucket / -Remaining / -Reset-After is remembered for
//   its route. Discord's bucket ids do not include the major parameter (the channel or guild id), but
//   its limits apply per bucket and major parameter, so the state is kept per both. Each call takes
//   one of the remaining slots before it goes (threads delivering, previewing and typing at once do not
//   all spend the last one); the answer's headers then say what is really left. A call whose bucket is
//   empty waits for the reset first (cancellably) when that is at most max_wait away, and otherwise
//   fails at once with retry_after, without a request.
// - A 429 gives its retry_after (the body's, in seconds; or the Retry-After header) to the caller; a
//   global one (body "global": true or X-RateLimit-Global) holds back every call until it has passed.
// - The token is in the Authorization header only and never in an error text.
#include <chrono>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "base/json.h"
#include "net/http_client.h"
#include "net/url.h"

namespace moat::channels::discord {

struct ApiError {
  int code = 0;  // HTTP status; 0 for a network or protocol failure
  int discord_code = 0;  // the JSON error code (10003 unknown channel, 50001 missing access, ...)
  std::string description;
  std::chrono::milliseconds retry_after{0};
  bool global = false;  // a 429 for every route
};
using ApiResult = std::expected<Json, ApiError>;

struct RestOptions {
  std::string api_base = "https://discord.com/api/v10";
  std::chrono::milliseconds timeout{15000};
  std::chrono::milliseconds max_wait{5000};  // the longest a call waits for its bucket before failing
  net::ClientOptions client;
};

class DiscordRest {
 public:
  using TokenFn = std::function<std::string()>;  // the current token ("" when none)
  DiscordRest(RestOptions opts, TokenFn token);

  // "" when api_base parsed, else why not.
  const std::string& base_error() const { return base_error_; }

  // METHOD <api_base><path> with `body` as JSON (none for a null body). The parsed answer on 2xx (null
  // for 204). `cancelled` is polled while waiting and during the call.
  ApiResult call(std::string_view method, std::string_view path, const Json& body,
                 const std::function<bool()>& cancelled = {});

  // How long the bucket of `method path` says to wait before a call (0: go). For tests and the status.
  std::chrono::milliseconds bucket_wait(std::string_view method, std::string_view path) const;

 private:
  struct Bucket {
    int remaining = 1;
    std::chrono::steady_clock::time_point reset{};
  };
  // The bucket state of `route` with major parameter `major`; null while unknown. Under mu_.
  Bucket* bucket_locked(const std::string& route, std::string_view major);
  const Bucket* bucket_locked(const std::string& route, std::string_view major) const;
  // The wait before a call on `route` may go (bucket or global), under mu_.
  std::chrono::milliseconds wait_locked(const std::string& route, std::string_view major,
                                        std::chrono::steady_clock::time_point now) const;
  void learn(const std::string& route, std::string_view major, const net::HttpResponseHead& head);

  RestOptions opts_;
  TokenFn token_;
  net::Url base_;
  std::string base_error_;
  std::unique_ptr<net::HttpClient> client_;

  mutable std::mutex mu_;
  std::map<std::string, std::string> route_bucket_;  // route -> bucket id
  std::map<std::string, Bucket> buckets_;            // "<bucket id>:<major parameter>" -> state
  std::chrono::steady_clock::time_point global_until_{};
};

// The route key of a path for rate limiting: ids replaced by ":id" except the major parameter (the
// channel or guild id right after /channels/ or /guilds/), as Discord keys its buckets.
std::string route_key(std::string_view method, std::string_view path);
// The major parameter of a path: the id after /channels/, /guilds/ or /webhooks/; "" when none.
std::string major_parameter(std::string_view path);

}  // namespace moat::channels::discord

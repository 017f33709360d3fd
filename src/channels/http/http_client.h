#pragma once
// A minimal blocking HTTP/1.1 client for the channels' outgoing calls (webhook callbacks). One
// request per connection, plain http only, one deadline for the whole exchange. It blocks the
// calling thread, which is fine on the router's delivery thread it is made for.
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "channels/http/url.h"

namespace moat::channels::http {

struct ClientResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// Unavailable on connect/IO failure or timeout (worth a retry). Responses bodies over 1 MiB are refused.
Result<ClientResponse> http_request(const HttpUrl& url, std::string_view method,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    std::string body, std::chrono::milliseconds timeout);

}  // namespace moat::channels::http

// The shape a request must have before a credential goes into it (request_form.h).
#include <gtest/gtest.h>

#include "egress/request_form.h"

using namespace moat::egress;
namespace http = boost::beast::http;

namespace {

http::request_header<> req(http::verb method, std::string target, std::vector<std::pair<std::string, std::string>> fields) {
  http::request_header<> r;
  r.method(method);
  r.target(target);
  for (auto& [k, v] : fields) r.insert(k, v);
  return r;
}

const CredentialDestination kBound{"api.example.com", 443, true};

TEST(RequestForm, OriginFormWithItsOneHostPasses) {
  EXPECT_FALSE(credential_request_refusal(req(http::verb::get, "/v1/x?y=1", {{"Host", "api.example.com"}}), kBound));
  EXPECT_FALSE(credential_request_refusal(req(http::verb::get, "/", {{"Host", "API.example.com:443"}}), kBound));
  EXPECT_FALSE(credential_request_refusal(req(http::verb::options, "*", {{"Host", "api.example.com"}}), kBound));
  EXPECT_FALSE(credential_request_refusal(req(http::verb::post, "/", {{"Host", "api.example.com"}, {"Content-Length", "3"}}), kBound));
  EXPECT_FALSE(credential_request_refusal(req(http::verb::post, "/", {{"Host", "api.example.com"}, {"Transfer-Encoding", "chunked"}}), kBound));
}

TEST(RequestForm, EveryOtherShapeIsRefusedSayingWhy) {
  auto host = std::pair<std::string, std::string>{"Host", "api.example.com"};
  struct Case {
    http::request_header<> r;
    const char* says;
  };
  std::vector<Case> cases = {
      {req(http::verb::get, "https://other.example/x", {host}), "not origin-form"},
      {req(http::verb::get, "http://api.example.com/x", {host}), "not origin-form"},
      {req(http::verb::get, "other.example:443", {host}), "not origin-form"},
      {req(http::verb::get, "*", {host}), "not origin-form"},
      {req(http::verb::get, "", {host}), "not origin-form"},
      {req(http::verb::connect, "other.example:443", {host}), "CONNECT"},
      {req(http::verb::get, "/", {host, {"Host", "other.example"}}), "2 Host headers"},
      {req(http::verb::get, "/", {{"Host", "other.example"}, host}), "2 Host headers"},
      {req(http::verb::get, "/", {}), "0 Host headers"},
      {req(http::verb::get, "/", {{"Host", "other.example"}}), "named Host 'other.example'"},
      {req(http::verb::get, "/", {{"Host", "api.example.com:8443"}}), "named Host"},
      {req(http::verb::get, "/", {{"Host", "api.example.com.evil"}}), "named Host"},
      {req(http::verb::post, "/", {host, {"Content-Length", "1"}, {"Content-Length", "1"}}), "2 Content-Length"},
      {req(http::verb::post, "/", {host, {"Content-Length", "1"}, {"Transfer-Encoding", "chunked"}}), "both Content-Length"},
      {req(http::verb::post, "/", {host, {"Transfer-Encoding", "gzip, chunked"}}), "Transfer-Encoding 'gzip, chunked'"},
      {req(http::verb::post, "/", {host, {"Transfer-Encoding", "chunked"}, {"Transfer-Encoding", "chunked"}}), "Transfer-Encoding"},
      {req(http::verb::get, "//other.example/x", {host}), "not origin-form"},
      {req(http::verb::post, "/", {host, {"Content-Length", "5"}, {"Connection", "keep-alive, content-length"}}),
       "Connection header names 'content-length'"},
      {req(http::verb::get, "/", {host, {"Connection", "Host"}}), "Connection header names 'Host'"},
      {req(http::verb::post, "/", {host, {"Transfer-Encoding", "chunked"}, {"Connection", "transfer-encoding"}}),
       "Connection header names"},
  };
  for (auto& c : cases) {
    auto why = credential_request_refusal(c.r, kBound);
    ASSERT_TRUE(why) << c.says;
    EXPECT_NE(why->find(c.says), std::string::npos) << *why;
  }
}

TEST(RequestForm, ARouteChecksTheCountNotTheValue) {
  CredentialDestination route{"api.example.com", 443, false};
  EXPECT_FALSE(credential_request_refusal(req(http::verb::get, "/v1", {{"Host", "127.0.0.1:3128"}}), route));
  EXPECT_TRUE(credential_request_refusal(req(http::verb::get, "/v1", {{"Host", "127.0.0.1:3128"}, {"Host", "x"}}), route));
}

}  // namespace

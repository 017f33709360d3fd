#include "channels/http/http_client.h"

#include <utility>  // before asio: boost 1.74's headers use std::exchange without including it
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

namespace moat::channels::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

Result<ClientResponse> http_request(const HttpUrl& url, std::string_view method,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    std::string body, std::chrono::milliseconds timeout) {
  // Async operations on a private io_context give one real deadline for resolve, connect, write
  // and read (blocking asio calls would ignore socket timeouts).
  asio::io_context io;
  tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  beast::flat_buffer buf;
  auto req = bhttp::request<bhttp::string_body>(bhttp::string_to_verb(std::string(method)), url.target, 11);
  std::string host_header = url.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", url.host, url.port)
                                                                    : fmt::format("{}:{}", url.host, url.port);
  req.set(bhttp::field::host, host_header);
  req.set(bhttp::field::user_agent, "moat");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = std::move(body);
  req.keep_alive(false);
  req.prepare_payload();
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(1 << 20);

  error_code result;
  const char* stage = "resolve";
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto remaining = [&] {
    return std::max(std::chrono::milliseconds(1),
                    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
  };
  resolver.async_resolve(url.host, std::to_string(url.port), [&](error_code ec, tcp::resolver::results_type eps) {
    if (ec) return void(result = ec);
    stage = "connect";
    stream.expires_after(remaining());
    stream.async_connect(eps, [&](error_code ec, const tcp::endpoint&) {
      if (ec) return void(result = ec);
      stage = "send";
      stream.expires_after(remaining());
      bhttp::async_write(stream, req, [&](error_code ec, size_t) {
        if (ec) return void(result = ec);
        stage = "read the response";
        stream.expires_after(remaining());
        bhttp::async_read(stream, buf, parser, [&](error_code ec, size_t) { result = ec; });
      });
    });
  });
  // The resolver has no tcp_stream timer: bound the whole run as well.
  io.run_for(timeout + std::chrono::milliseconds(500));
  if (!io.stopped()) {
    return fail(ErrorKind::Unavailable, "http {} {}:{}{}: timed out ({})", method, url.host, url.port, url.target, stage);
  }
  if (result) {
    return fail(ErrorKind::Unavailable, "http {} {}:{}{}: {} failed: {}", method, url.host, url.port, url.target, stage,
                result.message());
  }
  ClientResponse out;
  auto& res = parser.get();
  out.status = static_cast<int>(res.result_int());
  for (const auto& f : res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  out.body = std::move(res.body());
  return out;
}

}  // namespace moat::channels::http

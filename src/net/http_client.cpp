#include "net/http_client.h"


#include <openssl/crypto.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <deque>
#include <map>
#include <memory>
#include <mutex>

#include "base/text.h"

namespace moat::net {
namespace {

using Failure = HttpFailure;
using Kind = HttpFailure::Kind;

std::unexpected<Failure> failure(Kind kind, ErrorKind error_kind, std::string message) {
  return std::unexpected(Failure{kind, Error{error_kind, std::move(message)}});
}

// Buffered reading on top of Stream: lines for the head and chunk sizes, bytes for bodies.
class Reader {
 public:
  Reader(Stream& c, const CallOptions& call) : conn_(c), call_(call) {}

  Clock::time_point deadline = Clock::time_point::max();
  bool idle_deadline = false;  // after the head: each read gets a fresh `timeout`

  // false = EOF before anything more.
  std::expected<bool, Failure> fill() {
    char buf[16384];
    auto d = idle_deadline ? Clock::now() + call_.timeout : deadline;
    auto n = conn_.read_some(buf, sizeof buf, d, call_);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) return false;
    buf_.append(buf, *n);
    received_ += *n;
    return true;
  }

  std::expected<std::string, Failure> line(size_t limit = 65536) {
    for (;;) {
      if (auto pos = buf_.find('\n', pos_); pos != std::string::npos) {
        std::string out = buf_.substr(pos_, pos - pos_);
        pos_ = pos + 1;
        if (!out.empty() && out.back() == '\r') out.pop_back();
        return out;
      }
      if (buf_.size() - pos_ > limit + 2) return protocol("a header line is too long");
      compact();
      auto more = fill();
      if (!more) return std::unexpected(more.error());
      if (!*more) return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("{} closed the connection early", conn_.where()));
    }
  }

  // Up to n bytes already buffered or newly read; empty = EOF.
  std::expected<std::string_view, Failure> some(size_t n) {
    if (pos_ == buf_.size()) {
      buf_.clear();
      pos_ = 0;
      auto more = fill();
      if (!more) return std::unexpected(more.error());
      if (!*more) return std::string_view{};
    }
    size_t take = std::min(n, buf_.size() - pos_);
    std::string_view out(buf_.data() + pos_, take);
    pos_ += take;
    return out;
  }

  std::unexpected<Failure> protocol(std::string_view what) {
    return failure(Kind::Protocol, ErrorKind::Unavailable, fmt::format("{} sent a bad HTTP response: {}", conn_.where(), what));
  }

  uint64_t received() const { return received_; }  // bytes from the server so far
  bool drained() const { return pos_ == buf_.size(); }

 private:
  void compact() {
    if (pos_ > 0) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
  }
  Stream& conn_;
  const CallOptions& call_;
  std::string buf_;
  size_t pos_ = 0;
  uint64_t received_ = 0;
};

}  // namespace

// --- the client ---

struct HttpClient::Impl {
  explicit Impl(ClientOptions o) : options(std::move(o)), dialer(options.proxy, options.address_check) {}

  ClientOptions options;
  Dialer dialer;  // TCP connections, the proxy's tunnel and the address check

  std::mutex mu;
  std::map<std::string, std::deque<std::unique_ptr<Stream>>> idle;  // "https://host:port" -> newest last

  std::mutex tls_mu;
  std::optional<TlsContext> tls;
  std::optional<Failure> tls_error;

  // The TLS settings every connection shares: made once, with the extra CA file loaded once.
  std::expected<TlsContext, Failure> tls_context() {
    std::lock_guard g(tls_mu);
    if (tls) return *tls;
    if (tls_error) return std::unexpected(*tls_error);
    auto made = TlsContext::make({.extra_ca_file = options.extra_ca_file, .alpn = "http/1.1"});
    if (!made) {
      tls_error = made.error();
      return std::unexpected(made.error());
    }
    tls = *made;
    return *made;
  }

  static std::string pool_key(const Url& url) { return fmt::format("{}://{}", scheme_name(url.scheme), authority_text(url.host, url.port)); }

  std::unique_ptr<Stream> take_idle(const std::string& key) {
    std::lock_guard g(mu);
    auto it = idle.find(key);
    if (it == idle.end()) return nullptr;
    auto& list = it->second;
    while (!list.empty()) {
      auto c = std::move(list.back());
      list.pop_back();
      if (Clock::now() - c->idle_since <= options.max_idle && c->idle_and_open()) {
        c->reused = true;
        return c;
      }
    }
    return nullptr;
  }

  void give_back(const std::string& key, std::unique_ptr<Stream> c) {
    c->idle_since = Clock::now();
    std::lock_guard g(mu);
    auto& list = idle[key];
    list.push_back(std::move(c));
    while (list.size() > options.max_idle_per_origin) list.pop_front();
  }

  std::expected<std::unique_ptr<Stream>, Failure> open(const Url& url, Clock::time_point deadline,
                                                      const CallOptions& call) {
    std::optional<TlsContext> ctx;
    if (url.tls()) {
      auto c = tls_context();
      if (!c) return std::unexpected(c.error());
      ctx = *c;
    }
    return Stream::connect(dialer, url.host, url.port, ctx ? &*ctx : nullptr, deadline, call);
  }

  struct Exchange {
    std::expected<HttpResponseHead, Failure> result;
    bool reusable = false;         // the response was read to its end and the server keeps the connection
    bool nothing_received = false;  // failed before the server sent a byte
  };

  Exchange exchange(Stream& conn, const Url& url, const HttpRequest& request, Clock::time_point deadline,
                    const CallOptions& call, const HeadCallback& on_head, const BodyCallback& on_body) {
    Exchange ex{HttpResponseHead{}};
    auto fail_with = [&](Failure f, const Reader* in) {
      ex.result = std::unexpected(std::move(f));
      ex.nothing_received = !in || in->received() == 0;
      return std::move(ex);
    };
    std::string head = fmt::format("{} {} HTTP/1.1\r\nHost: {}\r\n", request.method, request.target, url.authority());
    for (const auto& [k, v] : request.headers) {
      head += k;
      head += ": ";
      head += v;
      head += "\r\n";
    }
    head += fmt::format("Content-Length: {}\r\n\r\n", request.body.size());
    auto sent = conn.write_all(head, deadline, call);
    // The head may carry credentials: wipe our copy whatever happened.
    OPENSSL_cleanse(head.data(), head.size());
    if (!sent) return fail_with(sent.error(), nullptr);
    if (auto r = conn.write_all(request.body, deadline, call); !r) return fail_with(r.error(), nullptr);

    Reader in(conn, call);
    in.deadline = deadline;
    HttpResponseHead resp;
    bool http11 = false;
    for (;;) {  // skip 1xx interim responses
      auto status_line = in.line();
      if (!status_line) return fail_with(status_line.error(), &in);
      std::string_view sl = *status_line;
      if (!sl.starts_with("HTTP/1.") || sl.size() < 12 || sl[8] != ' ') return fail_with(in.protocol("bad status line").error(), &in);
      http11 = sl[7] == '1';
      auto status = parse_number<int>(sl.substr(9, 3));
      if (!status) return fail_with(in.protocol("bad status code").error(), &in);
      resp = {};
      resp.status = *status;
      resp.reason = std::string(trim_space(sl.size() > 13 ? sl.substr(13) : std::string_view{}));
      for (;;) {
        auto l = in.line();
        if (!l) return fail_with(l.error(), &in);
        if (l->empty()) break;
        auto colon = l->find(':');
        if (colon == std::string::npos) return fail_with(in.protocol("header line without a colon").error(), &in);
        resp.headers.emplace_back(l->substr(0, colon), std::string(trim_space(std::string_view(*l).substr(colon + 1))));
        if (resp.headers.size() > 200) return fail_with(in.protocol("too many headers").error(), &in);
      }
      if (resp.status >= 200) break;
    }
    if (on_head) on_head(resp);
    in.idle_deadline = true;

    auto deliver = [&](std::string_view piece) -> std::expected<void, Failure> {
      // A fast stream never blocks in wait_io, so cancellation is also checked here.
      if (call.cancelled && call.cancelled())
        return failure(Kind::Cancelled, ErrorKind::Unavailable, "the call was cancelled");
      if (piece.empty() || !on_body || on_body(piece)) return {};
      return failure(Kind::Aborted, ErrorKind::Unavailable, "stopped reading the response");
    };
    auto early = [&] {
      return failure(Kind::Io, ErrorKind::Unavailable, fmt::format("{} closed the connection mid-response", conn.where()));
    };
    auto connection = ascii_lower(resp.header("connection").value_or(""));
    bool keep_alive = http11 && connection.find("close") == std::string::npos;
    auto done = [&] {
      ex.result = resp;
      ex.reusable = keep_alive && in.drained();
      return std::move(ex);
    };

    auto te = resp.header("transfer-encoding");
    auto cl = resp.header("content-length");
    if (resp.status == 204 || resp.status == 304 || request.method == "HEAD") return done();
    if (te && ascii_lower(*te).find("chunked") != std::string::npos) {
      for (;;) {
        auto size_line = in.line(1024);
        if (!size_line) return fail_with(size_line.error(), &in);
        std::string_view hex = trim_space(std::string_view(*size_line).substr(0, size_line->find(';')));
        auto size = parse_number<uint64_t>(hex, 16);
        if (!size) return fail_with(in.protocol("bad chunk size").error(), &in);
        if (*size == 0) break;
        for (uint64_t left = *size; left > 0;) {
          auto piece = in.some(static_cast<size_t>(std::min<uint64_t>(left, 1 << 20)));
          if (!piece) return fail_with(piece.error(), &in);
          if (piece->empty()) return fail_with(early().error(), &in);
          left -= piece->size();
          if (auto d = deliver(*piece); !d) return fail_with(d.error(), &in);
        }
        auto crlf = in.line(0);
        if (!crlf) return fail_with(crlf.error(), &in);
        if (!crlf->empty()) return fail_with(in.protocol("chunk not followed by CRLF").error(), &in);
      }
      for (;;) {  // trailers
        auto t = in.line();
        if (!t) return fail_with(t.error(), &in);
        if (t->empty()) break;
      }
      return done();
    }
    if (cl) {
      auto total = parse_number<uint64_t>(trim_space(*cl));
      if (!total) return fail_with(in.protocol("bad Content-Length").error(), &in);
      for (uint64_t left = *total; left > 0;) {
        auto piece = in.some(static_cast<size_t>(std::min<uint64_t>(left, 1 << 20)));
        if (!piece) return fail_with(piece.error(), &in);
        if (piece->empty()) return fail_with(early().error(), &in);
        left -= piece->size();
        if (auto d = deliver(*piece); !d) return fail_with(d.error(), &in);
      }
      return done();
    }
    keep_alive = false;  // no framing: the body ends when the server closes
    for (;;) {
      auto piece = in.some(1 << 20);
      if (!piece) return fail_with(piece.error(), &in);
      if (piece->empty()) return done();
      if (auto d = deliver(*piece); !d) return fail_with(d.error(), &in);
    }
  }
};

HttpClient::HttpClient(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
HttpClient::~HttpClient() = default;

size_t HttpClient::connections_opened() const { return impl_->dialer.connections_opened(); }

std::expected<HttpResponseHead, HttpFailure> HttpClient::send(const Url& url, const HttpRequest& request,
                                                              const CallOptions& options, const HeadCallback& on_head,
                                                              const BodyCallback& on_body) {
  const CallOptions& call = options;
  const auto deadline = Clock::now() + options.timeout;
  const std::string key = Impl::pool_key(url);
  for (;;) {
    auto conn = impl_->take_idle(key);
    if (!conn) {
      auto fresh = impl_->open(url, deadline, call);
      if (!fresh) return std::unexpected(fresh.error());
      conn = std::move(*fresh);
    }
    auto ex = impl_->exchange(*conn, url, request, deadline, call, on_head, on_body);
    if (ex.result) {
      if (ex.reusable) impl_->give_back(key, std::move(conn));
      return ex.result;
    }
    // A pooled connection the server closed just as we sent: it saw no request (no byte came
    // back), so the request goes again on a fresh connection — once, as pooled ones are used up first.
    auto kind = ex.result.error().kind;
    if (conn->reused && ex.nothing_received && kind == Kind::Io) continue;
    return ex.result;
  }
}

std::expected<HttpResponse, HttpFailure> HttpClient::fetch(const Url& url, const HttpRequest& request,
                                                           const CallOptions& options, size_t max_body) {
  HttpResponse out;
  bool too_big = false;
  auto head = send(url, request, options, nullptr, [&](std::string_view piece) {
    if (out.body.size() + piece.size() > max_body) {
      too_big = true;
      return false;
    }
    out.body.append(piece);
    return true;
  });
  if (!head) {
    if (too_big)
      return failure(Kind::Aborted, ErrorKind::ResourceLimit,
                     fmt::format("{} answered with a body over {} bytes", authority_text(url.host, url.port), max_body));
    return std::unexpected(head.error());
  }
  out.head = std::move(*head);
  return out;
}

}  // namespace moat::net

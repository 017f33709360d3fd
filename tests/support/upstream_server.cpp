#include "support/upstream_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <random>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace moat::testing {

namespace {

// ordered_json keeps keys in insertion order, so documents go out with "type" first exactly like
// the real API's (a client may not care, but a wire-faithful double should not differ needlessly).
using OJson = nlohmann::ordered_json;

template <auto Fn>
struct Free {
  template <class T>
  void operator()(T* p) const { Fn(p); }
};
using SslPtr = std::unique_ptr<SSL, Free<SSL_free>>;

constexpr size_t kMaxHead = 64 * 1024;     // request line + headers; beyond that we answer 431
constexpr size_t kIoChunk = 256 * 1024;    // read/write granularity for bodies: big enough for throughput

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](unsigned char x, unsigned char y) {
           return std::tolower(x) == std::tolower(y);
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// True when the comma-separated header value lists `token` (Connection: keep-alive, Upgrade).
bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    auto comma = value.find(',');
    if (iequals(trim(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 529: return "Overloaded";
    default: return "Status";
  }
}

bool body_forbidden(int status) { return (status >= 100 && status < 200) || status == 204 || status == 304; }

std::string status_line(int status) { return fmt::format("HTTP/1.1 {} {}\r\n", status, reason_phrase(status)); }

std::string head_text(int status, const HttpHeaders& headers) {
  std::string out = status_line(status);
  for (const auto& [k, v] : headers) out += fmt::format("{}: {}\r\n", k, v);
  out += "\r\n";
  return out;
}

template <class T>
std::optional<T> parse_number(std::string_view s, int base = 10) {
  T value{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), value, base);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return value;
}

std::optional<std::string> query_param(std::string_view target, std::string_view name) {
  auto q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view kv = rest.substr(0, amp);
    auto eq = kv.find('=');
    if (kv.substr(0, eq) == name) return std::string(eq == std::string_view::npos ? "" : kv.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

// The accept loop and its workers write to sockets whose peers may have gone. OpenSSL writes with
// write(2), which would raise SIGPIPE and kill the whole test binary; a test process has no use
// for SIGPIPE, so it is ignored once, process-wide.
void ignore_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] { ::signal(SIGPIPE, SIG_IGN); });
}

std::string ssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += out.empty() ? "" : "; ";
    out += buf;
  }
  return out;
}

// Records the SNI during the handshake: after it, OpenSSL only remembers names a callback accepted.
int remember_sni(SSL* ssl, int*, void*) {
  if (auto* out = static_cast<std::string*>(SSL_get_app_data(ssl))) {
    if (const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) *out = name;
  }
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

std::optional<std::string> find_header(const HttpHeaders& headers, std::string_view name) {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return std::nullopt;
}

std::vector<std::string> RecordedRequest::header_values(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) out.push_back(v);
  return out;
}

std::string RecordedRequest::path() const { return target.substr(0, target.find('?')); }

HttpResponse HttpResponse::text(int status, std::string body) {
  return {status, {{"Content-Type", "text/plain; charset=utf-8"}}, std::move(body)};
}

HttpResponse HttpResponse::json(int status, std::string body) {
  return {status, {{"Content-Type", "application/json"}}, std::move(body)};
}

// ---------------------------------------------------------------------------------------------
// One connection's byte stream: plain socket or TLS over it, with a read buffer for parsing.

struct ResponseWriter::Io {
  int fd = -1;
  SSL* ssl = nullptr;
  std::string buf;  // bytes read but not yet consumed, from `pos`
  size_t pos = 0;

  // Reads what is available (at least one byte); 0 = end of stream or error.
  size_t read_some(char* dst, size_t n) {
    if (ssl) {
      int r = SSL_read(ssl, dst, static_cast<int>(std::min<size_t>(n, INT32_MAX)));
      return r > 0 ? static_cast<size_t>(r) : 0;
    }
    for (;;) {
      ssize_t r = ::recv(fd, dst, n, 0);
      if (r < 0 && errno == EINTR) continue;
      return r > 0 ? static_cast<size_t>(r) : 0;
    }
  }

  bool write_all(std::string_view data) {
    while (!data.empty()) {
      if (ssl) {
        int r = SSL_write(ssl, data.data(), static_cast<int>(std::min<size_t>(data.size(), INT32_MAX)));
        if (r <= 0) return false;
        data.remove_prefix(static_cast<size_t>(r));
      } else {
        ssize_t r = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        data.remove_prefix(static_cast<size_t>(r));
      }
    }
    return true;
  }

  size_t buffered() const { return buf.size() - pos; }

  // Appends one read's worth to the buffer, compacting consumed bytes first.
  bool fill() {
    if (pos > 0) {
      buf.erase(0, pos);
      pos = 0;
    }
    char tmp[64 * 1024];
    size_t n = read_some(tmp, sizeof tmp);
    if (n == 0) return false;
    buf.append(tmp, n);
    return true;
  }

  // A CRLF-terminated line (without the CRLF); nullopt on EOF or if it grows past `limit`.
  std::optional<std::string> read_line(size_t limit = kMaxHead) {
    for (;;) {
      auto end = buf.find("\r\n", pos);
      if (end != std::string::npos) {
        std::string line = buf.substr(pos, end - pos);
        pos = end + 2;
        return line;
      }
      if (buffered() > limit || !fill()) return std::nullopt;
    }
  }

  // Reads exactly n body bytes, keeping at most `keep` of them in `out`. Bulk data goes straight
  // from the socket into a scratch buffer: no per-byte work, so the double is a fast sink.
  bool read_body(uint64_t n, std::string& out, size_t keep) {
    auto take = [&](const char* p, size_t len) {
      if (out.size() < keep) out.append(p, std::min(len, keep - out.size()));
    };
    size_t from_buf = static_cast<size_t>(std::min<uint64_t>(n, buffered()));
    take(buf.data() + pos, from_buf);
    pos += from_buf;
    n -= from_buf;
    if (n == 0) return true;
    std::vector<char> scratch(kIoChunk);
    while (n > 0) {
      size_t got = read_some(scratch.data(), static_cast<size_t>(std::min<uint64_t>(n, scratch.size())));
      if (got == 0) return false;
      take(scratch.data(), got);
      n -= got;
    }
    return true;
  }
};

// ---------------------------------------------------------------------------------------------
// ResponseWriter

bool ResponseWriter::raw(std::string_view bytes) {
  if (!ok_) return false;
  if (server_.stopping() || !io_.write_all(bytes)) ok_ = false;
  return ok_;
}

void ResponseWriter::send(const HttpResponse& r) {
  if (started_) return;  // a second answer to one request would corrupt the stream
  started_ = finished_ = true;
  if (r.close) close_ = true;
  HttpHeaders headers = r.headers;
  if (!body_forbidden(r.status) && !find_header(headers, "Content-Length"))
    headers.emplace_back("Content-Length", std::to_string(r.body.size()));
  if (close_) headers.emplace_back("Connection", "close");
  // Head and body in one write: one segment for small answers, which keeps latency measurements honest.
  std::string out = head_text(r.status, headers);
  if (!head_ && !body_forbidden(r.status)) out += r.body;
  raw(out);
}

bool ResponseWriter::begin(int status, HttpHeaders headers, std::optional<uint64_t> content_length) {
  if (started_) return false;
  started_ = true;
  if (body_forbidden(status)) {
    finished_ = true;
  } else if (content_length) {
    headers.emplace_back("Content-Length", std::to_string(*content_length));
    remaining_ = *content_length;
  } else if (http10_) {
    close_ = true;
  } else {
    headers.emplace_back("Transfer-Encoding", "chunked");
    chunked_ = true;
  }
  if (close_) headers.emplace_back("Connection", "close");
  if (head_) finished_ = true;  // HEAD: same head, no body
  return raw(head_text(status, headers));
}

bool ResponseWriter::write(std::string_view data) {
  if (!started_ || !ok_) return false;
  if (finished_ || data.empty()) return ok_;
  if (chunked_) return raw(fmt::format("{:x}\r\n{}\r\n", data.size(), data));
  if (remaining_) *remaining_ -= std::min<uint64_t>(*remaining_, data.size());
  return raw(data);
}

bool ResponseWriter::end() {
  if (!started_) return false;
  if (finished_) return ok_;
  finished_ = true;
  if (chunked_) return raw("0\r\n\r\n");
  // Fewer bytes than the declared Content-Length: the only honest way out is closing.
  if (remaining_ && *remaining_ > 0) close_ = true;
  return ok_;
}

bool ResponseWriter::write_raw(std::string_view bytes) {
  started_ = finished_ = true;
  return raw(bytes);
}

bool ResponseWriter::sleep_for(Clock::duration d) const { return server_.sleep_for(d); }

// ---------------------------------------------------------------------------------------------
// UpstreamServer

UpstreamServer::UpstreamServer(Options options) : options_(std::move(options)) {
  ignore_sigpipe();
  handler_ = options_.handler ? options_.handler : Handler{};

  if (options_.tls) {
    std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
    if (!ctx) throw std::runtime_error("upstream double: SSL_CTX_new failed: " + ssl_errors());
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    // A client hanging up without close_notify is normal for HTTP; read it as a plain end of stream.
    SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), options_.tls->cert_path.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx.get(), options_.tls->key_path.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx.get()) != 1)
      throw std::runtime_error(fmt::format("upstream double: cannot load {} / {}: {}", options_.tls->cert_path.string(),
                                           options_.tls->key_path.string(), ssl_errors()));
    SSL_CTX_set_tlsext_servername_callback(ctx.get(), remember_sni);
    ssl_ctx_ = std::move(ctx);
  }

  // Bind to the literal given, port 0: the kernel picks a free port, so parallel tests never collide.
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, options_.bind_address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, options_.bind_address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    len = sizeof *v6;
  } else {
    throw std::runtime_error(fmt::format("upstream double: bind address {:?} is not an IP literal", options_.bind_address));
  }
  listen_fd_ = UniqueFd(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  if (!listen_fd_ || ::setsockopt(listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      ::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(listen_fd_.get(), SOMAXCONN) != 0)
    throw std::runtime_error(fmt::format("upstream double: cannot listen on {}: {}", options_.bind_address, strerror(errno)));
  socklen_t got = sizeof ss;
  ::getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&ss), &got);
  port_ = ntohs(ss.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);

  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error("upstream double: pipe2 failed");
  wake_read_ = UniqueFd(pipefd[0]);
  wake_write_ = UniqueFd(pipefd[1]);

  accept_thread_ = std::thread([this] { accept_loop(); });
}

UpstreamServer::UpstreamServer() : UpstreamServer(Options{}) {}

UpstreamServer::~UpstreamServer() { stop(); }

std::string UpstreamServer::origin() const {
  bool v6 = options_.bind_address.find(':') != std::string::npos;
  return fmt::format("{}://{}{}{}:{}", tls() ? "https" : "http", v6 ? "[" : "", options_.bind_address, v6 ? "]" : "",
                     port_);
}

void UpstreamServer::set_handler(Handler handler) {
  std::lock_guard lock(mu_);
  handler_ = std::move(handler);
}

UpstreamServer::Handler UpstreamServer::current_handler() const {
  std::lock_guard lock(mu_);
  return handler_ ? handler_ : builtin_handler();
}

std::vector<RecordedRequest> UpstreamServer::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

bool UpstreamServer::wait_for_requests(size_t n, Clock::duration timeout) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
}

void UpstreamServer::clear_requests() {
  std::lock_guard lock(mu_);
  requests_.clear();
}

void UpstreamServer::record(const RecordedRequest& request) {
  if (!options_.record_requests) return;
  std::lock_guard lock(mu_);
  requests_.push_back(request);
  cv_.notify_all();
}

bool UpstreamServer::sleep_for(Clock::duration d) const {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [&] { return stopping_.load(); });
}

void UpstreamServer::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_.exchange(true)) return;
    cv_.notify_all();  // wakes handlers in sleep_for()
  }
  char b = 1;
  [[maybe_unused]] auto n = ::write(wake_write_.get(), &b, 1);
  if (accept_thread_.joinable()) accept_thread_.join();

  std::list<Worker> workers;
  {
    std::lock_guard lock(mu_);
    // shutdown() rather than close(): it wakes a worker blocked in read/write on that fd, while the
    // fd number stays owned by the worker (no chance of closing a number reused elsewhere).
    for (auto& [index, fd] : live_fds_) ::shutdown(fd, SHUT_RDWR);
    workers.swap(workers_);
  }
  for (auto& w : workers) w.thread.join();
}

void UpstreamServer::accept_loop() {
  std::array<pollfd, 2> fds{pollfd{listen_fd_.get(), POLLIN, 0}, pollfd{wake_read_.get(), POLLIN, 0}};
  while (!stopping_) {
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents || stopping_) return;
    if (!(fds[0].revents & POLLIN)) continue;
    UniqueFd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd) continue;
    // Small writes (one SSE event, one chunk) must leave at once, not wait for Nagle's timer.
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    size_t index = accepted_++;

    std::lock_guard lock(mu_);
    // Reap finished workers here, so a benchmark making thousands of connections does not pile
    // up thousands of unjoined threads.
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->done->load()) {
        it->thread.join();
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
    live_fds_[index] = fd.get();
    auto done = std::make_shared<std::atomic<bool>>(false);
    workers_.push_back(Worker{std::thread([this, fd = std::move(fd), index, done]() mutable {
                                serve(std::move(fd), index);
                                done->store(true);
                              }),
                              done});
  }
}

void UpstreamServer::serve(UniqueFd fd, size_t index) {
  {
    ResponseWriter::Io io;
    io.fd = fd.get();
    SslPtr ssl;
    std::string sni;
    bool ready = true;
    if (ssl_ctx_) {
      ssl.reset(SSL_new(static_cast<SSL_CTX*>(ssl_ctx_.get())));
      ready = ssl && SSL_set_fd(ssl.get(), fd.get()) == 1;
      if (ready) {
        SSL_set_app_data(ssl.get(), &sni);
        ready = SSL_accept(ssl.get()) == 1;
        SSL_set_app_data(ssl.get(), nullptr);
      }
      if (!ready) {
        handshake_failures_++;
        ERR_clear_error();  // this thread's queue; the failure is reported through the counter
      }
      io.ssl = ssl.get();
    }
    if (ready) {
      if (options_.mode == Mode::Http) {
        serve_http(io, index, sni);
      } else {
        serve_raw(io);
      }
      if (ssl && !stopping_) SSL_shutdown(ssl.get());  // close_notify: a polite end for TLS clients
    }
    ERR_clear_error();
  }
  std::lock_guard lock(mu_);
  live_fds_.erase(index);
  // `fd` closes on return, after it left live_fds_, so stop() never shuts down a reused number.
}

void UpstreamServer::serve_raw(ResponseWriter::Io& io) {
  std::vector<char> buf(kIoChunk);
  while (!stopping_) {
    size_t n = io.read_some(buf.data(), buf.size());
    if (n == 0) return;
    raw_bytes_ += n;
    if (options_.mode == Mode::Echo && !io.write_all({buf.data(), n})) return;
  }
}

void UpstreamServer::serve_http(ResponseWriter::Io& io, size_t index, const std::string& sni) {
  auto bad = [&](int status, std::string_view why) {
    ResponseWriter w(io, *this, false, false, false);
    w.send(HttpResponse::text(status, fmt::format("upstream double: {}\n", why)));
  };

  for (size_t sequence = 0; !stopping_; ++sequence) {
    RecordedRequest req;
    req.connection = index;
    req.sequence = sequence;
    req.sni = sni;

    // Request line; RFC 9112 lets a server skip empty lines before it.
    std::optional<std::string> line;
    do {
      line = io.read_line();
    } while (line && line->empty());
    if (!line) {
      if (io.buffered() > kMaxHead) bad(431, "request line too long");
      return;  // clean end of a keep-alive connection, or a broken one
    }
    {
      auto sp1 = line->find(' ');
      auto sp2 = sp1 == std::string::npos ? sp1 : line->find(' ', sp1 + 1);
      if (sp2 == std::string::npos || line->find(' ', sp2 + 1) != std::string::npos)
        return bad(400, fmt::format("malformed request line {:?}", *line));
      req.method = line->substr(0, sp1);
      req.target = line->substr(sp1 + 1, sp2 - sp1 - 1);
      req.version = line->substr(sp2 + 1);
      if (req.version != "HTTP/1.1" && req.version != "HTTP/1.0")
        return bad(400, fmt::format("unsupported version {:?}", req.version));
    }

    size_t head_size = line->size();
    for (;;) {
      auto h = io.read_line();
      if (!h) return bad(431, "header section too large or cut short");
      if (h->empty()) break;
      head_size += h->size();
      if (head_size > kMaxHead) return bad(431, "header section too large");
      auto colon = h->find(':');
      // No whitespace before the colon (RFC 9112 5.1): that is how request smuggling starts.
      if (colon == std::string::npos || colon == 0 || (*h)[colon - 1] == ' ' || (*h)[colon - 1] == '\t')
        return bad(400, fmt::format("malformed header line {:?}", *h));
      req.headers.emplace_back(h->substr(0, colon), std::string(trim(std::string_view(*h).substr(colon + 1))));
    }

    auto te = req.header("Transfer-Encoding");
    auto cl = req.header("Content-Length");
    if (te && cl) return bad(400, "both Transfer-Encoding and Content-Length");
    if (te && !iequals(trim(*te), "chunked")) return bad(501, fmt::format("unsupported Transfer-Encoding {:?}", *te));
    std::optional<uint64_t> content_length;
    if (cl) {
      content_length = parse_number<uint64_t>(trim(*cl));
      if (!content_length) return bad(400, fmt::format("bad Content-Length {:?}", *cl));
    }

    // curl and others send "Expect: 100-continue" for large bodies and wait (curl: 1 s) for this.
    auto expect = req.header("Expect");
    if (expect && iequals(*expect, "100-continue") && (te || content_length.value_or(0) > 0) &&
        !io.write_all("HTTP/1.1 100 Continue\r\n\r\n"))
      return;

    if (te) {
      req.chunked = true;
      for (;;) {
        auto size_line = io.read_line(1024);
        if (!size_line) return;
        std::string_view hex = trim(std::string_view(*size_line).substr(0, size_line->find(';')));
        auto size = parse_number<uint64_t>(hex, 16);
        if (!size) return bad(400, fmt::format("bad chunk size {:?}", *size_line));
        if (*size == 0) break;
        if (!io.read_body(*size, req.body, options_.max_recorded_body)) return;
        req.body_size += *size;
        auto crlf = io.read_line(0);
        if (!crlf || !crlf->empty()) return bad(400, "chunk not followed by CRLF");
      }
      for (;;) {  // trailer fields, ended by an empty line; recorded like headers
        auto t = io.read_line();
        if (!t) return;
        if (t->empty()) break;
        auto colon = t->find(':');
        if (colon != std::string::npos)
          req.headers.emplace_back(t->substr(0, colon), std::string(trim(std::string_view(*t).substr(colon + 1))));
      }
    } else if (content_length) {
      if (!io.read_body(*content_length, req.body, options_.max_recorded_body)) return;
      req.body_size = *content_length;
    }
    req.received_at = Clock::now();
    record(req);

    auto connection = req.header("Connection").value_or("");
    bool keep_alive = req.version == "HTTP/1.1" ? !has_token(connection, "close") : has_token(connection, "keep-alive");
    ResponseWriter w(io, *this, req.method == "HEAD", keep_alive, req.version == "HTTP/1.0");
    current_handler()(req, w);
    if (!w.started()) w.send(HttpResponse::text(500, "upstream double: the handler wrote no response\n"));
    w.end();
    if (!w.ok() || w.close_) return;
  }
}

UpstreamServer::Handler UpstreamServer::builtin_handler() const {
  return [port = port_](const RecordedRequest& req, ResponseWriter& w) {
    const std::string path = req.path();
    auto number_after = [&](std::string_view prefix) -> std::optional<uint64_t> {
      if (!path.starts_with(prefix)) return std::nullopt;
      return parse_number<uint64_t>(std::string_view(path).substr(prefix.size()));
    };

    if (auto n = number_after("/bytes/"); n && req.method == "GET") {
      static const std::string block(kIoChunk, 'x');
      if (!w.begin(200, {{"Content-Type", "application/octet-stream"}}, *n)) return;
      for (uint64_t left = *n; left > 0 && w.ok();) {
        size_t step = static_cast<size_t>(std::min<uint64_t>(left, block.size()));
        w.write(std::string_view(block).substr(0, step));
        left -= step;
      }
      return;
    }
    if (path == "/sink") {
      w.send({200, {{"Content-Type", "text/plain"}, {"X-Received-Bytes", std::to_string(req.body_size)}},
              fmt::format("{}\n", req.body_size)});
      return;
    }
    if (auto n = number_after("/chunks/")) {
      auto delay = std::chrono::milliseconds(parse_number<int>(query_param(req.target, "delay_ms").value_or("0")).value_or(0));
      if (!w.begin(200, {{"Content-Type", "text/plain"}})) return;
      for (uint64_t i = 0; i < *n && w.ok(); ++i) {
        if (i > 0 && !w.sleep_for(delay)) return;
        w.write(fmt::format("chunk {}\n", i));
      }
      return;
    }
    if (auto n = number_after("/status/"); n && *n >= 200 && *n <= 599) {
      w.send({static_cast<int>(*n), {}, ""});
      return;
    }
    if (path == "/echo") {
      OJson headers = OJson::array();
      for (const auto& [k, v] : req.headers) headers.push_back({k, v});
      OJson doc = {{"method", req.method}, {"target", req.target}, {"headers", headers},
                   {"body", req.body},     {"connection", req.connection}, {"sni", req.sni}};
      w.send(HttpResponse::json(200, doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
      return;
    }
    w.send(HttpResponse::text(200, fmt::format("hello from upstream {}\n", port)));
  };
}

// ---------------------------------------------------------------------------------------------
// AnthropicDouble

struct AnthropicDouble::State {
  AnthropicDoubleOptions options;
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  std::vector<SentEvent> events;
  size_t streams = 0;
  size_t served = 0;

  std::string text() const {
    std::string out;
    for (const auto& piece : options.text) out += piece;
    return out;
  }
};

namespace {

// Ids shaped like the real ones ("msg_01" + 22 base62 characters, "req_011C..."), random so two
// runs never collide.
std::string random_id(std::string_view prefix) {
  static constexpr std::string_view kAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string out(prefix);
  for (int i = 0; i < 22; ++i) out += kAlphabet[rng() % kAlphabet.size()];
  return out;
}

// The real API's error document: {"type":"error","error":{"type":...,"message":...},"request_id":...}.
HttpResponse api_error(int status, std::string_view type, std::string_view message, const std::string& request_id) {
  OJson doc = {{"type", "error"}, {"error", {{"type", type}, {"message", message}}}, {"request_id", request_id}};
  HttpResponse r = HttpResponse::json(status, doc.dump());
  r.headers.emplace_back("request-id", request_id);
  return r;
}

}  // namespace

AnthropicDouble::AnthropicDouble(AnthropicDoubleOptions options) : state_(std::make_shared<State>()) {
  state_->options = std::move(options);
}

std::string AnthropicDouble::answer_text() const { return state_->text(); }

std::vector<SentEvent> AnthropicDouble::sent_events() const {
  std::lock_guard lock(state_->mu);
  return state_->events;
}

bool AnthropicDouble::wait_for_events(size_t n, Clock::duration timeout) const {
  std::unique_lock lock(state_->mu);
  return state_->cv.wait_for(lock, timeout, [&] { return state_->events.size() >= n; });
}

size_t AnthropicDouble::messages_served() const {
  std::lock_guard lock(state_->mu);
  return state_->served;
}

UpstreamServer::Handler AnthropicDouble::handler() const {
  return [state = state_](const RecordedRequest& req, ResponseWriter& w) {
    const auto& opt = state->options;
    const std::string request_id = random_id("req_011C");
    if (req.path() != "/v1/messages") return w.send(api_error(404, "not_found_error", "Not Found", request_id));
    if (req.method != "POST")
      return w.send(api_error(405, "invalid_request_error", "Method Not Allowed", request_id));

    // Same checks, same order and same messages as api.anthropic.com.
    auto key = req.header("x-api-key");
    if (!key) return w.send(api_error(401, "authentication_error", "x-api-key header is required", request_id));
    if (*key != opt.api_key) return w.send(api_error(401, "authentication_error", "invalid x-api-key", request_id));
    auto version = req.header("anthropic-version");
    if (!version)
      return w.send(api_error(400, "invalid_request_error", "anthropic-version: header is required", request_id));
    if (*version != "2023-06-01" && *version != "2023-01-01")
      return w.send(api_error(400, "invalid_request_error",
                              fmt::format("anthropic-version: \"{}\" is not a valid version", *version), request_id));

    nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object())
      return w.send(api_error(400, "invalid_request_error",
                              "There was an error parsing the body of your request: it is not a JSON object",
                              request_id));
    for (const char* field : {"model", "max_tokens", "messages"})
      if (!body.contains(field))
        return w.send(api_error(400, "invalid_request_error", fmt::format("{}: Field required", field), request_id));
    if (!body["model"].is_string() || !body["max_tokens"].is_number_integer() || !body["messages"].is_array())
      return w.send(api_error(400, "invalid_request_error", "model, max_tokens or messages has the wrong type", request_id));

    const auto model = body["model"].get<std::string>();
    const std::string message_id = random_id("msg_01");
    const int output_tokens = static_cast<int>(opt.text.size());
    OJson usage_start = {{"input_tokens", opt.input_tokens},
                         {"cache_creation_input_tokens", 0},
                         {"cache_read_input_tokens", 0},
                         {"output_tokens", 1}};

    if (!body.value("stream", false)) {
      OJson usage = usage_start;
      usage["output_tokens"] = output_tokens;
      OJson msg = {{"id", message_id},
                   {"type", "message"},
                   {"role", "assistant"},
                   {"model", model},
                   {"content", OJson::array({{{"type", "text"}, {"text", state->text()}}})},
                   {"stop_reason", "end_turn"},
                   {"stop_sequence", nullptr},
                   {"usage", usage}};
      HttpResponse r = HttpResponse::json(200, msg.dump());
      r.headers.emplace_back("request-id", request_id);
      {
        std::lock_guard lock(state->mu);
        state->served++;
      }
      return w.send(r);
    }

    // Streaming: the event sequence of a one-text-block answer, as the real API sends it.
    std::vector<std::pair<std::string, OJson>> events;
    events.emplace_back("message_start", OJson{{"type", "message_start"},
                                               {"message",
                                                {{"id", message_id},
                                                 {"type", "message"},
                                                 {"role", "assistant"},
                                                 {"model", model},
                                                 {"content", OJson::array()},
                                                 {"stop_reason", nullptr},
                                                 {"stop_sequence", nullptr},
                                                 {"usage", usage_start}}}});
    events.emplace_back("content_block_start", OJson{{"type", "content_block_start"},
                                                     {"index", 0},
                                                     {"content_block", {{"type", "text"}, {"text", ""}}}});
    events.emplace_back("ping", OJson{{"type", "ping"}});
    for (const auto& piece : opt.text)
      events.emplace_back("content_block_delta", OJson{{"type", "content_block_delta"},
                                                       {"index", 0},
                                                       {"delta", {{"type", "text_delta"}, {"text", piece}}}});
    events.emplace_back("content_block_stop", OJson{{"type", "content_block_stop"}, {"index", 0}});
    events.emplace_back("message_delta", OJson{{"type", "message_delta"},
                                               {"delta", {{"stop_reason", "end_turn"}, {"stop_sequence", nullptr}}},
                                               {"usage", {{"output_tokens", output_tokens}}}});
    events.emplace_back("message_stop", OJson{{"type", "message_stop"}});

    size_t stream;
    {
      std::lock_guard lock(state->mu);
      stream = state->streams++;
      state->served++;
    }
    if (!w.begin(200, {{"Content-Type", "text/event-stream; charset=utf-8"},
                       {"Cache-Control", "no-cache"},
                       {"request-id", request_id}}))
      return;
    for (size_t i = 0; i < events.size(); ++i) {
      if (i > 0 && opt.event_delay.count() > 0 && !w.sleep_for(opt.event_delay)) return;
      std::string data = events[i].second.dump();
      // One event = one HTTP chunk = one write: it leaves now, and its timestamp says when.
      if (!w.write(fmt::format("event: {}\ndata: {}\n\n", events[i].first, data))) return;
      std::lock_guard lock(state->mu);
      state->events.push_back(SentEvent{stream, events[i].first, std::move(data), Clock::now()});
      state->cv.notify_all();
    }
    w.end();
  };
}

}  // namespace moat::testing

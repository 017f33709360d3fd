#pragma once
// Test doubles for the remote services the egress gateway talks to (api.anthropic.com and arbitrary
// web upstreams). They are real servers on real sockets: HTTP/1.1 over TCP, optionally TLS with a
// certificate from TestCa, keep-alive, chunked bodies both ways. Only the remote *service* is
// faked, never the protocol, so whatever passes through the gateway is what a real client and a
// real server would exchange.
//
// Concurrency: one accept thread and one thread per connection. That is fine for a double (and
// keeps handlers plain blocking code); the gateway under test is the one that must be asynchronous.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "base/unique_fd.h"

namespace moat::testing {

class UpstreamServer;
using Clock = std::chrono::steady_clock;
using HttpHeaders = std::vector<std::pair<std::string, std::string>>;  // in order, names as sent

// Case-insensitive header lookup (HTTP field names are case-insensitive): first value or nullopt.
std::optional<std::string> find_header(const HttpHeaders& headers, std::string_view name);

// One request as the upstream saw it on the wire.
struct RecordedRequest {
  std::string method;   // "GET"
  std::string target;   // request-target exactly as sent: "/v1/messages?x=1" (or absolute-form)
  std::string version;  // "HTTP/1.1"
  HttpHeaders headers;  // every header line, in order, names as sent
  std::string body;     // decoded body (chunked framing removed), at most Options::max_recorded_body bytes
  uint64_t body_size = 0;         // full decoded body length, even past the recording limit
  bool chunked = false;           // the body came with Transfer-Encoding: chunked
  size_t connection = 0;          // accept order of the connection it came on, from 0
  size_t sequence = 0;            // position on that connection: 0 = first request (keep-alive => >0)
  std::string sni;                // server name the client sent in its TLS ClientHello; empty if none/plain
  Clock::time_point received_at;  // when the whole request (head and body) had arrived

  std::optional<std::string> header(std::string_view name) const { return find_header(headers, name); }
  bool has_header(std::string_view name) const { return header(name).has_value(); }
  std::vector<std::string> header_values(std::string_view name) const;  // all of them, case-insensitive
  std::string path() const;                                             // target without "?query"
};

// A complete response, for handlers that need no streaming.
struct HttpResponse {
  int status = 200;
  HttpHeaders headers;  // Content-Length is added unless present
  std::string body;
  bool close = false;   // send "Connection: close" and close the connection after this response

  static HttpResponse text(int status, std::string body);  // text/plain; charset=utf-8
  static HttpResponse json(int status, std::string body);  // application/json
};

// How a handler answers. Either send() one HttpResponse, or begin() + write()... + end() to stream.
// Every write goes to the socket (SSL_write = one TLS record) before it returns, with TCP_NODELAY
// set, so a streamed chunk leaves the double when the handler writes it, never later.
class ResponseWriter {
 public:
  void send(const HttpResponse& response);
  // Sends the status line and headers now. content_length nullopt = Transfer-Encoding: chunked
  // (for an HTTP/1.0 client, which knows no chunks: a body ended by closing the connection).
  bool begin(int status, HttpHeaders headers = {}, std::optional<uint64_t> content_length = std::nullopt);
  // Body bytes: one chunk when chunked (empty data is skipped: an empty chunk would end the body).
  bool write(std::string_view data);
  bool end();                                // terminating chunk when chunked; closes if bytes are missing
  bool write_raw(std::string_view bytes);    // exactly these bytes, no framing (for malformed answers)
  bool sleep_for(Clock::duration d) const;   // a delay that ends early (false) when the server stops
  void close_connection() { close_ = true; }  // close after this response instead of keeping alive
  bool ok() const { return ok_; }            // false once a write failed (peer gone) or the server stops
  bool started() const { return started_; }
  bool finished() const { return finished_; }

 private:
  friend class UpstreamServer;
  struct Io;
  ResponseWriter(Io& io, UpstreamServer& server, bool head_request, bool keep_alive, bool http10)
      : io_(io), server_(server), head_(head_request), close_(!keep_alive), http10_(http10) {}
  bool raw(std::string_view bytes);

  Io& io_;
  UpstreamServer& server_;
  bool head_ = false;
  bool close_ = false;
  bool http10_ = false;  // the client speaks HTTP/1.0: no chunked encoding, end the body by closing
  bool ok_ = true;
  bool started_ = false;
  bool finished_ = false;
  bool chunked_ = false;
  std::optional<uint64_t> remaining_;  // body bytes still owed when Content-Length was declared
};

class UpstreamServer {
 public:
  using Handler = std::function<void(const RecordedRequest&, ResponseWriter&)>;

  enum class Mode {
    Http,  // parse HTTP/1.1 requests and call the handler (default)
    Echo,  // no HTTP: every byte received is sent straight back (a tunnel's far end)
    Sink,  // no HTTP: read and count bytes, answer nothing (raw_bytes_received())
  };
  struct TlsFiles {
    std::filesystem::path cert_path;  // PEM certificate (chain) file
    std::filesystem::path key_path;   // PEM private key
  };
  struct Options {
    std::string bind_address = "127.0.0.1";  // an IPv4 or IPv6 literal; the port is always ephemeral
    std::optional<TlsFiles> tls;              // set = speak TLS (1.2+), no ALPN (so HTTP/1.1)
    Mode mode = Mode::Http;
    Handler handler;                           // empty = builtin_handler()
    bool record_requests = true;               // keep every request (turn off for long benchmarks)
    size_t max_recorded_body = 16 << 20;       // bytes of each body kept in RecordedRequest::body
  };

  // Binds, listens and starts the accept thread. Throws std::runtime_error when it cannot
  // (a fixture that cannot start is a failed test).
  explicit UpstreamServer(Options options);
  UpstreamServer();  // default Options (g++ cannot take `= {}` for a nested struct with initializers)
  ~UpstreamServer();  // stop()
  UpstreamServer(const UpstreamServer&) = delete;
  UpstreamServer& operator=(const UpstreamServer&) = delete;

  uint16_t port() const { return port_; }
  const std::string& host() const { return options_.bind_address; }
  std::string origin() const;  // "http://127.0.0.1:PORT" or "https://..." ("[::1]" for IPv6)
  bool tls() const { return options_.tls.has_value(); }

  void set_handler(Handler handler);  // for connections' next requests; thread-safe

  // Requests seen so far (copies; thread-safe).
  std::vector<RecordedRequest> requests() const;
  // Waits until at least n requests have arrived; false on timeout.
  bool wait_for_requests(size_t n, Clock::duration timeout = std::chrono::seconds(10)) const;
  void clear_requests();

  size_t connections_accepted() const { return accepted_.load(); }
  size_t tls_handshake_failures() const { return handshake_failures_.load(); }  // e.g. client refused our cert
  uint64_t raw_bytes_received() const { return raw_bytes_.load(); }            // Echo/Sink modes

  // Stops accepting, cuts every open connection and joins all threads. Idempotent.
  void stop();
  bool stopping() const { return stopping_.load(); }

  // The default handler:
  //   GET /bytes/N        200 with N bytes of 'x' (Content-Length, written 256 KiB at a time: a
  //                       throughput source with no per-byte work)
  //   POST /sink          consumes the body; 200 "N\n" with N = body length (throughput sink)
  //   GET /chunks/N?delay_ms=D   N chunks "chunk i\n", chunked encoding, D ms apart
  //   GET /status/N       an empty response with status N
  //   ANY /echo           200 JSON {method, target, headers:[[name,value]...], body} of the request
  //   anything else       200 "hello from upstream <port>\n"
  Handler builtin_handler() const;

 private:
  friend class ResponseWriter;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  void accept_loop();
  void serve(UniqueFd fd, size_t index);
  void serve_http(ResponseWriter::Io& io, size_t index, const std::string& sni);
  void serve_raw(ResponseWriter::Io& io);
  void record(const RecordedRequest& request);
  Handler current_handler() const;
  bool sleep_for(Clock::duration d) const;

  Options options_;
  uint16_t port_ = 0;
  UniqueFd listen_fd_;
  UniqueFd wake_read_, wake_write_;  // a pipe: writing to it wakes the accept loop's poll() on stop
  std::shared_ptr<void> ssl_ctx_;    // SSL_CTX*, type-erased so this header needs no OpenSSL
  std::thread accept_thread_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;  // requests_ grew, or stopping_ became true
  std::vector<RecordedRequest> requests_;
  Handler handler_;
  std::list<Worker> workers_;
  std::map<size_t, int> live_fds_;  // connection index -> fd, so stop() can shutdown() blocked reads

  std::atomic<bool> stopping_{false};
  std::atomic<size_t> accepted_{0};
  std::atomic<size_t> handshake_failures_{0};
  std::atomic<uint64_t> raw_bytes_{0};
};

// ---------------------------------------------------------------------------------------------
// A double of the Anthropic Messages API (POST /v1/messages), wire-faithful to the real one:
// x-api-key and anthropic-version checks with the real error shapes, the non-streaming Message
// object, and for "stream": true the real server-sent event sequence
//   message_start, content_block_start, ping, content_block_delta (text_delta) x N,
//   content_block_stop, message_delta (stop_reason, usage), message_stop
// framed as "event: <name>\ndata: <json>\n\n", one HTTP chunk per event, `event_delay` apart.
// The send time of every event is recorded so a test can check that events reach the client as
// they are sent (a buffering proxy would deliver them all at the end).

struct AnthropicDoubleOptions {
  std::string api_key = "sk-ant-api03-moat-test-key";             // the only x-api-key accepted
  std::vector<std::string> text = {"Hello", ",", " world", "!"};  // one text_delta per piece
  std::chrono::milliseconds event_delay{50};                      // pause before each event after the first
  int input_tokens = 12;                                          // reported in usage
};

struct SentEvent {
  size_t stream = 0;        // which streamed response it belongs to, from 0
  std::string name;         // "message_start", ...
  std::string data;         // the JSON on its data: line
  Clock::time_point sent_at;  // after the write returned (bytes handed to the kernel)
};

class AnthropicDouble {
 public:
  explicit AnthropicDouble(AnthropicDoubleOptions options = {});

  // The handler to give an UpstreamServer (usually a TLS one). Holds the shared state, so it stays
  // valid even if this object goes first.
  UpstreamServer::Handler handler() const;

  std::vector<SentEvent> sent_events() const;
  bool wait_for_events(size_t n, Clock::duration timeout = std::chrono::seconds(10)) const;
  size_t messages_served() const;  // 200 answers, streamed or not

  // The full text the double answers with (the concatenation of options.text).
  std::string answer_text() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace moat::testing

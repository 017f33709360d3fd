// One connection from a sandbox through the gateway: HTTP requests (absolute-URI forwarding and
// base-URL routes, with keep-alive), or a CONNECT that becomes a checked tunnel or, for destinations
// with a credential binding, an intercepted TLS session.
#include <utility>  // before asio: boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <set>

#include "egress/client_hello.h"
#include "egress/gateway_context.h"
#include "net/tls.h"
#include "net/url.h"
#include "egress/injection.h"
#include "egress/policy_book.h"
#include "egress/request_form.h"
#include "egress/usage_meter.h"
#include "base/log.h"
#include "store/clock.h"

namespace moat::egress {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using UnixSocket = asio::local::stream_protocol::socket;
using asio::awaitable;
using asio::use_awaitable;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kHeaderLimit = 64 * 1024;
// Bodies stream through; they are never held whole. (Not boost::none: Beast 1.74 compares a
// Content-Length against an empty optional as "greater" and refuses every body.)
constexpr uint64_t kNoBodyLimit = std::numeric_limits<uint64_t>::max();
constexpr size_t kChunk = 64 * 1024;
constexpr auto kHelloTimeout = std::chrono::seconds(10);
constexpr auto kIdleHttp = std::chrono::minutes(5);
constexpr auto kIdleTunnel = std::chrono::hours(1);

auto nothrow(error_code& ec) { return asio::redirect_error(use_awaitable, ec); }

// One upstream connection: what its audit record says.
struct ConnRecord {
  std::string mode;  // connect | intercept | http | route
  std::string host;
  uint16_t port = 0;
  std::string address;
  std::string decision = "deny";  // allow | deny | error
  std::string rule, reason, error;
  std::set<std::string> credentials;
  uint64_t up = 0, down = 0;
  Clock::time_point started = Clock::now();
  bool counted = false;  // holds one of the agent's connection slots
  bool finished = false;
};

struct Refusal {
  http::status status;
  std::string rule;
  std::string reason;
};

struct Opened {
  tcp::socket socket;
};

// Hop-by-hop headers (RFC 9110 7.6.1) and proxy-only ones never travel upstream; Upgrade and Expect
// are dropped because the gateway relays plain HTTP/1.1 messages (no protocol switch, no 100 dance).
template <class Fields>
void strip_hop_by_hop(Fields& f) {
  std::vector<std::string> named;
  for (auto token : http::token_list(f[http::field::connection])) named.emplace_back(token);
  // Connection may name hop-by-hop headers, never the message's framing or its Host: erasing those
  // after the checks would let the body that follows be read upstream as a request nobody checked.
  for (const auto& n : named) {
    auto field = http::string_to_field(n);
    if (field == http::field::host || field == http::field::content_length || field == http::field::transfer_encoding)
      continue;
    f.erase(n);
  }
  for (auto h : {http::field::connection, http::field::keep_alive, http::field::proxy_connection,
                 http::field::proxy_authorization, http::field::proxy_authenticate, http::field::te,
                 http::field::trailer, http::field::upgrade, http::field::expect})
    f.erase(h);
}

template <class Fields>
uint64_t header_bytes(const Fields& f) {
  uint64_t n = 0;
  for (const auto& h : f) n += h.name_string().size() + h.value().size() + 4;
  return n;
}

std::string iso_reason(const Refusal& r) { return fmt::format("moat egress: {}\nrule: {}\n", r.reason, r.rule); }

class Session : public std::enable_shared_from_this<Session>, public LiveConnection {
 public:
  Session(GatewayContext& ctx, UnixSocket client, std::string agent)
      : ctx_(ctx), client_(std::move(client)), agent_(std::move(agent)),
        limits_(ctx.parts.policies.limits_for(agent_)), policy_seen_(ctx.parts.policies.revision()),
        vault_seen_(ctx.parts.vault.revision()) {
    ctx_.live.insert(this);
    ++ctx_.sessions[agent_];
  }
  ~Session() override {
    ctx_.live.erase(this);
    release_slot();
  }

  // The agent's count of open connections (capped at accept) drops when this one closes.
  void release_slot() {
    if (!counted_) return;
    counted_ = false;
    if (auto it = ctx_.sessions.find(agent_); it != ctx_.sessions.end() && --it->second == 0) ctx_.sessions.erase(it);
  }

  // A revocation reaches this connection: an upstream policy no longer allows, or credentials that
  // changed (removed, re-bound or replaced: an intercepted session holds the values it was given),
  // and the whole connection is closed, its record saying why. While a decision is being made (a
  // resolve, a connect, a handshake) the check waits for the next tick, so that decision is checked too.
  void revalidate() override {
    if (closed_ || deciding_ > 0) return;
    uint64_t policy_now = ctx_.parts.policies.revision(), vault_now = ctx_.parts.vault.revision();
    bool policy_changed = policy_now != policy_seen_, vault_changed = vault_now != vault_seen_;
    if (!policy_changed && !vault_changed) return;
    policy_seen_ = policy_now;
    vault_seen_ = vault_now;
    for (ConnRecord* rec : {plain_ ? &plain_->rec : nullptr, route_ ? &route_->rec : nullptr, connect_rec_}) {
      if (!rec || rec->decision != "allow") continue;
      std::string why;
      if (policy_changed) why = still_allowed(*rec);
      if (why.empty() && vault_changed && (rec->mode == "intercept" || !rec->credentials.empty()))
        why = "the credentials it carries changed";
      if (why.empty()) continue;
      rec->error = fmt::format("revoked: {}", why);
      log::info("egress: {}: closed a connection to {}: {}", agent_, net::authority_text(rec->host, rec->port), rec->error);
      abort_io();
      return;
    }
  }

  awaitable<void> run() {
    asio::co_spawn(client_.get_executor(), watch(shared_from_this()), asio::detached);
    for (;;) {
      idle_limit_ = kIdleHttp;
      http::request_parser<http::empty_body> hp;
      hp.header_limit(kHeaderLimit);
      hp.body_limit(kNoBodyLimit);
      error_code ec;
      co_await http::async_read_header(client_, buf_, hp, nothrow(ec));
      touch();
      if (ec) {
        if (ec != http::error::end_of_stream && ec != asio::error::eof && ec != asio::error::operation_aborted &&
            ec != asio::error::connection_reset)
          co_await respond(client_, http::status::bad_request, fmt::format("moat egress: malformed request: {}\n", ec.message()),
                           false);
        break;
      }
      bool more = false;
      auto& req = hp.get();
      std::string_view target(req.target().data(), req.target().size());
      if (req.method() == http::verb::connect) {
        co_await handle_connect(std::string(target));
        break;
      } else if (target.starts_with("/")) {
        more = co_await handle_route(hp);
      } else {
        more = co_await handle_http(hp);
      }
      if (!more) break;
    }
    close_all();
  }

 private:
  void touch() { last_activity_ = Clock::now(); }

  // Marks a stretch during which this connection is deciding (revalidate waits for it to end).
  struct Deciding {
    int& n;
    explicit Deciding(int& count) : n(count) { ++n; }
    ~Deciding() { --n; }
    Deciding(const Deciding&) = delete;
    Deciding& operator=(const Deciding&) = delete;
  };

  // Why policy would refuse `rec`'s upstream now, or "" while it still allows it.
  std::string still_allowed(const ConnRecord& rec) const {
    Policy policy = ctx_.parts.policies.policy_for(agent_);
    Decision d = check_host(policy, rec.host, rec.port);
    if (!d.allowed) return d.reason;
    error_code ec;
    auto address = asio::ip::make_address(rec.address, ec);
    if (ec) return {};
    Decision ad = check_address(policy, address, rec.port, ctx_.own_addresses);
    return ad.allowed ? std::string() : ad.reason;
  }

  // Closes everything once the connection has been idle too long, so a stalled peer cannot hold a slot.
  static awaitable<void> watch(std::shared_ptr<Session> self) {
    asio::steady_timer t(self->client_.get_executor());
    // Cancelled when the connection closes, so a closed session is freed at once, not at the next tick.
    self->watch_timer_ = &t;
    struct Forget {
      asio::steady_timer*& p;
      ~Forget() { p = nullptr; }
    } forget{self->watch_timer_};
    while (!self->closed_) {
      t.expires_after(std::chrono::seconds(5));
      error_code ec;
      co_await t.async_wait(nothrow(ec));
      if (self->closed_) break;
      if (Clock::now() - self->last_activity_ > self->idle_limit_) self->abort_io();
    }
  }

  // Closes every socket so that pending operations end with an error; the objects stay alive until
  // the coroutines using them unwind (run() then calls close_all()).
  void abort_io() {
    closed_ = true;
    release_slot();
    if (watch_timer_) watch_timer_->cancel();
    error_code ignore;
    client_.close(ignore);
    if (plain_) plain_->socket.close(ignore);
    if (route_) route_->stream.lowest_layer().close(ignore);
    for (auto* s : active_) s->close(ignore);
  }

  void close_all() {
    abort_io();
    if (plain_) finish(plain_->rec);
    if (route_) finish(route_->rec);
    plain_.reset();
    route_.reset();
  }

  // A refusal's answer waits while the agent is over its refusal rate (RefusalLedger): the flooding
  // sandbox is slowed, and nobody else. Past a second of debt the connection is closed unanswered
  // instead of waiting, so waiting refusals cannot pile up in moatd. False: do not answer.
  awaitable<bool> tarpit() {
    auto wait = ctx_.refusals.admit(agent_, Clock::now());
    if (wait.count() == 0) co_return true;
    if (wait > ctx_.refusals.limits().max_wait) {
      abort_io();
      co_return false;
    }
    asio::steady_timer t(client_.get_executor(), wait);
    error_code ec;
    co_await t.async_wait(nothrow(ec));
    co_return !closed_;
  }

  template <class Stream>
  awaitable<void> respond(Stream& s, http::status status, std::string body, bool keep_alive) {
    if (status == http::status::forbidden || status == http::status::bad_request || status == http::status::not_found ||
        status == http::status::too_many_requests || status == http::status::bad_gateway ||
        status == http::status::service_unavailable) {
      if (!co_await tarpit()) co_return;
    }
    http::response<http::string_body> res{status, 11};
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.set(http::field::server, "moat-egress");
    res.keep_alive(keep_alive);
    res.body() = std::move(body);
    res.prepare_payload();
    error_code ec;
    co_await http::async_write(s, res, nothrow(ec));
  }

  // A request refused before any credential was put into it: a record of its own (the connection's
  // record says what the connection did), a 403, and the connection is not used again.
  // (Arguments by reference or view: g++ 12 mishandles string temporaries in a co_await expression.)
  template <class Stream>
  awaitable<void> refuse_request(Stream& s, std::string_view mode, const std::string& host, uint16_t port,
                                 const std::string& reason) {
    std::string body = fmt::format("moat egress: refused: {}\n", reason);
    record_refusal(ctx_, agent_,
                   Json{{"mode", mode}, {"host", host}, {"port", port}, {"decision", "deny"}, {"rule", "request form"},
                        {"reason", reason}});
    co_await respond(s, http::status::forbidden, std::move(body), false);
  }

  // Appends the audit record of an upstream connection and gives back its slot. Called once.
  void finish(ConnRecord& rec) {
    if (rec.finished) return;
    rec.finished = true;
    if (rec.counted) ctx_.parts.usage.close(agent_);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - rec.started).count();
    Json data{{"mode", rec.mode},       {"host", rec.host},         {"port", rec.port},
              {"address", rec.address}, {"decision", rec.decision}, {"rule", rec.rule},
              {"bytes_up", rec.up},     {"bytes_down", rec.down},   {"duration_ms", ms},
              {"credentials", std::vector<std::string>(rec.credentials.begin(), rec.credentials.end())}};
    if (!rec.reason.empty()) data["reason"] = rec.reason;
    if (!rec.error.empty()) data["error"] = rec.error;
    // Refusals and failed attempts (a name that does not resolve, an address that does not answer)
    // cost the agent, not the store: coalesced and capped. Allowed connections are always recorded.
    if (rec.decision != "allow") {
      record_refusal(ctx_, agent_, std::move(data));
      return;
    }
    ctx_.audit.push(AuditEntry{"egress", agent_, agent_, std::move(data)});
  }

  void count(ConnRecord& rec, uint64_t up, uint64_t down) {
    rec.up += up;
    rec.down += down;
    ctx_.parts.usage.add_bytes(agent_, up + down);
    touch();
  }

  bool over_budget() { return ctx_.parts.usage.over_budget(agent_, limits_); }

  // Policy on the name, then resolution (by the gateway), policy on every address, the agent's limits,
  // and a connection to the first allowed address. The record says what decided.
  awaitable<std::expected<Opened, Refusal>> open_upstream(const std::string& host, uint16_t port, ConnRecord& rec) {
    Deciding deciding(deciding_);
    rec.host = host;
    rec.port = port;
    Policy policy = ctx_.parts.policies.policy_for(agent_);
    Decision d = check_host(policy, host, port);
    rec.rule = d.rule;
    if (!d.allowed) {
      rec.reason = d.reason;
      co_return std::unexpected(Refusal{http::status::forbidden, d.rule, d.reason});
    }
    std::vector<net::IpAddress> candidates;
    if (auto literal = net::parse_ip_literal(host)) {
      candidates.push_back(*literal);
    } else {
      tcp::resolver resolver(client_.get_executor());
      error_code ec;
      auto results = co_await resolver.async_resolve(host, std::to_string(port), nothrow(ec));
      if (ec) {
        rec.decision = "error";
        rec.error = fmt::format("cannot resolve {}: {}", host, ec.message());
        co_return std::unexpected(Refusal{http::status::bad_gateway, d.rule, rec.error});
      }
      for (const auto& r : results) candidates.push_back(r.endpoint().address());
    }
    std::vector<net::IpAddress> allowed;
    std::optional<Decision> refused;
    for (const auto& a : candidates) {
      Decision ad = check_address(policy, a, port, ctx_.own_addresses);
      if (ad.allowed) {
        allowed.push_back(a);
      } else if (!refused) {
        refused = ad;
      }
    }
    if (allowed.empty()) {
      rec.address = candidates.empty() ? "" : candidates.front().to_string();
      rec.rule = refused ? refused->rule : d.rule;
      rec.reason = refused ? refused->reason : fmt::format("{} has no address", host);
      co_return std::unexpected(Refusal{http::status::forbidden, rec.rule, rec.reason});
    }
    if (ctx_.audit.saturated()) {
      // Fail closed: an allowed connection is always recorded, so one that could not be is not made.
      rec.rule = "audit saturated";
      rec.reason = "the audit trail is behind; refusing new connections until it catches up";
      co_return std::unexpected(Refusal{http::status::service_unavailable, rec.rule, rec.reason});
    }
    rec.decision = "allow";
    if (auto why = ctx_.parts.usage.try_open(agent_, limits_)) {
      rec.decision = "deny";
      rec.rule = "limit";
      rec.reason = *why;
      co_return std::unexpected(Refusal{http::status::too_many_requests, "limit", *why});
    }
    rec.counted = true;
    std::string last_error;
    for (const auto& a : allowed) {
      tcp::socket sock(client_.get_executor());
      asio::steady_timer timer(client_.get_executor(), ctx_.parts.config.connect_timeout);
      bool timed_out = false;
      timer.async_wait([&sock, &timed_out](const error_code& ec) {
        if (!ec) {
          timed_out = true;
          error_code ignore;
          sock.close(ignore);
        }
      });
      error_code ec;
      active_.push_back(&sock);
      co_await sock.async_connect(tcp::endpoint(a, port), nothrow(ec));
      std::erase(active_, &sock);
      timer.cancel();
      if (!ec && !closed_) {
        rec.address = a.to_string();
        sock.set_option(tcp::no_delay(true), ec);
        co_return Opened{std::move(sock)};
      }
      last_error = timed_out ? "timed out" : ec.message();
      rec.address = a.to_string();
    }
    rec.decision = "error";
    rec.error = fmt::format("cannot connect to {} ({}): {}", net::authority_text(host, port), rec.address, last_error);
    co_return std::unexpected(Refusal{http::status::bad_gateway, d.rule, rec.error});
  }

  // Relays one message's header (already read into `p`) and body from `in` to `out`, a piece at a
  // time, so streamed bodies (SSE) pass through as they arrive. Returns bytes of body relayed.
  template <bool isRequest, class In, class Out>
  awaitable<std::expected<uint64_t, error_code>> relay_body(In& in, beast::flat_buffer& inbuf,
                                                            http::parser<isRequest, http::buffer_body>& p, Out& out) {
    http::serializer<isRequest, http::buffer_body> sr{p.get()};
    error_code ec;
    co_await http::async_write_header(out, sr, nothrow(ec));
    if (ec) co_return std::unexpected(ec);
    std::vector<char> chunk(kChunk);
    // Beast reads only into the buffer's spare room; without this, bodies after the header arrive in
    // small pieces (plain HTTP ran at ~20 MiB/s).
    inbuf.reserve(kChunk);
    uint64_t total = 0;
    while (!p.is_done() || !sr.is_done()) {
      if (!p.is_done()) {
        p.get().body().data = chunk.data();
        p.get().body().size = chunk.size();
        co_await http::async_read_some(in, inbuf, p, nothrow(ec));
        if (ec == http::error::need_buffer) ec = {};
        if (ec) co_return std::unexpected(ec);
        size_t produced = chunk.size() - p.get().body().size;
        total += produced;
        touch();
        // A read that parsed only framing (a chunk header) produced nothing to write: an empty
        // buffer here would be serialized as a zero-length chunk, i.e. the end of the body.
        if (produced == 0 && !p.is_done()) continue;
        p.get().body().size = produced;
        p.get().body().data = produced ? chunk.data() : nullptr;
        p.get().body().more = !p.is_done();
      } else {
        p.get().body().data = nullptr;
        p.get().body().size = 0;
        p.get().body().more = false;
      }
      co_await http::async_write(out, sr, nothrow(ec));
      if (ec == http::error::need_buffer) ec = {};
      if (ec) co_return std::unexpected(ec);
      if (over_budget()) co_return std::unexpected(asio::error::connection_aborted);
    }
    co_return total;
  }

  // Sends the request in `p` to `up` and the answer back to `down`. Returns whether both connections
  // may carry another request.
  template <class Down, class Up>
  awaitable<std::pair<bool, bool>> exchange(Down& down, beast::flat_buffer& downbuf,
                                            http::request_parser<http::buffer_body>& p, Up& up,
                                            beast::flat_buffer& upbuf, ConnRecord& rec, bool client_keep_alive) {
    bool head = p.get().method() == http::verb::head;
    rec.up += header_bytes(p.get());
    auto sent = co_await relay_body(down, downbuf, p, up);
    if (!sent) {
      if (rec.error.empty()) rec.error = fmt::format("request: {}", sent.error().message());
      co_return std::pair{false, false};
    }
    count(rec, *sent, 0);
    http::response_parser<http::buffer_body> rp;
    rp.header_limit(kHeaderLimit);
    rp.body_limit(kNoBodyLimit);
    if (head) rp.skip(true);
    error_code ec;
    co_await http::async_read_header(up, upbuf, rp, nothrow(ec));
    if (ec) {
      rec.error = fmt::format("upstream response: {}", ec.message());
      co_await respond(down, http::status::bad_gateway,
                       fmt::format("moat egress: {} answered with no valid HTTP response ({})\n",
                                   net::authority_text(rec.host, rec.port), ec.message()),
                       false);
      co_return std::pair{false, false};
    }
    bool up_keep_alive = rp.get().keep_alive();
    bool by_eof = rp.need_eof();
    strip_hop_by_hop(rp.get().base());
    bool down_keep_alive = client_keep_alive && !by_eof;
    rp.get().keep_alive(down_keep_alive);
    rec.down += header_bytes(rp.get());
    auto got = co_await relay_body(up, upbuf, rp, down);
    if (!got) {
      if (rec.error.empty()) rec.error = fmt::format("response: {}", got.error().message());
      co_return std::pair{false, false};
    }
    count(rec, 0, *got);
    co_return std::pair{down_keep_alive, up_keep_alive && !by_eof};
  }

  // --- plain HTTP: GET http://host/path HTTP/1.1 ---
  awaitable<bool> handle_http(http::request_parser<http::empty_body>& hp) {
    std::string_view raw(hp.get().target().data(), hp.get().target().size());
    auto target = net::parse_absolute_http_uri(raw);
    bool keep_alive = hp.get().keep_alive();
    if (!target) {
      co_await respond(client_, http::status::bad_request,
                       fmt::format("moat egress: cannot forward '{}': {}; send https through CONNECT and plain http as "
                                   "an absolute URI\n",
                                   raw.substr(0, 200), target.error().message),
                       false);
      co_return false;
    }
    // The proxy's own address is the base-URL route namespace, whichever way the client reached it.
    if ((target->host == "127.0.0.1" || target->host == "localhost") && target->port == kProxyPort) {
      hp.get().target(target->path);
      co_return co_await handle_route(hp);
    }
    if (plain_ && (plain_->rec.host != target->host || plain_->rec.port != target->port || !plain_->reusable)) {
      error_code ignore;
      plain_->socket.close(ignore);
      finish(plain_->rec);
      plain_.reset();
    }
    if (!plain_) {
      ConnRecord rec;
      rec.mode = "http";
      auto opened = co_await open_upstream(target->host, target->port, rec);
      if (!opened) {
        finish(rec);
        // A refusal ends the connection: a sandbox may not pipeline refused requests on one
        // keep-alive connection at no cost to itself.
        co_await respond(client_, opened.error().status, iso_reason(opened.error()), false);
        co_return false;
      }
      plain_.emplace(PlainUpstream{std::move(opened->socket), std::move(rec), true, {}});
    }
    auto& req = hp.get();
    req.target(target->path);
    strip_hop_by_hop(req.base());
    // The URI decided where this goes; a different Host header would let it go elsewhere (fronting).
    req.set(http::field::host, target->port == 80 ? target->host : net::authority_text(target->host, target->port));
    req.keep_alive(true);
    http::request_parser<http::buffer_body> p{std::move(hp)};
    auto [down_ok, up_ok] = co_await exchange(client_, buf_, p, plain_->socket, plain_->buf, plain_->rec, keep_alive);
    plain_->reusable = up_ok;
    co_return down_ok && !closed_;
  }

  // --- base-URL routes: POST /anthropic/v1/messages to http://127.0.0.1:3128 ---
  awaitable<bool> handle_route(http::request_parser<http::empty_body>& hp) {
    std::string path(hp.get().target().data(), hp.get().target().size());
    bool keep_alive = hp.get().keep_alive();
    auto slash = path.find_first_of("/?", 1);
    std::string name = path.substr(1, slash == std::string::npos ? std::string::npos : slash - 1);
    std::string rest = slash == std::string::npos ? "/" : path.substr(slash);
    if (!rest.starts_with('/')) rest = "/" + rest;
    auto it = ctx_.parts.config.routes.find(name);
    if (it == ctx_.parts.config.routes.end()) {
      std::string known;
      for (const auto& [n, r] : ctx_.parts.config.routes) known += fmt::format(" /{}", n);
      // Built before the co_await: g++ 12 destroys temporaries inside a co_await expression twice
      // (a ternary's std::string here crashed moatd with a double free).
      std::string body = fmt::format(
          "moat egress: no route '/{}' on the gateway; routes:{} (see [egress.routes] in moat.toml). "
          "To reach other hosts, use the proxy (HTTP_PROXY/HTTPS_PROXY).\n",
          name, known.empty() ? std::string(" none") : known);
      co_await respond(client_, http::status::not_found, std::move(body), false);
      co_return false;
    }
    auto upstream = net::parse_https_url(it->second.upstream);
    if (!upstream) {
      co_await respond(client_, http::status::bad_gateway,
                       fmt::format("moat egress: route '{}' has a bad upstream: {}\n", name, upstream.error().message), false);
      co_return false;
    }
    if (auto why = credential_request_refusal(hp.get(), {upstream->host, upstream->port, false})) {
      co_await refuse_request(client_, "route", upstream->host, upstream->port, *why);
      co_return false;
    }
    std::string prefix = upstream->path == "/" ? "" : upstream->path;
    if (prefix.ends_with('/')) prefix.pop_back();
    if (route_ && (route_->name != name || !route_->reusable)) {
      error_code ignore;
      route_->stream.lowest_layer().close(ignore);
      finish(route_->rec);
      route_.reset();
    }
    if (!route_) {
      Deciding deciding(deciding_);  // through the TLS handshake, until route_ holds the record
      ConnRecord rec;
      rec.mode = "route";
      auto opened = co_await open_upstream(upstream->host, upstream->port, rec);
      if (!opened) {
        finish(rec);
        // A refusal ends the connection: a sandbox may not pipeline refused requests on one
        // keep-alive connection at no cost to itself.
        co_await respond(client_, opened.error().status, iso_reason(opened.error()), false);
        co_return false;
      }
      auto r = std::make_unique<RouteUpstream>(RouteUpstream{name, {std::move(opened->socket), ctx_.tls.upstream()}, {}, std::move(rec), true});
      auto failure = co_await upstream_handshake(r->stream, upstream->host, r->rec);
      if (!failure.empty()) {
        finish(r->rec);
        co_await respond(client_, http::status::bad_gateway, fmt::format("moat egress: {}\n", failure), false);
        co_return false;
      }
      route_ = std::move(r);
    }
    auto creds = ctx_.parts.vault.bound_for(agent_, upstream->host, upstream->port);
    auto& req = hp.get();
    req.target(prefix + rest);
    strip_hop_by_hop(req.base());
    req.set(http::field::host, upstream->port == 443 ? upstream->host : net::authority_text(upstream->host, upstream->port));
    req.keep_alive(true);
    if (!creds) {
      // A bound credential that cannot be opened (wrong key, altered row): refuse rather than send the
      // request without it, which would fail upstream for a reason nobody could see.
      route_->rec.error = creds.error().message;
      co_await respond(client_, http::status::bad_gateway, fmt::format("moat egress: {}\n", creds.error().message), false);
      co_return false;
    }
    std::vector<std::string> used;
    for (const auto& c : *creds) {
      auto value = c.header_value();
      req.set(c.header.name, beast::string_view(value.view().data(), value.view().size()));
      used.push_back(c.name);
    }
    route_->rec.credentials.insert(used.begin(), used.end());
    for (const auto& n : used) ctx_.parts.vault.mark_used(n);
    http::request_parser<http::buffer_body> p{std::move(hp)};
    auto [down_ok, up_ok] = co_await exchange(client_, buf_, p, route_->stream, route_->buf, route_->rec, keep_alive);
    route_->reusable = up_ok;
    co_return down_ok && !closed_;
  }

  // TLS to an upstream, verified against the host's trust store; returns why it failed, or "".
  awaitable<std::string> upstream_handshake(ssl::stream<tcp::socket>& s, const std::string& host, ConnRecord& rec) {
    if (auto st = net::expect_peer_identity(s.native_handle(), host); !st) {
      rec.decision = "error";
      rec.error = st.error().message;
      co_return rec.error;
    }
    error_code ec;
    co_await s.async_handshake(ssl::stream_base::client, nothrow(ec));
    if (ec) {
      rec.decision = "error";
      rec.error = fmt::format("TLS with {} failed: {}", net::authority_text(host, rec.port), net::tls_failure_text(s.native_handle(), ec.message()));
      co_return rec.error;
    }
    co_return std::string();
  }

  // --- CONNECT host:port ---
  awaitable<void> handle_connect(std::string authority) {
    ConnRecord rec;
    rec.mode = "connect";
    auto target = net::parse_authority(authority);
    if (!target) {
      co_await respond(client_, http::status::bad_request,
                       fmt::format("moat egress: bad CONNECT target '{}': {}\n", authority.substr(0, 200), target.error().message),
                       false);
      co_return;
    }
    auto deciding = std::make_unique<Deciding>(deciding_);  // until the connection knows what it is
    auto opened = co_await open_upstream(target->host, target->port, rec);
    if (!opened) {
      deciding.reset();
      finish(rec);
      co_await respond(client_, opened.error().status, iso_reason(opened.error()), false);
      co_return;
    }
    tcp::socket up = std::move(opened->socket);
    connect_rec_ = &rec;
    struct Forget {
      ConnRecord*& r;
      ~Forget() { r = nullptr; }
    } forget{connect_rec_};
    auto creds = ctx_.parts.vault.bound_for(agent_, target->host, target->port);
    if (!creds) {
      rec.decision = "error";
      rec.error = creds.error().message;
      finish(rec);
      co_await respond(client_, http::status::bad_gateway, fmt::format("moat egress: {}\n", creds.error().message), false);
      co_return;
    }
    static constexpr std::string_view kEstablished = "HTTP/1.1 200 Connection established\r\n\r\n";
    error_code ec;
    co_await asio::async_write(client_, asio::buffer(kEstablished), nothrow(ec));
    if (ec) {
      finish(rec);
      co_return;
    }
    if (!creds->empty()) rec.mode = "intercept";
    deciding.reset();
    if (!creds->empty()) {
      co_await intercept(std::move(up), *target, std::move(*creds), rec);
    } else {
      co_await tunnel(std::move(up), *target, rec);
    }
    if (rec.decision == "deny") (void)co_await tarpit();
    finish(rec);
  }

  // Reads until the client's first TLS record is whole (or clearly not TLS), keeping the bytes in buf_.
  awaitable<HelloInfo> peek_hello() {
    asio::steady_timer timer(client_.get_executor(), kHelloTimeout);
    bool timed_out = false;
    timer.async_wait([this, &timed_out](const error_code& ec) {
      if (!ec) {
        timed_out = true;
        error_code ignore;
        client_.cancel(ignore);
      }
    });
    HelloInfo info{HelloStatus::NeedMore, {}};
    for (;;) {
      auto data = buf_.data();
      info = parse_client_hello({static_cast<const uint8_t*>(data.data()), data.size()});
      if (info.status != HelloStatus::NeedMore) break;
      error_code ec;
      size_t n = co_await client_.async_read_some(buf_.prepare(16 * 1024), nothrow(ec));
      if (ec) {
        info.status = timed_out ? HelloStatus::NeedMore : HelloStatus::Malformed;
        break;
      }
      buf_.commit(n);
    }
    timer.cancel();
    co_return info;
  }

  // A CONNECT without credentials: the bytes pass untouched once the ClientHello checks out.
  awaitable<void> tunnel(tcp::socket up, const net::HostPort& target, ConnRecord& rec) {
    HelloInfo hello = co_await peek_hello();
    // A tunnel must carry TLS unless the rule that allowed it named a port other than 443 explicitly
    // (e.g. `allow git.example.com:22`): then the rule itself says what the port is for.
    bool tls_required = !rule_names_plain_port(rec.rule, target.port);
    if (hello.status == HelloStatus::NeedMore) {
      rec.decision = "deny";
      rec.reason = "the client sent no TLS ClientHello in time";
      co_return;
    }
    if (hello.status != HelloStatus::Tls) {
      if (tls_required) {
        rec.decision = "deny";
        rec.rule = "tls required";
        rec.reason = fmt::format("the tunnel to {} does not carry TLS; only TLS may pass unless a rule names port {}",
                                 net::authority_text(target.host, target.port), target.port);
        co_return;
      }
    } else if (!hello.sni.empty() && hello.sni != target.host) {
      rec.decision = "deny";
      rec.rule = "sni mismatch";
      rec.reason = fmt::format("TLS server name '{}' does not match the CONNECT host '{}' (domain fronting)", hello.sni,
                               target.host);
      co_return;
    }
    idle_limit_ = kIdleTunnel;
    error_code ec;
    size_t pending = buf_.size();
    co_await asio::async_write(up, buf_.data(), nothrow(ec));
    if (ec) {
      rec.error = ec.message();
      co_return;
    }
    buf_.consume(pending);
    count(rec, pending, 0);
    active_.push_back(&up);
    // A unix socket's send buffer (212 KiB by default) is all that may wait for the sandbox's relay to
    // read; a bigger one lets the downward pump hand over more per wake-up (see pump()). The kernel
    // doubles the value.
    client_.set_option(asio::socket_base::send_buffer_size(1 << 20), ec);
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer done(ex, Clock::time_point::max());
    bool down_done = false;
    asio::co_spawn(
        ex,
        [&]() -> awaitable<void> {
          co_await pump(up, client_, rec, false);
          down_done = true;
          done.cancel();
        },
        asio::detached);
    co_await pump(client_, up, rec, true);
    while (!down_done) {
      error_code ignore;
      co_await done.async_wait(nothrow(ignore));
    }
    std::erase(active_, &up);
  }

  static bool rule_names_plain_port(const std::string& rule, uint16_t port) {
    if (port == 443) return false;
    auto suffix = fmt::format(":{}", port);
    return rule.starts_with("allow ") && rule.ends_with(suffix);
  }

  // Moves bytes one way until EOF, which is passed on as a half-close, or an error.
  // Down (upstream TCP -> the sandbox's unix socket) the bytes go through a pipe with splice(2) and
  // never enter user space; up they are copied through a buffer. Measured with make bench on 2 busy
  // cores: splicing took downloads from ~0.5x of a direct connection to ~0.9x (with the send buffer
  // tunnel() sets), while splicing uploads into TCP made them slower than copying (~0.6x against
  // ~0.9x with this loop). Either way the loop makes the system calls itself and waits for readiness only after
  // EAGAIN: an asio 1.74 read after a short read waits for a new epoll edge, so it can miss an EOF
  // that came with the last bytes and hang the tunnel until its idle timeout. Nothing is allocated
  // for the spliced direction (zeroing two 64 KiB vectors per tunnel was a third of the gateway's CPU
  // under a stream of short CONNECTs).
  // The connection's record gets every byte (audit); the agent's meter gets them a batch at a time
  // (kMeterBatch), with the daily budget checked at each batch, so one direction of one connection can
  // overrun the budget by less than a batch. Activity (idle timeout) is noted on every transfer.
  template <class From, class To>
  awaitable<void> pump(From& from, To& to, ConnRecord& rec, bool upward) {
    // Bytes a pipe holds (only while the destination is full) and moves per splice at most; 1 MiB
    // measured no better.
    constexpr size_t kPipeSize = 256 * 1024;
    constexpr uint64_t kMeterBatch = 1 << 20;
    uint64_t unmetered = 0;
    bool budget_spent = false;
    auto meter = [&](uint64_t n) {
      touch();
      unmetered += n;
      if (unmetered < kMeterBatch) return;
      count(rec, upward ? unmetered : 0, upward ? 0 : unmetered);
      unmetered = 0;
      budget_spent = over_budget();
    };

    struct Pipe {
      int fd[2] = {-1, -1};
      ~Pipe() {
        for (int f : fd)
          if (f >= 0) ::close(f);
      }
    } pipe;
    std::unique_ptr<char[]> buf;
    bool spliced = !upward && ::pipe2(pipe.fd, O_CLOEXEC | O_NONBLOCK) == 0;
    if (spliced) {
      (void)::fcntl(pipe.fd[1], F_SETPIPE_SZ, static_cast<int>(kPipeSize));  // else the default 64 KiB
      // splice has no MSG_NOSIGNAL: a peer gone away raises SIGPIPE. moatd ignores it; block it on
      // this (the gateway's) thread as well, so that no process hosting the gateway can die of it.
      static thread_local bool sigpipe_blocked = false;
      if (!sigpipe_blocked) {
        sigset_t sigpipe;
        sigemptyset(&sigpipe);
        sigaddset(&sigpipe, SIGPIPE);
        sigpipe_blocked = pthread_sigmask(SIG_BLOCK, &sigpipe, nullptr) == 0;
      }
    } else {
      buf = std::make_unique_for_overwrite<char[]>(kChunk);
    }
    // Asio made both sockets non-blocking for their earlier async operations; say so anyway.
    error_code ec;
    if (!from.native_non_blocking()) from.native_non_blocking(true, ec);
    if (!to.native_non_blocking()) to.native_non_blocking(true, ec);

    bool moved = false;
    while (!budget_spent) {
      // In. A pipe is only filled when empty, so EAGAIN can only mean "the socket has nothing".
      ssize_t n = spliced ? ::splice(from.native_handle(), nullptr, pipe.fd[1], nullptr, kPipeSize,
                                     SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
                          : ::recv(from.native_handle(), buf.get(), kChunk, 0);
      if (n == 0) break;  // EOF
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          co_await from.async_wait(asio::socket_base::wait_read, nothrow(ec));
          if (ec) break;
          continue;
        }
        if (spliced && !moved && (errno == EINVAL || errno == ENOSYS)) {
          spliced = false;  // a socket this kernel cannot splice: copy instead
          buf = std::make_unique_for_overwrite<char[]>(kChunk);
          continue;
        }
        break;
      }
      moved = true;
      // Out: all of it; EAGAIN can only mean "the destination is full".
      size_t sent = 0, got = static_cast<size_t>(n);
      while (sent < got) {
        ssize_t m = spliced ? ::splice(pipe.fd[0], nullptr, to.native_handle(), nullptr, got - sent,
                                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
                            : ::send(to.native_handle(), buf.get() + sent, got - sent, MSG_NOSIGNAL);
        if (m > 0) {
          sent += static_cast<size_t>(m);
        } else if (m < 0 && errno == EINTR) {
          continue;
        } else if (m < 0 && errno == EAGAIN) {
          co_await to.async_wait(asio::socket_base::wait_write, nothrow(ec));
          if (ec) break;
        } else {
          break;
        }
      }
      meter(sent);
      if (sent < got) break;
    }
    count(rec, upward ? unmetered : 0, upward ? 0 : unmetered);
    if (budget_spent) {
      rec.error = "daily byte budget exhausted (max_bytes_per_day)";
      abort_io();
    }
    error_code ignore;
    to.shutdown(asio::socket_base::shutdown_send, ignore);
  }

  // --- TLS interception, only for a destination with a credential binding ---
  awaitable<void> intercept(tcp::socket up_sock, const net::HostPort& target, Credentials creds, ConnRecord& rec) {
    auto server_ctx = ctx_.tls.server_for(target.host);
    if (!server_ctx) {
      rec.decision = "error";
      rec.error = server_ctx.error().message;
      co_return;
    }
    ssl::stream<UnixSocket&> down(client_, **server_ctx);
    error_code ec;
    if (buf_.size() > 0) {
      size_t used = co_await down.async_handshake(ssl::stream_base::server, buf_.data(), nothrow(ec));
      buf_.consume(used);
    } else {
      co_await down.async_handshake(ssl::stream_base::server, nothrow(ec));
    }
    if (ec) {
      rec.decision = "error";
      rec.error = fmt::format("TLS with the sandbox's client failed: {} (does it trust the moat CA?)", ec.message());
      co_return;
    }
    const char* sni = SSL_get_servername(down.native_handle(), TLSEXT_NAMETYPE_host_name);
    if (sni && *sni && !beast::iequals(beast::string_view(sni), beast::string_view(target.host))) {
      rec.decision = "deny";
      rec.rule = "sni mismatch";
      rec.reason = fmt::format("TLS server name '{}' does not match the CONNECT host '{}' (domain fronting)", sni, target.host);
      co_await respond(down, http::status::forbidden, fmt::format("moat egress: {}\n", rec.reason), false);
      co_return;
    }
    ssl::stream<tcp::socket> up(std::move(up_sock), ctx_.tls.upstream());
    auto failure = co_await upstream_handshake(up, target.host, rec);
    if (!failure.empty()) {
      co_await respond(down, http::status::bad_gateway, fmt::format("moat egress: {}\n", failure), false);
      co_return;
    }
    idle_limit_ = kIdleHttp;
    beast::flat_buffer downbuf, upbuf;
    for (;;) {
      http::request_parser<http::empty_body> hp;
      hp.header_limit(kHeaderLimit);
      hp.body_limit(kNoBodyLimit);
      co_await http::async_read_header(down, downbuf, hp, nothrow(ec));
      if (ec) break;
      touch();
      auto& req = hp.get();
      bool keep_alive = req.keep_alive();
      // Inside the tunnel the request must still be for the CONNECT host, and say so one way only, or
      // the credential could be aimed elsewhere (request_form.h).
      if (auto why = credential_request_refusal(req, {target.host, target.port, true})) {
        co_await refuse_request(down, rec.mode, rec.host, rec.port, *why);
        break;
      }
      // Rebuilt in order only when a placeholder was swapped; nothing else of the request changes.
      std::vector<std::string> used;
      std::vector<std::pair<std::string, std::string>> fields;
      for (const auto& field : req) {
        std::string value(field.value());
        swap_placeholders(value, creds, used);
        fields.emplace_back(std::string(field.name_string()), std::move(value));
      }
      if (!used.empty()) {
        for (const auto& [name, value] : fields) req.erase(name);
        for (const auto& [name, value] : fields) req.insert(name, value);
      }
      for (auto& [name, value] : fields) wipe_string(value);
      rec.credentials.insert(used.begin(), used.end());
      for (const auto& n : used) ctx_.parts.vault.mark_used(n);
      strip_hop_by_hop(req.base());
      req.keep_alive(true);
      http::request_parser<http::buffer_body> p{std::move(hp)};
      auto [down_ok, up_ok] = co_await exchange(down, downbuf, p, up, upbuf, rec, keep_alive);
      if (!down_ok || !up_ok || closed_) break;
    }
    co_await down.async_shutdown(nothrow(ec));
  }

  struct PlainUpstream {
    tcp::socket socket;
    ConnRecord rec;
    bool reusable = true;
    beast::flat_buffer buf;
  };
  struct RouteUpstream {
    std::string name;
    ssl::stream<tcp::socket> stream;
    beast::flat_buffer buf;
    ConnRecord rec;
    bool reusable = true;
  };

  GatewayContext& ctx_;
  UnixSocket client_;
  std::string agent_;
  AgentLimits limits_;
  beast::flat_buffer buf_;
  std::optional<PlainUpstream> plain_;
  std::unique_ptr<RouteUpstream> route_;
  std::vector<tcp::socket*> active_;
  ConnRecord* connect_rec_ = nullptr;  // the CONNECT's upstream while its tunnel or interception runs
  uint64_t policy_seen_ = 0, vault_seen_ = 0;  // the revisions this connection was last checked against
  int deciding_ = 0;                           // > 0 while a decision is being made (see revalidate)
  bool counted_ = true;                        // holds one of the agent's open-connection slots
  asio::steady_timer* watch_timer_ = nullptr;  // watch()'s timer while it runs
  Clock::time_point last_activity_ = Clock::now();
  Clock::duration idle_limit_ = kIdleHttp;
  bool closed_ = false;
};

}  // namespace

awaitable<void> serve_connection(GatewayContext& ctx, UnixSocket client, std::string agent) {
  auto session = std::make_shared<Session>(ctx, std::move(client), std::move(agent));
  co_await session->run();
}

}  // namespace moat::egress

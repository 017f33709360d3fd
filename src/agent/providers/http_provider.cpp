#include "agent/providers/http_provider.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <random>
#include <thread>

#include "base/json.h"
#include "base/log.h"

namespace moat::agent::detail {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

std::optional<double> parse_double(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty() || !std::isfinite(v) || v < 0) return std::nullopt;
  return v;
}

// "Sun, 06 Nov 1994 08:49:37 GMT" (IMF-fixdate, the only form servers may send).
std::optional<std::chrono::system_clock::time_point> parse_http_date(const std::string& s) {
  std::tm tm{};
  const char* end = ::strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (!end || *end != '\0') return std::nullopt;
  return std::chrono::system_clock::from_time_t(::timegm(&tm));
}

// "2026-11-27T13:20:31Z", "2026-11-27T13:20:31.5+01:00".
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(const std::string& s) {
  std::tm tm{};
  const char* p = ::strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!p) return std::nullopt;
  double frac = 0;
  if (*p == '.') {
    const char* start = p;
    ++p;
    while (*p >= '0' && *p <= '9') ++p;
    frac = std::strtod(std::string(start, p).c_str(), nullptr);
  }
  long offset = 0;
  if (*p == 'Z' || *p == 'z') {
    ++p;
  } else if (*p == '+' || *p == '-') {
    int hh = 0, mm = 0;
    if (std::sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2) return std::nullopt;
    offset = (hh * 3600L + mm * 60L) * (*p == '+' ? 1 : -1);
    p += 6;
  } else {
    return std::nullopt;
  }
  if (*p != '\0') return std::nullopt;
  auto t = std::chrono::system_clock::from_time_t(::timegm(&tm) - offset);
  return t + std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(frac));
}

// Sleeps, polling cancelled() every 50 ms; false = cancelled.
bool wait(milliseconds d, const StreamCallbacks& cb) {
  auto until = std::chrono::steady_clock::now() + d;
  for (;;) {
    if (cb.cancelled && cb.cancelled()) return false;
    auto now = std::chrono::steady_clock::now();
    if (now >= until) return true;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(until - now, 50ms));
  }
}

std::string truncate(std::string s, size_t n) {
  if (s.size() > n) {
    s.resize(n);
    s += "...";
  }
  return s;
}

}  // namespace

std::string provider_error_message(std::string_view body) {
  Json doc = Json::parse(body, nullptr, false);
  if (!doc.is_discarded() && doc.is_object()) {
    if (auto e = doc.find("error"); e != doc.end()) {
      if (e->is_string()) return e->get<std::string>();
      if (e->is_object()) {
        std::string msg = e->contains("message") && (*e)["message"].is_string() ? (*e)["message"].get<std::string>() : "";
        std::string type = e->contains("type") && (*e)["type"].is_string() ? (*e)["type"].get<std::string>() : "";
        if (!msg.empty() && !type.empty()) return fmt::format("{} ({})", msg, type);
        if (!msg.empty()) return msg;
        if (!type.empty()) return type;
      }
    }
    if (auto m = doc.find("message"); m != doc.end() && m->is_string()) return m->get<std::string>();
  }
  std::string text(body);
  std::replace_if(text.begin(), text.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return text.empty() ? "(empty body)" : truncate(std::move(text), 300);
}

std::optional<milliseconds> parse_go_duration(std::string_view s) {
  if (s.empty()) return std::nullopt;
  double total_ms = 0;
  while (!s.empty()) {
    size_t i = 0;
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
    auto num = parse_double(s.substr(0, i));
    if (!num) return std::nullopt;
    s.remove_prefix(i);
    double unit;
    if (s.starts_with("ms")) {
      unit = 1, s.remove_prefix(2);
    } else if (s.starts_with("h")) {
      unit = 3600e3, s.remove_prefix(1);
    } else if (s.starts_with("m")) {
      unit = 60e3, s.remove_prefix(1);
    } else if (s.starts_with("s")) {
      unit = 1e3, s.remove_prefix(1);
    } else {
      return std::nullopt;
    }
    total_ms += *num * unit;
  }
  return milliseconds(static_cast<int64_t>(std::ceil(total_ms)));
}

std::optional<milliseconds> retry_hint(const net::HttpResponseHead& head, std::chrono::system_clock::time_point now) {
  auto until = [&](std::chrono::system_clock::time_point t) {
    return std::max(milliseconds(0), std::chrono::ceil<milliseconds>(t - now));
  };
  if (auto ms = head.header("retry-after-ms"))
    if (auto v = parse_double(*ms)) return milliseconds(static_cast<int64_t>(std::ceil(*v)));
  if (auto ra = head.header("retry-after")) {
    if (auto v = parse_double(*ra)) return milliseconds(static_cast<int64_t>(std::ceil(*v * 1000)));
    if (auto t = parse_http_date(*ra)) return until(*t);
  }
  // No explicit hint: wait for the reset of whichever limit is exhausted.
  std::optional<milliseconds> best;
  auto consider = [&](std::optional<milliseconds> d) {
    if (d && (!best || *d > *best)) best = d;
  };
  for (const char* limit : {"requests", "tokens", "input-tokens", "output-tokens"}) {
    auto remaining = head.header(fmt::format("anthropic-ratelimit-{}-remaining", limit));
    if (remaining && *remaining == "0")
      if (auto reset = head.header(fmt::format("anthropic-ratelimit-{}-reset", limit)))
        if (auto t = parse_rfc3339(*reset)) consider(until(*t));
    remaining = head.header(fmt::format("x-ratelimit-remaining-{}", limit));
    if (remaining && *remaining == "0")
      if (auto reset = head.header(fmt::format("x-ratelimit-reset-{}", limit))) consider(parse_go_duration(*reset));
  }
  return best;
}

std::string redact(std::string text, const std::vector<Credential>& secrets) {
  auto scrub = [&](std::string_view secret) {
    if (secret.size() < 4) return;  // too short to be a key, and replacing it would mangle text
    for (size_t pos; (pos = text.find(secret)) != std::string::npos;) text.replace(pos, secret.size(), "[redacted]");
  };
  for (const auto& c : secrets) {
    scrub(c.value);
    if (net::istarts_with(c.value, "bearer ")) scrub(std::string_view(c.value).substr(7));
  }
  return text;
}

void wipe(std::vector<Credential>& creds) {
  for (auto& c : creds) {
    if (!c.value.empty()) OPENSSL_cleanse(c.value.data(), c.value.size());
    c.value.clear();
  }
  creds.clear();
}

Result<ModelResponse> HttpProvider::complete(const ModelRequest& req, const StreamCallbacks& cb) {
  const WireCall call = build(req);
  const std::string who = fmt::format("{} (model {})", name_, req.model.empty() ? "unset" : req.model);
  auto cancelled = [&] { return fail(ErrorKind::Unavailable, "{}: the call was cancelled", who); };

  net::CallOptions options{cfg_.timeout, cb.cancelled};
  for (int attempt = 0;; ++attempt) {
    if (cb.cancelled && cb.cancelled()) return cancelled();

    auto creds = credentials_(url_.host, url_.port);
    if (!creds) return wrap(creds.error(), fmt::format("{}: cannot get the credentials", who));

    net::HttpRequest http{"POST", call.target, call.headers, call.body};
    // Reserved up front: a reallocation would free copies of short values without wiping them.
    http.headers.reserve(call.headers.size() + creds->size());
    for (const auto& c : *creds) http.headers.emplace_back(c.header, c.value);
    // However this attempt ends, the key's copies are wiped when it does (after the messages that
    // might quote it have been redacted).
    struct Wipe {
      std::vector<Credential>& creds;
      net::HttpRequest& http;
      ~Wipe() {
        wipe(creds);
        for (auto& [k, v] : http.headers) OPENSSL_cleanse(v.data(), v.size());
      }
    } wipe_at_end{*creds, http};

    std::unique_ptr<ResponseParser> parse;
    net::HttpResponseHead head;
    std::string error_body;
    auto result = client_->send(
        url_, http, options,
        [&](const net::HttpResponseHead& h) {
          head = h;
          if (h.status / 100 == 2) {
            auto type = h.header("content-type").value_or("");
            parse = parser(type.find("text/event-stream") != std::string::npos, cb);
          }
        },
        [&](std::string_view bytes) {
          if (parse) {
            parse->feed(bytes);
            return !parse->failed();
          }
          if (error_body.size() < 65536) error_body.append(bytes.substr(0, 65536 - error_body.size()));
          return true;
        });

    // Every message that could quote the key is built now, while we still know the key to scrub.
    std::optional<Error> outcome;  // the error of this attempt, if any
    bool retry = false;
    std::optional<milliseconds> hint;
    bool rate_limited = false;
    if (!result && result.error().kind == net::HttpFailure::Kind::Cancelled) return cancelled();
    if (parse && (result || result.error().kind == net::HttpFailure::Kind::Aborted || parse->emitted())) {
      // A 2xx answer: the parser decides, including about a stream cut short.
      auto r = parse->finish(result.has_value());
      if (r) return r;
      std::string why = r.error().message;
      if (!result && result.error().kind != net::HttpFailure::Kind::Aborted) why += ": " + result.error().error.message;
      outcome = Error{r.error().kind, fmt::format("{}: {}", who, redact(why, *creds))};
      retry = !parse->emitted() && parse->retryable() && r.error().kind != ErrorKind::InvalidInput;
    } else if (!result) {
      auto kind = result.error().kind;
      outcome = Error{result.error().error.kind, fmt::format("{}: {}", who, redact(result.error().error.message, *creds))};
      retry = kind == net::HttpFailure::Kind::Connect || kind == net::HttpFailure::Kind::Io || kind == net::HttpFailure::Kind::Protocol;
    } else {
      int status = head.status;
      std::string message = redact(provider_error_message(error_body), *creds);
      auto should_retry = head.header("x-should-retry");
      if (status == 429) {
        rate_limited = true;
        retry = true;
        hint = retry_hint(head, std::chrono::system_clock::now());
        outcome = Error{ErrorKind::ResourceLimit, fmt::format("{} is rate-limiting us (HTTP 429): {}", who, message)};
      } else if (status >= 500 || status == 408 || status == 409) {
        retry = true;
        if (status == 503) hint = retry_hint(head, std::chrono::system_clock::now());
        outcome = Error{ErrorKind::Unavailable, fmt::format("{} failed (HTTP {}): {}", who, status, message)};
      } else {
        // 400 (bad request), 401/403 (key), 404 (model or URL), 413, 422: retrying cannot help.
        outcome = Error{ErrorKind::InvalidInput, fmt::format("{} refused the request (HTTP {}): {}", who, status, message)};
      }
      if (should_retry == "false") retry = false;
      if (should_retry == "true") retry = true;
    }

    if (!retry) return std::unexpected(*outcome);
    const net::Backoff policy = backoff_policy(cfg_);
    if (!policy.allows_retry(attempt + 1))
      return fail(outcome->kind, "{} (gave up after {} attempts)", outcome->message, attempt + 1);
    milliseconds delay = hint ? *hint : policy.delay(attempt + 1);
    if (hint && *hint > cfg_.max_backoff)
      // Waiting less than asked would only be refused again; the caller decides what to do.
      return fail(rate_limited ? ErrorKind::ResourceLimit : outcome->kind, "{} (it asks to wait {} ms, longer than max_backoff {} ms)",
                  outcome->message, hint->count(), cfg_.max_backoff.count());
    log::warn("{}; retrying in {} ms ({}/{})", outcome->message, delay.count(), attempt + 1, cfg_.max_retries);
    if (!wait(delay, cb)) return cancelled();
  }
}

}  // namespace moat::agent::detail

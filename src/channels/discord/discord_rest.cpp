#include "channels/discord/discord_rest.h"

#include <algorithm>
#include <cctype>
#include <thread>
#include <utility>

#include "base/text.h"
#include "net/headers.h"

namespace moat::channels::discord {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::chrono::milliseconds seconds_text(std::string_view s) {
  auto v = parse_number<double>(trim_space(s));
  if (!v || *v < 0) return 0ms;
  return std::chrono::milliseconds(static_cast<int64_t>(*v * 1000 + 0.999));
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

}  // namespace

std::string route_key(std::string_view method, std::string_view path) {
  std::string out(method);
  out += ' ';
  if (auto q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  std::string_view prev;
  size_t at = 0;
  while (at < path.size()) {
    if (path[at] == '/') {
      out += '/';
      ++at;
      continue;
    }
    size_t end = path.find('/', at);
    if (end == std::string_view::npos) end = path.size();
    std::string_view seg = path.substr(at, end - at);
    bool major = prev == "channels" || prev == "guilds" || prev == "webhooks";
    out += all_digits(seg) && !major ? std::string_view(":id") : seg;
    prev = seg;
    at = end;
  }
  return out;
}

std::string major_parameter(std::string_view path) {
  for (std::string_view top : {"/channels/", "/guilds/", "/webhooks/"}) {
    if (!path.starts_with(top)) continue;
    std::string_view rest = path.substr(top.size());
    return std::string(rest.substr(0, rest.find_first_of("/?")));
  }
  return {};
}

DiscordRest::DiscordRest(RestOptions opts, TokenFn token) : opts_(std::move(opts)), token_(std::move(token)) {
  if (auto u = net::parse_url(opts_.api_base); u) base_ = *u;
  else base_error_ = fmt::format("api_base \"{}\" is not a usable URL: {}", opts_.api_base, u.error().message);
  client_ = std::make_unique<net::HttpClient>(opts_.client);
}

const DiscordRest::Bucket* DiscordRest::bucket_locked(const std::string& route, std::string_view major) const {
  auto r = route_bucket_.find(route);
  if (r == route_bucket_.end()) return nullptr;
  auto b = buckets_.find(fmt::format("{}:{}", r->second, major));
  return b == buckets_.end() ? nullptr : &b->second;
}

DiscordRest::Bucket* DiscordRest::bucket_locked(const std::string& route, std::string_view major) {
  return const_cast<Bucket*>(std::as_const(*this).bucket_locked(route, major));
}

std::chrono::milliseconds DiscordRest::wait_locked(const std::string& route, std::string_view major,
                                                   Clock::time_point now) const {
  Clock::time_point until = global_until_;
  if (auto* b = bucket_locked(route, major); b && b->remaining <= 0 && b->reset > now) until = std::max(until, b->reset);
  if (until <= now) return 0ms;
  return std::chrono::duration_cast<std::chrono::milliseconds>(until - now) + 1ms;
}

std::chrono::milliseconds DiscordRest::bucket_wait(std::string_view method, std::string_view path) const {
  std::lock_guard g(mu_);
  return wait_locked(route_key(method, path), major_parameter(path), Clock::now());
}

void DiscordRest::learn(const std::string& route, std::string_view major, const net::HttpResponseHead& head) {
  auto bucket = head.header("X-RateLimit-Bucket");
  auto remaining = head.header("X-RateLimit-Remaining");
  auto reset_after = head.header("X-RateLimit-Reset-After");
  if (!bucket || !remaining || !reset_after) return;
  int left = parse_number<int>(trim_space(*remaining)).value_or(1);
  std::lock_guard g(mu_);
  route_bucket_[route] = *bucket;
  auto& b = buckets_[fmt::format("{}:{}", *bucket, major)];
  b.remaining = left;
  b.reset = Clock::now() + seconds_text(*reset_after);
}

ApiResult DiscordRest::call(std::string_view method, std::string_view path, const Json& body,
                            const std::function<bool()>& cancelled) {
  if (!base_error_.empty()) return std::unexpected(ApiError{.description = base_error_});
  std::string route = route_key(method, path), major = major_parameter(path);
  // Wait for an empty bucket (or a global limit) to reset, or say how long the caller should; then
  // take a slot.
  for (;;) {
    std::chrono::milliseconds wait;
    {
      std::lock_guard g(mu_);
      auto now = Clock::now();
      wait = wait_locked(route, major, now);
      if (wait <= 0ms) {
        if (auto* b = bucket_locked(route, major)) {
          if (b->reset <= now) b->remaining = std::max(b->remaining, 1);  // a new window: the answer will say
          --b->remaining;
        }
        break;
      }
    }
    if (wait > opts_.max_wait)
      return std::unexpected(ApiError{.code = 429,
                                      .description = fmt::format("{}: rate limited for {} ms more", route, wait.count()),
                                      .retry_after = wait});
    auto until = Clock::now() + wait;
    while (Clock::now() < until) {
      if (cancelled && cancelled()) return std::unexpected(ApiError{.description = "cancelled"});
      std::this_thread::sleep_for(std::min<Clock::duration>(50ms, until - Clock::now()));
    }
  }
  net::HttpRequest req;
  req.method = std::string(method);
  req.target = base_.join(path);
  std::string token = token_();
  req.headers = {{"Authorization", "Bot " + token}, {"Accept", "application/json"}, {"User-Agent", "DiscordBot (moat, 1)"}};
  if (!body.is_null()) {
    req.headers.emplace_back("Content-Type", "application/json");
    req.body = body.dump();
  }
  net::CallOptions co;
  co.timeout = opts_.timeout;
  co.cancelled = cancelled;
  auto r = client_->fetch(base_, req, co, 16 << 20);
  if (!r) return std::unexpected(ApiError{.description = fmt::format("{} failed: {}", route, r.error().error.message)});
  learn(route, major, r->head);
  int status = r->head.status;
  auto j = r->body.empty() ? Json() : Json::parse(r->body, nullptr, false);
  if (status >= 200 && status < 300) {
    if (j.is_discarded()) return std::unexpected(ApiError{status, 0, fmt::format("{}: HTTP {}, not JSON", route, status)});
    return j;
  }
  ApiError e;
  e.code = status;
  std::string message = j.is_object() ? j.value("message", std::string()) : std::string();
  if (j.is_object()) e.discord_code = j.value("code", 0);
  e.description = fmt::format("{}: {}", route, message.empty() ? fmt::format("HTTP {}", status) : message);
  if (status == 429) {
    if (j.is_object() && j.contains("retry_after") && j["retry_after"].is_number())
      e.retry_after = std::chrono::milliseconds(static_cast<int64_t>(j["retry_after"].get<double>() * 1000 + 0.999));
    else if (auto h = r->head.header("Retry-After"))
      e.retry_after = seconds_text(*h);
    if (e.retry_after <= 0ms) e.retry_after = 1000ms;
    auto gh = r->head.header("X-RateLimit-Global");
    e.global = (j.is_object() && j.value("global", false)) || (gh && net::iequals(*gh, "true"));
    std::lock_guard g(mu_);
    auto until = Clock::now() + e.retry_after;
    if (e.global) global_until_ = std::max(global_until_, until);
    else if (auto* b = bucket_locked(route, major)) {
      b->remaining = 0;
      b->reset = std::max(b->reset, until);
    }
  }
  return std::unexpected(std::move(e));
}

}  // namespace moat::channels::discord

#include "channels/telegram/telegram_channel.h"

#include <openssl/crypto.h>

#include <charconv>

#include "base/log.h"
#include "store/clock.h"

namespace moat::channels {

using namespace std::chrono_literals;

namespace {

void wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

std::optional<int64_t> parse_int(std::string_view s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

constexpr size_t kSentKept = 4096;  // keys remembered against repeats within one process

}  // namespace

TelegramChannel::TelegramChannel(TokenFn token, AcceptBatchFn accept, CursorFn cursor, TelegramOptions opts)
    : token_fn_(std::move(token)), accept_(std::move(accept)), cursor_(std::move(cursor)), opts_(std::move(opts)) {
  if (auto u = net::parse_url(opts_.api_base); u) base_ = *u;
  else base_error_ = fmt::format("api_base \"{}\" is not a usable URL: {}", opts_.api_base, u.error().message);
  net::ClientOptions co;
  co.extra_ca_file = opts_.extra_ca_file;
  co.proxy = opts_.proxy;
  client_ = std::make_unique<net::HttpClient>(co);
  status_.name = "telegram";
  status_.kind = "telegram";
  status_.state = ChannelState::Stopped;
}

TelegramChannel::~TelegramChannel() {
  stop();
  std::lock_guard g(token_mu_);
  wipe(token_);
}

void TelegramChannel::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  set_state(ChannelState::Starting);
  thread_ = std::thread([this] { run(); });
}

void TelegramChannel::stop() {
  {
    std::lock_guard g(wait_mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool TelegramChannel::pause(std::chrono::milliseconds d) {
  std::unique_lock l(wait_mu_);
  wake_.wait_for(l, d, [this] { return stopping_.load(); });
  return !stopping_;
}

ChannelStatus TelegramChannel::status() const {
  std::lock_guard g(status_mu_);
  return status_;
}

void TelegramChannel::set_state(ChannelState s, std::string error) {
  std::lock_guard g(status_mu_);
  bool was_connected = status_.state == ChannelState::Connected;
  status_.state = s;
  if (s == ChannelState::Connected) {
    if (!was_connected) status_.connected_since_ms = clock::now_ms();
  } else {
    status_.connected_since_ms = 0;
  }
  if (!error.empty()) {
    error = redact(std::move(error));
    if (error != status_.last_error) log::warn("telegram: {}", error);
    status_.last_error = std::move(error);
    status_.last_error_ms = clock::now_ms();
  }
}

std::string TelegramChannel::redact(std::string text) const {
  std::lock_guard g(token_mu_);
  if (token_.empty()) return text;
  for (size_t at = text.find(token_); at != std::string::npos; at = text.find(token_, at))
    text.replace(at, token_.size(), "<token>");
  return text;
}

std::string TelegramChannel::describe(const ApiError& e) const {
  if (e.code == 0) return redact(e.description);
  return redact(fmt::format("{} ({})", e.description, e.code));
}

bool TelegramChannel::load_token() {
  auto t = token_fn_();
  if (!t) {
    set_state(ChannelState::Failed, fmt::format("cannot read the bot token: {}", t.error().message));
    return false;
  }
  std::lock_guard g(token_mu_);
  if (token_ != *t) {
    wipe(token_);
    token_ = std::move(*t);
  }
  wipe(*t);
  return true;
}

bool TelegramChannel::token_changed() {
  auto t = token_fn_();
  if (!t) return false;
  bool changed;
  {
    std::lock_guard g(token_mu_);
    changed = *t != token_;
  }
  wipe(*t);
  return changed;
}

TelegramChannel::ApiResult TelegramChannel::call(std::string_view method, const Json& params,
                                                 std::chrono::milliseconds timeout) {
  if (!base_error_.empty()) return std::unexpected(ApiError{0, base_error_});
  net::HttpRequest req;
  req.method = "POST";
  {
    std::lock_guard g(token_mu_);
    req.target = base_.join(fmt::format("/bot{}/{}", token_, method));
  }
  req.headers = {{"Content-Type", "application/json"}, {"Accept", "application/json"}};
  req.body = params.dump();
  net::CallOptions co;
  co.timeout = timeout;
  co.cancelled = [this] { return stopping_.load(); };
  auto r = client_->fetch(base_, req, co, 16 << 20);
  wipe(req.target);
  if (!r) return std::unexpected(ApiError{0, fmt::format("{} failed: {}", method, r.error().error.message)});
  auto j = Json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("ok"))
    return std::unexpected(ApiError{r->head.status, fmt::format("{}: HTTP {}, not a Bot API answer", method, r->head.status)});
  if (j.value("ok", false) && j.contains("result")) return std::move(j["result"]);
  ApiError e;
  e.code = j.value("error_code", r->head.status);
  e.description = fmt::format("{}: {}", method, j.value("description", std::string("error")));
  if (auto p = j.find("parameters"); p != j.end() && p->is_object()) {
    if (auto ra = p->find("retry_after"); ra != p->end() && ra->is_number())
      e.retry_after = std::chrono::milliseconds(static_cast<int64_t>(ra->get<double>() * 1000));
  }
  return std::unexpected(std::move(e));
}

bool TelegramChannel::identify() {
  if (!load_token()) return false;
  auto me = call("getMe", Json::object(), opts_.request_timeout);
  if (!me) {
    if (me.error().code == 401 || me.error().code == 404)  // 404: no such bot (a malformed token)
      set_state(ChannelState::Failed,
                fmt::format("Telegram refused the bot token in secret '{}' ({}): the token is wrong or was revoked; "
                            "get the current one from @BotFather (/token) and store it with "
                            "'moat secret set {} --channel' (no restart needed)",
                            opts_.token_secret, describe(me.error()), opts_.token_secret));
    else
      set_state(ChannelState::Retrying, fmt::format("cannot reach Telegram: {}", describe(me.error())));
    return false;
  }
  telegram::BotIdentity bot{me->value("id", int64_t{0}), me->value("username", std::string())};
  if (bot.id == 0) {
    set_state(ChannelState::Retrying, "getMe answered without the bot's id");
    return false;
  }
  if (!offset_) {
    auto c = cursor_();
    if (!c) {
      set_state(ChannelState::Retrying, fmt::format("cannot read the stored update offset: {}", c.error().message));
      return false;
    }
    if (*c && (*c)->contains("offset") && (**c)["offset"].is_number_integer()) offset_ = (**c)["offset"].get<int64_t>();
  }
  bot_ = bot;
  bool privacy = !me->value("can_read_all_group_messages", false);
  {
    std::lock_guard g(status_mu_);
    status_.identity = fmt::format("@{}{}", bot.username,
                                   privacy ? " (privacy mode: in groups only @mentions, replies to the bot and commands "
                                             "reach it)"
                                           : "");
  }
  log::info("telegram: polling as @{} (id {}){}", bot.username, bot.id, offset_ ? fmt::format(", from update {}", *offset_) : "");
  set_state(ChannelState::Connected);
  return true;
}

bool TelegramChannel::poll_once(std::chrono::milliseconds& wait) {
  Json params{{"timeout", std::chrono::duration_cast<std::chrono::seconds>(opts_.poll_timeout).count()},
              {"limit", 100},
              {"allowed_updates", Json::array({"message"})}};
  if (offset_) params["offset"] = *offset_;
  auto r = call("getUpdates", params, opts_.poll_timeout + opts_.request_timeout);
  if (stopping_) return true;
  if (!r) {
    const auto& e = r.error();
    if (e.code == 409) {
      set_state(ChannelState::Conflict,
                fmt::format("another getUpdates poller or a webhook is active: {}; stop the other program polling with "
                            "this bot's token, or remove the webhook (deleteWebhook); retrying",
                            describe(e)));
    } else if (e.code == 401 || e.code == 404) {
      bot_ = {};  // identify again, with the token read again
      set_state(ChannelState::Failed,
                fmt::format("Telegram refused the bot token in secret '{}' ({}): the token was revoked or changed; "
                            "store the current one with 'moat secret set {} --channel'",
                            opts_.token_secret, describe(e), opts_.token_secret));
      wait = opts_.refused_token_cap / 4;
    } else {
      set_state(ChannelState::Retrying, fmt::format("polling Telegram failed: {}", describe(e)));
      wait = e.retry_after;
    }
    return false;
  }
  if (!r->is_array()) {
    set_state(ChannelState::Retrying, "getUpdates answered something other than a list of updates");
    return false;
  }
  if (r->empty()) {
    set_state(ChannelState::Connected);
    return true;
  }
  std::vector<router::Envelope> envelopes;
  int64_t next = offset_.value_or(0), newest_date_ms = 0;
  for (const auto& u : *r) {
    int64_t id = u.is_object() ? u.value("update_id", int64_t{0}) : 0;
    next = std::max(next, id + 1);
    auto m = telegram::map_update(u, bot_);
    if (m.envelope) {
      envelopes.push_back(std::move(*m.envelope));
      newest_date_ms = std::max(newest_date_ms, m.platform_date_ms);
    } else {
      log::debug("telegram: update {} skipped ({})", id, telegram::skip_name(m.skipped));
    }
  }
  size_t count = envelopes.size();
  auto stored = accept_(std::move(envelopes), router::ChannelCursor{"telegram", Json{{"offset", next}}});
  if (!stored) {
    set_state(ChannelState::Retrying, fmt::format("storing {} update(s) failed ({}); fetching them again",
                                                  r->size(), stored.error().message));
    return false;
  }
  for (auto& a : *stored)
    if (!a) log::warn("telegram: an update was not accepted: {}", a.error().message);
  offset_ = next;
  {
    std::lock_guard g(status_mu_);
    if (count > 0 && newest_date_ms > 0) status_.lag_ms = std::max<int64_t>(0, clock::now_ms() - newest_date_ms);
  }
  set_state(ChannelState::Connected);
  return true;
}

void TelegramChannel::run() {
  int failures = 0;
  while (!stopping_) {
    std::chrono::milliseconds wait{0};
    bool ok = bot_.id == 0 ? identify() : poll_once(wait);
    if (stopping_) break;
    if (ok) {
      failures = 0;
      continue;
    }
    ++failures;
    if (wait.count() <= 0) wait = opts_.backoff.delay(failures);
    if (status().state != ChannelState::Failed) {
      if (!pause(wait)) break;
      continue;
    }
    // The owner has to act: wait longer, but try at once when the secret changes (checked each second).
    auto until = std::chrono::steady_clock::now() + std::min(opts_.refused_token_cap, wait * 2);
    while (std::chrono::steady_clock::now() < until && pause(std::min<std::chrono::milliseconds>(1s, opts_.refused_token_cap)) &&
           !token_changed()) {
    }
  }
  set_state(ChannelState::Stopped);
}

router::DeliveryResult TelegramChannel::deliver(const router::Outbound& msg) {
  {
    std::lock_guard g(sent_mu_);
    if (auto it = sent_.find(msg.key); it != sent_.end()) return router::Delivered{it->second};
  }
  auto chat_id = parse_int(msg.chat);
  if (!chat_id)
    return router::delivery_failed(
        Error{ErrorKind::InvalidInput, fmt::format("'{}' is not a Telegram chat id (a number)", msg.chat)});
  bool have_token;
  {
    std::lock_guard g(token_mu_);
    have_token = !token_.empty();
  }
  if (!have_token && !load_token())
    return router::delivery_failed(Error{ErrorKind::Unavailable, status().last_error});
  Json params{{"chat_id", *chat_id}, {"text", msg.text}};
  // In a group, the first part quotes the message it answers (if that is gone, it is sent anyway).
  if (*chat_id < 0 && msg.part == 0) {
    if (auto reply_to = parse_int(msg.reply_to))
      params["reply_parameters"] = Json{{"message_id", *reply_to}, {"allow_sending_without_reply", true}};
  }
  auto r = call("sendMessage", params, opts_.request_timeout);
  if (!r) {
    const auto& e = r.error();
    std::string what = fmt::format("Telegram did not take the message for chat {}: {}", msg.chat, describe(e));
    if (e.code == 400 || e.code == 403)  // chat not found, text refused; bot blocked or removed
      return router::delivery_failed(Error{ErrorKind::InvalidInput, std::move(what)});
    return router::delivery_failed(Error{ErrorKind::Unavailable, std::move(what)}, e.retry_after);
  }
  std::string platform_id = std::to_string(r->value("message_id", int64_t{0}));
  std::lock_guard g(sent_mu_);
  if (sent_.emplace(msg.key, platform_id).second) {
    sent_order_.push_back(msg.key);
    if (sent_order_.size() > kSentKept) {
      sent_.erase(sent_order_.front());
      sent_order_.pop_front();
    }
  }
  return router::Delivered{platform_id};
}

}  // namespace moat::channels

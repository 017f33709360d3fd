#include "channels/telegram/telegram_channel.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "base/constant_time.h"
#include "base/crash_point.h"
#include "base/log.h"
#include "base/text.h"
#include "store/clock.h"

namespace moat::channels {

using namespace std::chrono_literals;

namespace {

void wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

std::optional<int64_t> parse_int(std::string_view s) { return parse_number<int64_t>(s); }

constexpr size_t kSentKept = 4096;  // keys remembered against repeats within one process

// Telegram's words for an edit that changes nothing, and for a message that cannot be edited any more.
bool not_modified(std::string_view description) { return description.find("message is not modified") != std::string_view::npos; }
bool message_gone(std::string_view description) {
  return description.find("message to edit not found") != std::string_view::npos ||
         description.find("message can't be edited") != std::string_view::npos;
}

int64_t now_s() { return clock::now_ms() / 1000; }

}  // namespace

std::string webhook_secret_for(std::string_view token) {
  if (token.empty()) return {};
  static constexpr std::string_view kLabel = "moat telegram webhook secret";
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), token.data(), static_cast<int>(token.size()), reinterpret_cast<const unsigned char*>(kLabel.data()),
       kLabel.size(), mac, &len);
  std::string out;
  for (unsigned int i = 0; i < len; ++i) out += fmt::format("{:02x}", mac[i]);
  OPENSSL_cleanse(mac, sizeof mac);
  return out;
}

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
  typing_thread_ = std::thread([this] { run_typing(); });
}

void TelegramChannel::stop() {
  {
    std::lock_guard g(wait_mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  {
    std::lock_guard g(typing_mu_);  // the typing thread checks stopping_ under this lock
  }
  typing_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (typing_thread_.joinable()) typing_thread_.join();
}

telegram::BotIdentity TelegramChannel::bot() const {
  std::lock_guard g(bot_mu_);
  return bot_;
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
  {
    std::lock_guard g(accept_mu_);
    if (!offset_ && stored_mode_.empty()) {
      auto c = cursor_();
      if (!c) {
        set_state(ChannelState::Retrying, fmt::format("cannot read the stored update offset: {}", c.error().message));
        return false;
      }
      if (*c && (*c)->contains("offset") && (**c)["offset"].is_number_integer()) offset_ = (**c)["offset"].get<int64_t>();
      stored_mode_ = *c && (*c)->is_object() ? (*c)->value("mode", std::string("polling")) : std::string("none");
    }
  }
  {
    std::lock_guard g(bot_mu_);
    bot_ = bot;
  }
  bool privacy = !me->value("can_read_all_group_messages", false);
  {
    std::lock_guard g(status_mu_);
    status_.identity = fmt::format("@{}{}{}", bot.username,
                                   webhook_mode() ? fmt::format(" via webhook {}", opts_.webhook_url) : std::string(),
                                   privacy ? " (privacy mode: in groups only @mentions, replies to the bot and commands "
                                             "reach it)"
                                           : "");
  }
  if (webhook_mode() ? !set_webhook() : !leave_webhook_mode()) {
    forget_bot();  // all of it again after the backoff
    return false;
  }
  if (webhook_mode()) return true;
  log::info("telegram: polling as @{} (id {}){}", bot.username, bot.id, offset_ ? fmt::format(", from update {}", *offset_) : "");
  set_state(ChannelState::Connected);
  return true;
}

bool TelegramChannel::set_webhook() {
  std::string secret;
  {
    std::lock_guard g(token_mu_);
    secret = webhook_secret_for(token_);
  }
  Json params{{"url", opts_.webhook_url},
              {"secret_token", secret},
              {"allowed_updates", Json::array({"message"})},
              {"max_connections", 1}};
  auto r = call("setWebhook", params, opts_.request_timeout);
  wipe(secret);
  if (!r) {
    const auto& e = r.error();
    if (e.code == 401 || e.code == 404) {
      set_state(ChannelState::Failed,
                fmt::format("Telegram refused the bot token in secret '{}' ({}): store the current one with "
                            "'moat secret set {} --channel'",
                            opts_.token_secret, describe(e), opts_.token_secret));
    } else if (e.code == 400) {  // "bad webhook: ...": the URL cannot be used by Telegram
      set_state(ChannelState::Failed,
                fmt::format("Telegram will not call webhook_url {} ({}); it must be a public https:// URL on port 443, 80, "
                            "88 or 8443 whose reverse proxy forwards to moatd (docs/channels.md); fix "
                            "[channels.telegram] webhook_url and restart moatd",
                            opts_.webhook_url, describe(e)));
    } else {
      set_state(ChannelState::Retrying, fmt::format("cannot set the webhook: {}", describe(e)));
    }
    return false;
  }
  {
    std::lock_guard g(accept_mu_);
    Json cursor{{"mode", "webhook"}};
    if (offset_) cursor["offset"] = *offset_;
    if (stored_mode_ != "webhook") {  // so that polling, later, knows to delete it
      if (auto st = accept_({}, router::ChannelCursor{"telegram", cursor}); !st) {
        set_state(ChannelState::Retrying, fmt::format("cannot record webhook mode in the store: {}", st.error().message));
        return false;
      }
      stored_mode_ = "webhook";
    }
  }
  webhook_set_s_ = now_s();
  auto b = bot();
  log::info("telegram: webhook {} set for @{} (id {})", opts_.webhook_url, b.username, b.id);
  set_state(ChannelState::Connected);
  return true;
}

bool TelegramChannel::leave_webhook_mode() {
  std::lock_guard g(accept_mu_);
  if (stored_mode_ != "webhook") return true;
  auto r = call("deleteWebhook", Json::object(), opts_.request_timeout);  // pending updates are kept for getUpdates
  if (!r) {
    set_state(ChannelState::Retrying, fmt::format("cannot remove the webhook moatd had set (mode is polling now): {}",
                                                  describe(r.error())));
    return false;
  }
  Json cursor{{"mode", "polling"}};
  if (offset_) cursor["offset"] = *offset_;
  if (auto st = accept_({}, router::ChannelCursor{"telegram", cursor}); !st) {
    set_state(ChannelState::Retrying, fmt::format("cannot record polling mode in the store: {}", st.error().message));
    return false;
  }
  stored_mode_ = "polling";
  log::info("telegram: the webhook moatd had set is removed; polling");
  return true;
}

bool TelegramChannel::check_webhook() {
  auto r = call("getWebhookInfo", Json::object(), opts_.request_timeout);
  if (!r) {
    set_state(ChannelState::Retrying, fmt::format("cannot ask Telegram about the webhook: {}", describe(r.error())));
    return true;  // asked again at the next check
  }
  std::string url = r->value("url", std::string());
  if (url != opts_.webhook_url) {
    set_state(ChannelState::Conflict,
              fmt::format("the bot's webhook is {} instead of {}: another program with this bot's token changed it; "
                          "stop it (only one program may receive this bot's updates); setting ours again",
                          url.empty() ? std::string("removed") : "\"" + url + "\"", opts_.webhook_url));
    return false;
  }
  int64_t error_s = r->value("last_error_date", int64_t{0});
  if (error_s >= webhook_set_s_ && error_s > webhook_ok_s_.load()) {
    set_state(ChannelState::Retrying,
              fmt::format("Telegram cannot deliver to {}: {} ({} update(s) waiting); check that the reverse proxy "
                          "forwards that path to moatd's [web] listener",
                          opts_.webhook_url, r->value("last_error_message", std::string("unknown error")),
                          r->value("pending_update_count", int64_t{0})));
  } else {
    set_state(ChannelState::Connected);
  }
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
      forget_bot();  // identify again, with the token read again
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
  crash_point("telegram.fetched");  // Telegram sent them; the store has neither them nor the new offset
  std::lock_guard g(accept_mu_);
  int64_t next = offset_.value_or(0);
  for (const auto& u : *r) next = std::max(next, (u.is_object() ? u.value("update_id", int64_t{0}) : 0) + 1);
  auto stored = store_updates(*r, next, "polling");
  if (!stored) {
    set_state(ChannelState::Retrying, fmt::format("storing {} update(s) failed ({}); fetching them again",
                                                  r->size(), stored.error().message));
    return false;
  }
  set_state(ChannelState::Connected);
  return true;
}

// The caller holds accept_mu_.
Result<size_t> TelegramChannel::store_updates(const Json& updates, int64_t next, std::string_view mode) {
  auto b = bot();
  std::vector<router::Envelope> envelopes;
  int64_t newest_date_ms = 0;
  for (const auto& u : updates) {
    auto m = telegram::map_update(u, b);
    if (m.envelope) {
      download_attachments(*m.envelope);
      envelopes.push_back(std::move(*m.envelope));
      newest_date_ms = std::max(newest_date_ms, m.platform_date_ms);
    } else {
      log::debug("telegram: update {} skipped ({})", u.is_object() ? u.value("update_id", int64_t{0}) : 0,
                 telegram::skip_name(m.skipped));
    }
  }
  size_t count = envelopes.size();
  auto stored = accept_(std::move(envelopes), router::ChannelCursor{"telegram", Json{{"offset", next}, {"mode", mode}}});
  if (!stored) return std::unexpected(stored.error());
  for (auto& a : *stored)
    if (!a) log::warn("telegram: an update was not accepted: {}", a.error().message);
  offset_ = next;
  std::lock_guard g(status_mu_);
  if (count > 0 && newest_date_ms > 0) status_.lag_ms = std::max<int64_t>(0, clock::now_ms() - newest_date_ms);
  return count;
}

void TelegramChannel::download_attachments(router::Envelope& e) {
  for (auto& a : e.attachments) {
    if (!a.url.starts_with(telegram::kFileUrlPrefix)) continue;
    std::string file_id = a.url.substr(telegram::kFileUrlPrefix.size());
    if (opts_.attachments == nullptr) {
      a.unavailable = "this moatd keeps no attachments";
      continue;
    }
    // Telegram serves bots files of at most 20 MB; getFile says so for larger ones.
    auto f = call("getFile", Json{{"file_id", file_id}}, opts_.request_timeout);
    if (!f || !f->is_object() || !f->contains("file_path")) {
      a.unavailable = f ? std::string("Telegram gave no file path") : redact(describe(f.error()));
      continue;
    }
    AttachmentSource src{base_, {}, {}};
    {
      std::lock_guard g(token_mu_);
      src.target = base_.join(fmt::format("/file/bot{}/{}", token_, f->value("file_path", std::string())));
    }
    a = fetch_attachment(*client_, opts_.attachments, "telegram", std::move(a), src);
    wipe(src.target);
  }
}

void TelegramChannel::run() {
  int failures = 0;
  while (!stopping_) {
    std::chrono::milliseconds wait{0};
    bool ok = bot().id == 0 ? identify() : webhook_mode() ? watch_webhook() : poll_once(wait);
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

void TelegramChannel::forget_bot() {
  std::lock_guard g(bot_mu_);
  bot_ = {};
}

bool TelegramChannel::watch_webhook() {
  // Until the next check: a changed token means a changed secret, so the webhook is set again at once.
  auto until = std::chrono::steady_clock::now() + opts_.webhook_check_interval;
  while (std::chrono::steady_clock::now() < until) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (!pause(std::clamp<std::chrono::milliseconds>(left, std::chrono::milliseconds(1), 1s))) return true;
    if (token_changed()) {
      log::info("telegram: the bot token changed; setting the webhook again with the new secret");
      forget_bot();
      return true;
    }
  }
  if (check_webhook()) return true;
  forget_bot();  // identify and set it again, after the backoff
  return false;
}

void TelegramChannel::register_routes(net::HttpServer& server) {
  if (!webhook_mode()) return;
  server.add_route(opts_.webhook_path, [this](const net::ServerRequest& req) { return handle_webhook(req); },
                   net::RouteOptions{.body_limit = opts_.webhook_body_limit});
}

net::ServerResponse TelegramChannel::handle_webhook(const net::ServerRequest& req) {
  if (req.path != opts_.webhook_path) return net::ServerResponse::error(404, "not found");
  if (req.method != "POST") return net::ServerResponse::error(405, "Telegram delivers updates with POST");
  std::string expected;
  {
    std::lock_guard g(token_mu_);
    expected = webhook_secret_for(token_);
  }
  // Before the first getMe the token is not read yet: Telegram is asked to come back (it retries).
  if (expected.empty()) return net::ServerResponse::error(503, "the Telegram channel is starting; deliver again");
  auto given = req.header("x-telegram-bot-api-secret-token");
  bool authentic = given && constant_time_equal(*given, expected);
  wipe(expected);
  if (!authentic) {
    log::debug("telegram: a webhook request from {} without the right secret token: refused", req.remote);
    return net::ServerResponse::error(401, "missing or wrong X-Telegram-Bot-Api-Secret-Token");
  }
  if (bot().id == 0) return net::ServerResponse::error(503, "the Telegram channel is not connected yet; deliver again");
  auto update = Json::parse(req.body, nullptr, false);
  if (update.is_discarded() || !update.is_object() || !update.contains("update_id") || !update["update_id"].is_number_integer())
    return net::ServerResponse::error(400, "expected one Telegram Update object (JSON with an update_id)");
  int64_t id = update["update_id"].get<int64_t>();
  std::lock_guard g(accept_mu_);
  // Telegram sends one update at a time (max_connections 1) and again only what was not answered 2xx:
  // a repeat is the update stored last, whose 200 was lost. Anything else is stored (update_ids are not
  // always increasing: after a week without updates Telegram starts from a random one), and the
  // envelope key drops any other repeat.
  if (offset_ && id + 1 == *offset_) return net::ServerResponse::json(200, Json::object());
  auto stored = store_updates(Json::array({update}), id + 1, "webhook");
  if (!stored) {
    set_state(ChannelState::Retrying, fmt::format("storing a webhook update failed ({}); Telegram delivers it again",
                                                  stored.error().message));
    return net::ServerResponse::error(503, "the update could not be stored; deliver it again");
  }
  webhook_ok_s_ = now_s();
  if (status().state != ChannelState::Failed) set_state(ChannelState::Connected);
  return net::ServerResponse::json(200, Json::object());
}

void TelegramChannel::live(const router::LiveEvent& ev) {
  if (ev.kind != "turn_started" && ev.kind != "turn_ended") return;
  auto chat = parse_int(ev.chat);
  if (!chat) return;
  {
    std::lock_guard g(typing_mu_);
    if (ev.kind == "turn_started") {
      auto& t = typing_[*chat];
      if (t.turns++ == 0) t.started = t.next = std::chrono::steady_clock::now();
    } else if (auto it = typing_.find(*chat); it != typing_.end() && --it->second.turns <= 0) {
      typing_.erase(it);
    }
  }
  typing_cv_.notify_all();
}

void TelegramChannel::run_typing() {
  std::unique_lock l(typing_mu_);
  while (!stopping_) {
    auto now = std::chrono::steady_clock::now();
    auto wake = now + std::chrono::hours(1);
    std::vector<int64_t> due;
    for (auto it = typing_.begin(); it != typing_.end();) {
      if (now - it->second.started > opts_.typing_cap) {  // a "turn_ended" that never came
        it = typing_.erase(it);
        continue;
      }
      if (it->second.next <= now) {
        due.push_back(it->first);
        it->second.next = now + opts_.typing_interval;
      }
      wake = std::min(wake, it->second.next);
      ++it;
    }
    if (due.empty()) {
      typing_cv_.wait_until(l, wake);
      continue;
    }
    l.unlock();
    for (int64_t chat : due) {
      {
        std::lock_guard g(typing_mu_);
        if (stopping_ || !typing_.contains(chat)) continue;  // the turn ended meanwhile
      }
      auto r = call("sendChatAction", Json{{"chat_id", chat}, {"action", "typing"}}, opts_.request_timeout);
      if (!r) log::debug("telegram: showing typing in chat {}: {}", chat, describe(r.error()));
    }
    l.lock();
  }
}

bool TelegramChannel::ensure_token() {
  {
    std::lock_guard g(token_mu_);
    if (!token_.empty()) return true;
  }
  return load_token();
}

router::DeliveryResult TelegramChannel::send_failure(const ApiError& e, std::string_view chat) const {
  std::string what = fmt::format("Telegram did not take the message for chat {}: {}", chat, describe(e));
  if (e.code == 400 || e.code == 403)  // chat not found, text refused; bot blocked or removed
    return router::delivery_failed(Error{ErrorKind::InvalidInput, std::move(what)});
  return router::delivery_failed(Error{ErrorKind::Unavailable, std::move(what)}, e.retry_after);
}

router::DeliveryResult TelegramChannel::send_text(int64_t chat, const std::string& text, std::string_view reply_to) {
  Json params{{"chat_id", chat}, {"text", text}};
  // In a group, the first part quotes the message it answers (if that is gone, it is sent anyway).
  if (chat < 0) {
    if (auto id = parse_int(reply_to))
      params["reply_parameters"] = Json{{"message_id", *id}, {"allow_sending_without_reply", true}};
  }
  auto r = call("sendMessage", params, opts_.request_timeout);
  if (!r) return send_failure(r.error(), std::to_string(chat));
  return router::Delivered{std::to_string(r->value("message_id", int64_t{0}))};
}

router::DeliveryResult TelegramChannel::edit_text(int64_t chat, std::string_view message_id, const std::string& text) {
  auto id = parse_int(message_id);
  if (!id)
    return router::delivery_failed(
        Error{ErrorKind::NotFound, fmt::format("'{}' is not a Telegram message id (a number)", message_id)});
  auto r = call("editMessageText", Json{{"chat_id", chat}, {"message_id", *id}, {"text", text}}, opts_.request_timeout);
  if (r || not_modified(r.error().description)) return router::Delivered{std::string(message_id)};
  if (r.error().code == 400 && message_gone(r.error().description))
    return router::delivery_failed(Error{ErrorKind::NotFound, describe(r.error())});
  return send_failure(r.error(), std::to_string(chat));
}

router::DeliveryResult TelegramChannel::preview(const router::Preview& p) {
  auto chat = parse_int(p.chat);
  if (!chat)
    return router::delivery_failed(
        Error{ErrorKind::InvalidInput, fmt::format("'{}' is not a Telegram chat id (a number)", p.chat)});
  if (!ensure_token()) return router::delivery_failed(Error{ErrorKind::Unavailable, status().last_error});
  if (!p.platform_id.empty()) {
    auto r = edit_text(*chat, p.platform_id, p.text);
    if (r || r.error().error.kind != ErrorKind::NotFound) return r;
    log::info("telegram: the preview message {} in chat {} is gone; showing the reply in a new one", p.platform_id, p.chat);
  }
  return send_text(*chat, p.text, {});
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
  if (!ensure_token()) return router::delivery_failed(Error{ErrorKind::Unavailable, status().last_error});
  router::DeliveryResult r = router::delivery_failed(Error{ErrorKind::NotFound, "no preview"});
  if (msg.part == 0 && !msg.edit_platform_id.empty()) {  // the turn's preview becomes the reply
    r = edit_text(*chat_id, msg.edit_platform_id, msg.text);
    if (!r && r.error().error.kind == ErrorKind::NotFound)
      log::info("telegram: the preview message {} in chat {} is gone; sending the reply as a new message",
                msg.edit_platform_id, msg.chat);
  }
  if (!r && r.error().error.kind == ErrorKind::NotFound)
    r = send_text(*chat_id, msg.text, msg.part == 0 ? std::string_view(msg.reply_to) : std::string_view());
  if (!r) return r;
  std::string platform_id = r->platform_id;
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

#include "channels/discord/discord_channel.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <random>

#include "base/crash_point.h"
#include "base/log.h"
#include "store/clock.h"

namespace moat::channels {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT (privileged: enabled in the Developer Portal).
constexpr int kIntents = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15);
constexpr size_t kBatch = 100;          // dispatches committed in one transaction at most
constexpr size_t kKnownChannels = 1000;  // Discord channels remembered for backfill
constexpr size_t kNonceMax = 25;        // Discord's limit on a nonce's length
// After a fatal close the owner has to act; the channel tries again when the secret changes, or this
// long after (a fix in the Developer Portal changes no secret).
constexpr auto kFatalRetry = 10min;

void wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

std::string str(const Json& j, std::string_view key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::chrono::milliseconds random_between(std::chrono::milliseconds lo, std::chrono::milliseconds hi) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  if (hi <= lo) return lo;
  return std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(lo.count(), hi.count())(rng));
}

double random_share() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

}  // namespace

DiscordChannel::DiscordChannel(TokenFn token, AcceptBatchFn accept, CursorFn cursor, DiscordOptions opts)
    : token_fn_(std::move(token)), accept_(std::move(accept)), cursor_(std::move(cursor)), opts_(std::move(opts)) {
  discord::RestOptions ro;
  ro.api_base = opts_.api_base;
  ro.timeout = opts_.request_timeout;
  ro.client.extra_ca_file = opts_.extra_ca_file;
  ro.client.proxy = opts_.proxy;
  rest_ = std::make_unique<discord::DiscordRest>(ro, [this] { return this->token(); });
  files_ = std::make_unique<net::HttpClient>(ro.client);
  status_.name = "discord";
  status_.kind = "discord";
  status_.state = ChannelState::Stopped;
}

DiscordChannel::~DiscordChannel() {
  stop();
  std::lock_guard g(token_mu_);
  wipe(token_);
}

void DiscordChannel::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  set_state(ChannelState::Starting);
  thread_ = std::thread([this] { run(); });
  typing_thread_ = std::thread([this] { typing_loop(); });
}

void DiscordChannel::stop() {
  {
    std::lock_guard g(wait_mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (typing_thread_.joinable()) typing_thread_.join();
}

bool DiscordChannel::pause(std::chrono::milliseconds d) {
  std::unique_lock l(wait_mu_);
  wake_.wait_for(l, d, [this] { return stopping_.load(); });
  return !stopping_;
}

ChannelStatus DiscordChannel::status() const {
  std::lock_guard g(status_mu_);
  return status_;
}

void DiscordChannel::set_state(ChannelState s, std::string error) {
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
    if (error != status_.last_error) log::warn("discord: {}", error);
    status_.last_error = std::move(error);
    status_.last_error_ms = clock::now_ms();
  }
}

std::string DiscordChannel::redact(std::string text) const {
  std::lock_guard g(token_mu_);
  if (token_.empty()) return text;
  for (size_t at = text.find(token_); at != std::string::npos; at = text.find(token_, at))
    text.replace(at, token_.size(), "<token>");
  return text;
}

std::string DiscordChannel::token() const {
  std::lock_guard g(token_mu_);
  return token_;
}

bool DiscordChannel::load_token() {
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

bool DiscordChannel::token_changed() {
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

// --- the stored cursor ---------------------------------------------------------------------------

bool DiscordChannel::load_cursor() {
  auto c = cursor_();
  if (!c) {
    set_state(ChannelState::Retrying, fmt::format("cannot read the stored Gateway cursor: {}", c.error().message));
    return false;
  }
  session_ = {};
  known_.clear();
  if (*c && (*c)->is_object()) {
    const Json& j = **c;
    session_.id = str(j, "session_id");
    session_.resume_url = str(j, "resume_url");
    session_.seq = j.value("seq", int64_t{-1});
    if (auto ch = j.find("channels"); ch != j.end() && ch->is_object())
      for (auto& [id, v] : ch->items())
        if (v.is_object()) known_[id] = Known{str(v, "guild"), str(v, "last")};
  }
  cursor_loaded_ = true;
  return true;
}

Json DiscordChannel::cursor_json() const {
  Json channels = Json::object();
  for (const auto& [id, k] : known_) channels[id] = Json{{"guild", k.guild_id}, {"last", k.last_id}};
  return Json{{"session_id", session_.id}, {"resume_url", session_.resume_url}, {"seq", session_.seq},
              {"channels", std::move(channels)}};
}

void DiscordChannel::download_attachments(std::vector<router::Envelope>& batch) {
  auto api = net::parse_url(opts_.api_base);
  for (auto& e : batch)
    for (auto& a : e.attachments) {
      if (!a.staged.empty() || !a.unavailable.empty()) continue;
      auto u = net::parse_url(a.url);
      // Only Discord's CDN (or the API's own host: a stand-in, a proxy of one's own): the URL comes in
      // a message, and moatd must not be made to fetch from anywhere else.
      bool cdn = u && u->scheme == net::Scheme::Https &&
                 (u->host == "cdn.discordapp.com" || u->host == "media.discordapp.net");
      bool same_host = u && api && u->host == api->host && u->port == api->port && u->scheme == api->scheme;
      if (!cdn && !same_host) {
        a.unavailable = "the file is not on Discord's CDN";
        continue;
      }
      std::string target = u->path.empty() ? "/" : u->path;
      a = fetch_attachment(*files_, opts_.attachments, "discord", std::move(a), AttachmentSource{*u, target, {}},
                           opts_.download_timeout);
    }
}

bool DiscordChannel::commit() {
  if (batch_.empty() && !dirty_) return true;
  size_t count = batch_.size();
  download_attachments(batch_);
  if (count > 0) crash_point("discord.dispatched");  // received, not yet durable
  auto stored = accept_(std::move(batch_), router::ChannelCursor{"discord", cursor_json()});
  batch_.clear();
  dirty_ = false;
  if (!stored) {
    // What is in memory is ahead of the store: read the stored cursor again and resume from it.
    cursor_loaded_ = false;
    set_state(ChannelState::Retrying,
              fmt::format("storing {} message(s) failed ({}); receiving them again", count, stored.error().message));
    return false;
  }
  for (auto& a : *stored)
    if (!a) log::warn("discord: a message was not accepted: {}", a.error().message);
  if (count > 0 && newest_ms_ > 0) {
    std::lock_guard g(status_mu_);
    status_.lag_ms = std::max<int64_t>(0, clock::now_ms() - newest_ms_);
  }
  return true;
}

// --- the Gateway ---------------------------------------------------------------------------------

bool DiscordChannel::fetch_gateway_url() {
  auto r = rest_->call("GET", "/gateway/bot", Json(), [this] { return stopping_.load(); });
  if (!r) {
    const auto& e = r.error();
    if (e.code == 401)
      set_state(ChannelState::Failed,
                fmt::format("Discord refused the bot token in secret '{}' ({}): the token is wrong or was reset; copy "
                            "the current one from the Developer Portal (your application > Bot > Reset Token) and store "
                            "it with 'moat secret set {} --channel' (no restart needed)",
                            opts_.token_secret, redact(e.description), opts_.token_secret));
    else
      set_state(ChannelState::Retrying, fmt::format("cannot reach Discord: {}", redact(e.description)));
    return false;
  }
  std::string url = r->is_object() ? str(*r, "url") : std::string();
  if (url.empty()) {
    set_state(ChannelState::Retrying, "GET /gateway/bot answered without a url");
    return false;
  }
  gateway_url_ = url;
  return true;
}

DiscordChannel::Next DiscordChannel::on_close(const net::WebSocketEvent& end) {
  if (end.kind == net::WebSocketEvent::Kind::Failed) {
    set_state(ChannelState::Retrying, fmt::format("the Gateway connection broke ({}); resuming", end.error.message));
    return Next::Reconnect;
  }
  uint16_t code = end.close_code;
  std::string said = fmt::format("close {}{}{}", code, end.close_reason.empty() ? "" : " ", end.close_reason);
  auto fatal = [&](std::string fix) {
    set_state(ChannelState::Failed, fmt::format("Discord closed the Gateway ({}): {}", said, fix));
    return Next::Fatal;
  };
  const std::string& secret = opts_.token_secret;
  switch (code) {
    case 4004:
      return fatal(fmt::format("the bot token in secret '{}' was refused; copy the current one from the Developer "
                               "Portal (your application > Bot > Reset Token) and store it with 'moat secret set {} "
                               "--channel' (no restart needed)",
                               secret, secret));
    case 4010:
    case 4011:
      return fatal("the bot needs sharding (it is in too many guilds for one connection), which moat does not do; "
                   "use a bot in fewer guilds");
    case 4012: return fatal("this Gateway does not serve API v10; check [channels.discord] api_base");
    case 4013: return fatal("the intents moat asks for were refused as invalid; check [channels.discord] api_base");
    case 4014:
      return fatal(fmt::format("the MESSAGE_CONTENT intent is not enabled in the Developer Portal: open your application "
                               "> Bot > Privileged Gateway Intents, turn on Message Content Intent and save, then restart "
                               "moatd (or wait: the channel tries again every 10 minutes)"));
    case 4007:  // invalid sequence
    case 4009:  // session timed out
    case 1000:
    case 1001:  // the server ended the session
      set_state(ChannelState::Retrying, fmt::format("Discord ended the Gateway session ({}); identifying again", said));
      return Next::Reidentify;
    default:
      set_state(ChannelState::Retrying, fmt::format("Discord closed the Gateway connection ({}); resuming", said));
      return Next::Reconnect;
  }
}

void DiscordChannel::on_dispatch(const Json& p) {
  if (auto s = p.find("s"); s != p.end() && s->is_number_integer()) {
    session_.seq = s->get<int64_t>();
    dirty_ = true;
  }
  std::string t = str(p, "t");
  auto dit = p.find("d");
  if (dit == p.end() || !dit->is_object()) return;
  const Json& d = *dit;
  if (t == "READY") {
    session_.id = str(d, "session_id");
    session_.resume_url = str(d, "resume_gateway_url");
    if (auto u = d.find("user"); u != d.end() && u->is_object()) {
      bot_.id = str(*u, "id");
      bot_.username = str(*u, "username");
    }
    {
      std::lock_guard g(status_mu_);
      status_.identity = fmt::format("@{} ({})", bot_.username, bot_.id);
    }
    log::info("discord: identified as @{} (id {}), session {}", bot_.username, bot_.id, session_.id);
    ready_ = true;
    set_state(ChannelState::Connected);
  } else if (t == "RESUMED") {
    log::info("discord: resumed session {} at sequence {}", session_.id, session_.seq);
    ready_ = true;
    set_state(ChannelState::Connected);
  } else if (t == "GUILD_CREATE") {
    std::string guild = str(d, "id");
    // The server's text channels become known for backfill from the first time the bot sees them:
    // after their last message, or (none yet) after now. A channel first seen after a gap cannot be
    // backfilled for that gap; one known before can.
    if (auto cs = d.find("channels"); cs != d.end() && cs->is_array())
      for (const auto& c : *cs) {
        int type = c.is_object() ? c.value("type", -1) : -1;
        std::string id = c.is_object() ? str(c, "id") : std::string();
        if ((type != 0 && type != 5) || id.empty() || known_.contains(id) || known_.size() >= kKnownChannels) continue;
        std::string last = str(c, "last_message_id");
        known_[id] = Known{guild, last.empty() ? discord::snowflake_at(clock::now_ms()) : last};
        dirty_ = true;
      }
    if (auto ms = d.find("members"); ms != d.end() && ms->is_array())
      for (const auto& m : *ms)
        if (m.is_object() && m.contains("user") && str(m["user"], "id") == bot_.id && m.contains("roles") &&
            m["roles"].is_array()) {
          auto& roles = bot_.roles[guild];
          roles.clear();
          for (const auto& r : m["roles"])
            if (r.is_string()) roles.insert(r.get<std::string>());
        }
  } else if (t == "GUILD_MEMBER_UPDATE") {
    if (d.contains("user") && str(d["user"], "id") == bot_.id && d.contains("roles") && d["roles"].is_array()) {
      auto& roles = bot_.roles[str(d, "guild_id")];
      roles.clear();
      for (const auto& r : d["roles"])
        if (r.is_string()) roles.insert(r.get<std::string>());
    }
  } else if (t == "MESSAGE_CREATE") {
    std::string channel = str(d, "channel_id"), id = str(d, "id");
    if (!channel.empty() && !id.empty()) {
      auto& k = known_[channel];
      k.guild_id = str(d, "guild_id");
      if (k.last_id.empty() || discord::snowflake_less(k.last_id, id)) k.last_id = id;
      if (known_.size() > kKnownChannels) {  // forget the channel quiet the longest
        auto oldest = known_.begin();
        for (auto it = known_.begin(); it != known_.end(); ++it)
          if (discord::snowflake_less(it->second.last_id, oldest->second.last_id)) oldest = it;
        known_.erase(oldest);
      }
    }
    auto m = discord::map_message(d, bot_);
    if (m.envelope) {
      batch_.push_back(std::move(*m.envelope));
      newest_ms_ = std::max(newest_ms_, m.platform_ms);
    } else {
      log::debug("discord: message {} skipped ({})", id, discord::skip_name(m.skipped));
    }
  }
  // MESSAGE_UPDATE (edits) and everything else: nothing to do but the sequence.
}

bool DiscordChannel::backfill() {
  auto cancelled = [this] { return stopping_.load(); };
  std::vector<std::string> gone;
  bool ok = true;
  for (auto& [channel, k] : known_) {
    if (k.last_id.empty()) continue;
    for (;;) {
      std::string path = fmt::format("/channels/{}/messages?after={}&limit=100", channel, k.last_id);
      auto r = rest_->call("GET", path, Json(), cancelled);
      if (!r) {
        if (r.error().code == 403 || r.error().code == 404) {
          gone.push_back(channel);  // no access any more, or the channel was deleted
        } else {
          ok = false;
          set_state(ChannelState::Retrying,
                    fmt::format("backfilling channel {} failed: {}", channel, redact(r.error().description)));
        }
        break;
      }
      if (!r->is_array() || r->empty()) break;
      std::vector<Json> page(r->begin(), r->end());
      std::sort(page.begin(), page.end(), [](const Json& a, const Json& b) {
        return discord::snowflake_less(str(a, "id"), str(b, "id"));
      });
      for (const auto& m : page) {
        std::string id = str(m, "id");
        if (discord::snowflake_less(k.last_id, id)) k.last_id = id;
        auto mapped = discord::map_message(m, bot_, k.guild_id);
        if (mapped.envelope) {
          batch_.push_back(std::move(*mapped.envelope));
          newest_ms_ = std::max(newest_ms_, mapped.platform_ms);
        }
      }
      dirty_ = true;
      log::info("discord: backfilled {} message(s) of channel {} missed while the session was gone", page.size(), channel);
      if (!commit()) return false;
      if (page.size() < 100) break;
    }
    if (stopping_) return false;
  }
  for (auto& c : gone) known_.erase(c);
  if (!gone.empty()) dirty_ = true;
  return ok && commit();
}

DiscordChannel::Next DiscordChannel::connect_once(bool resume) {
  std::string base = resume && !session_.resume_url.empty() ? session_.resume_url : gateway_url_;
  while (base.ends_with('/')) base.pop_back();
  auto url = net::parse_websocket_url(base + "/?v=10&encoding=json");
  if (!url) {
    set_state(ChannelState::Retrying, fmt::format("the Gateway URL \"{}\" is not usable: {}", base, url.error().message));
    gateway_url_.clear();
    session_.resume_url.clear();
    return Next::Reconnect;
  }
  net::WebSocketOptions wo;
  wo.extra_ca_file = opts_.extra_ca_file;
  wo.proxy = opts_.proxy;
  wo.max_message = 64 << 20;  // a large guild's GUILD_CREATE is big
  wo.cancelled = [this] { return stopping_.load(); };
  auto c = net::WebSocket::connect(*url, wo);
  if (!c) {
    set_state(ChannelState::Retrying, fmt::format("cannot connect to the Discord Gateway: {}", c.error().error.message));
    return Next::Reconnect;
  }
  auto ws = std::move(*c);
  auto parse = [](const net::WebSocketEvent& ev) {
    auto j = Json::parse(ev.data, nullptr, false);
    return j.is_object() ? j : Json();
  };
  auto hello_deadline = Clock::now() + 20s;
  std::optional<net::WebSocketEvent> ev;
  while (!stopping_ && Clock::now() < hello_deadline && !(ev = ws->receive(200ms))) {
  }
  if (stopping_) return Next::Stop;
  if (!ev) {
    set_state(ChannelState::Retrying, "the Discord Gateway sent no HELLO within 20 s");
    return Next::Reconnect;
  }
  if (ev->kind != net::WebSocketEvent::Kind::Message) return on_close(*ev);
  Json hello = parse(*ev);
  if (hello.value("op", -1) != 10 || !hello.contains("d") || !hello["d"].is_object()) {
    set_state(ChannelState::Retrying, "the Discord Gateway's first message was not HELLO");
    return Next::Reconnect;
  }
  auto interval = std::chrono::milliseconds(hello["d"].value("heartbeat_interval", int64_t{41250}));
  if (interval < 100ms) interval = 100ms;

  std::string tok = token();
  Json hi = resume ? Json{{"op", 6}, {"d", {{"token", tok}, {"session_id", session_.id}, {"seq", session_.seq}}}}
                   : Json{{"op", 2},
                          {"d",
                           {{"token", tok},
                            {"intents", kIntents},
                            {"properties", {{"os", "linux"}, {"browser", "moat"}, {"device", "moat"}}}}}};
  std::string text = hi.dump();
  wipe(tok);
  (void)ws->send(std::move(text));
  if (resume) log::info("discord: resuming session {} from sequence {}", session_.id, session_.seq);

  auto beat = [&] {
    (void)ws->send(Json{{"op", 1}, {"d", session_.seq >= 0 ? Json(session_.seq) : Json()}}.dump());
  };
  auto next_beat = Clock::now() + std::chrono::duration_cast<Clock::duration>(interval * random_share());
  bool acked = true;
  auto leave = [&](Next n, uint16_t code, std::string_view why) {
    commit();
    ws->close(code, why);  // the destructor waits for the server's answer, at most close_timeout
    return n;
  };
  while (true) {
    if (stopping_) return leave(Next::Stop, 4000, "moat stopping");  // 4000: resumable by the next moatd
    auto now = Clock::now();
    if (now >= next_beat) {
      if (!acked) {
        set_state(ChannelState::Retrying,
                  fmt::format("no heartbeat ACK within {} ms: the connection is dead; resuming", interval.count()));
        return leave(Next::Reconnect, 4000, "heartbeat ACK missed");
      }
      beat();
      acked = false;
      next_beat = now + interval;
    }
    ev = ws->receive(std::min(next_beat, now + 200ms));
    if (!ev) continue;
    // Take what has arrived (up to a batch), then commit it with the cursor in one transaction.
    bool do_backfill = false;
    for (size_t n = 0; ev && n < kBatch; ++n, ev = ws->receive(Clock::now())) {
      if (ev->kind != net::WebSocketEvent::Kind::Message) {
        commit();
        return on_close(*ev);
      }
      Json p = parse(*ev);
      switch (p.value("op", -1)) {
        case 0: {
          bool was_ready = ready_;
          on_dispatch(p);
          if (!was_ready && ready_ && need_backfill_ && str(p, "t") == "READY") do_backfill = true;
          break;
        }
        case 11: acked = true; break;
        case 1:  // the server asks for a heartbeat now
          beat();
          break;
        case 7:
          set_state(ChannelState::Retrying, "Discord asked for a reconnect (op 7); resuming");
          return leave(Next::Reconnect, 4000, "reconnect requested");
        case 9: {
          bool resumable = p.value("d", false);
          set_state(ChannelState::Retrying, resumable ? "Discord invalidated the session (op 9, resumable); resuming"
                                                      : "Discord invalidated the session (op 9); identifying again, "
                                                        "then fetching what was missed");
          return leave(resumable ? Next::Reconnect : Next::Reidentify, 4000, "invalid session");
        }
        default: break;
      }
    }
    if (!commit()) return leave(Next::Reconnect, 4000, "store unavailable");
    if (do_backfill) {
      if (backfill()) need_backfill_ = false;
      else if (!cursor_loaded_) return leave(Next::Reconnect, 4000, "store unavailable");
    }
  }
}

void DiscordChannel::run() {
  int failures = 0;
  auto wait_for_fix = [this] {
    auto until = Clock::now() + kFatalRetry;
    while (Clock::now() < until && pause(1s) && !token_changed()) {
    }
    gateway_url_.clear();
  };
  while (!stopping_) {
    if (!load_token()) {
      wait_for_fix();
      continue;
    }
    if (!cursor_loaded_ && !load_cursor()) {
      if (!pause(opts_.backoff.delay(++failures))) break;
      continue;
    }
    if (gateway_url_.empty() && !fetch_gateway_url()) {
      if (status().state == ChannelState::Failed) wait_for_fix();
      else if (!pause(opts_.backoff.delay(++failures))) break;
      continue;
    }
    bool resume = !session_.id.empty() && session_.seq >= 0;
    ready_ = false;
    Next next = connect_once(resume);
    if (next == Next::Stop || stopping_) break;
    if (next == Next::Fatal) {
      wait_for_fix();
      failures = 0;
      continue;
    }
    if (next == Next::Reidentify) {
      session_ = {};
      dirty_ = true;
      need_backfill_ = true;
      if (!pause(random_between(opts_.reidentify_min, opts_.reidentify_max))) break;
      continue;
    }
    // Reconnect: at once after a connection that worked (op 7, a drop), with backoff after one that did not.
    failures = ready_ ? 0 : failures + 1;
    if (failures > 0 && !pause(opts_.backoff.delay(failures))) break;
  }
  set_state(ChannelState::Stopped);
}

// --- typing --------------------------------------------------------------------------------------

void DiscordChannel::live(const router::LiveEvent& ev) {
  if (ev.kind != "turn_started" && ev.kind != "turn_ended") return;
  {
    std::lock_guard g(typing_mu_);
    if (ev.kind == "turn_started") {
      ++typing_[ev.chat];
      typing_kick_ = true;
    } else if (auto it = typing_.find(ev.chat); it != typing_.end() && --it->second <= 0) {
      typing_.erase(it);
    }
  }
  wake_.notify_all();
}

void DiscordChannel::typing_loop() {
  std::map<std::string, Clock::time_point> last;  // chat -> when typing was last shown
  while (!stopping_) {
    std::vector<std::string> due;
    auto now = Clock::now();
    {
      std::lock_guard g(typing_mu_);
      typing_kick_ = false;
      for (auto it = last.begin(); it != last.end();) it = typing_.contains(it->first) ? std::next(it) : last.erase(it);
      for (auto& [chat, n] : typing_)
        if (auto it = last.find(chat); it == last.end() || now - it->second >= opts_.typing_every) due.push_back(chat);
    }
    for (auto& chat : due) {
      last[chat] = now;
      auto r = rest_->call("POST", fmt::format("/channels/{}/typing", chat), Json(), [this] { return stopping_.load(); });
      if (!r) log::debug("discord: typing in {}: {}", chat, redact(r.error().description));
    }
    std::unique_lock l(wait_mu_);
    wake_.wait_for(l, std::chrono::milliseconds(500), [this] {
      std::lock_guard g(typing_mu_);
      return stopping_.load() || typing_kick_;
    });
  }
}

// --- outbound ------------------------------------------------------------------------------------

router::DeliveryResult DiscordChannel::failure(const discord::ApiError& e, std::string_view what) {
  std::string text = fmt::format("{}: {}", what, redact(e.description));
  if (e.code == 401) {
    set_state(ChannelState::Failed,
              fmt::format("Discord refused the bot token in secret '{}' ({}); store the current one with 'moat secret "
                          "set {} --channel'",
                          opts_.token_secret, redact(e.description), opts_.token_secret));
    return router::delivery_failed(Error{ErrorKind::Unavailable, std::move(text)});
  }
  if (e.code == 400 || e.code == 403 || e.code == 404)  // refused content; no access; unknown channel
    return router::delivery_failed(Error{ErrorKind::InvalidInput, std::move(text)});
  return router::delivery_failed(Error{ErrorKind::Unavailable, std::move(text)}, e.retry_after);
}

router::DeliveryResult DiscordChannel::send_or_edit(const std::string& chat, const std::string& edit_id,
                                                    const std::string& text, const std::string& nonce,
                                                    const std::string& reply_to) {
  if (chat.empty() || chat.find_first_not_of("0123456789") != std::string::npos)
    return router::delivery_failed(
        Error{ErrorKind::InvalidInput, fmt::format("'{}' is not a Discord channel id (a number)", chat)});
  if (token().empty() && !load_token()) return router::delivery_failed(Error{ErrorKind::Unavailable, status().last_error});
  // Mentions in an agent's text notify no one (no @everyone from a prompt-injected reply).
  Json body{{"content", text}, {"allowed_mentions", {{"parse", Json::array()}, {"replied_user", false}}}};
  if (!edit_id.empty()) {
    // A message someone deleted is 404 (never deliverable as an edit): the router sends the reply anew.
    auto r = rest_->call("PATCH", fmt::format("/channels/{}/messages/{}", chat, edit_id), body);
    if (!r) return failure(r.error(), fmt::format("Discord did not take the edit of message {} in channel {}", edit_id, chat));
    return router::Delivered{edit_id};
  }
  if (!nonce.empty() && nonce.size() <= kNonceMax) {
    body["nonce"] = nonce;
    body["enforce_nonce"] = true;
  }
  if (!reply_to.empty())
    body["message_reference"] = Json{{"message_id", reply_to}, {"fail_if_not_exists", false}};
  auto r = rest_->call("POST", fmt::format("/channels/{}/messages", chat), body);
  if (!r) return failure(r.error(), fmt::format("Discord did not take the message for channel {}", chat));
  std::string id = r->is_object() ? str(*r, "id") : std::string();
  return router::Delivered{id};
}

router::DeliveryResult DiscordChannel::deliver(const router::Outbound& msg) {
  std::string edit = msg.part == 0 ? msg.edit_platform_id : std::string();
  return send_or_edit(msg.chat, edit, msg.text, msg.key, msg.part == 0 ? msg.reply_to : std::string());
}

router::DeliveryResult DiscordChannel::preview(const router::Preview& p) {
  if (p.text.empty()) return router::Delivered{p.platform_id};  // nothing to show yet
  return send_or_edit(p.chat, p.platform_id, p.text, p.key, {});
}

}  // namespace moat::channels

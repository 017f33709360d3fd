#pragma once
// The Telegram channel ("telegram"): a bot, long polling the Bot API's getUpdates on a thread of its
// own, replying with sendMessage. docs/channels.md has the setup; telegram_update.h the mapping.
//
// Inbound, exactly once into the store. getUpdates(offset) returns the updates not yet confirmed; the
// envelopes they carry and the next offset (the last update_id + 1) are committed in one transaction
// (AcceptBatchFn = Router::accept_with_cursor), and only then is the next getUpdates sent with that
// offset, which is what confirms them to Telegram. A crash between the fetch and the commit leaves the
// stored offset where it was: the next moatd fetches the same updates again and stores them once (an
// envelope's key is "<chat>:<message>", so a repeat would be dropped by the router's dedupe too).
// At start the offset is the stored cursor (Router::channel_cursor); none means "what Telegram holds".
//
// Outbound: sendMessage, 4096 UTF-16 units a message (the router splits longer replies, router/split.h).
// The platform's message id is returned as Delivered::platform_id. A 429 returns its
// parameters.retry_after to the router, which waits that long before the next try; 400 (chat not
// found, a text Telegram refuses) and 403 (the bot was blocked or removed) are never deliverable;
// 401, 5xx and network errors are retried. Telegram has no idempotency key: a repeat of the same key
// in this process is dropped here, but moatd killed between Telegram's answer and the outbox's
// delivered mark sends that one part again after the restart (at most one repeat per part).
//
// Failures are states, never a silent death (ChannelStatus): a token Telegram refuses (401) is
// "failed" with what to do, and the channel asks again (getMe) with backoff up to a minute, re-reading
// the token from the vault, and at once when the secret changes (looked at each second), so
// `moat secret set NAME --channel` fixes it without a restart;
// a 409 (another getUpdates poller with this token, or a webhook set) is "conflict" and retried with
// backoff; everything else is "retrying". The token is in every request's path: it never appears in a
// log line, an error or a status (redacted, should an error ever quote it).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <deque>

#include "base/result.h"
#include "channels/channel_status.h"
#include "channels/telegram/telegram_update.h"
#include "net/backoff.h"
#include "net/http_client.h"
#include "net/url.h"
#include "router/channel.h"
#include "router/router.h"

namespace moat::channels {

// Router::accept_with_cursor and Router::channel_cursor, as callbacks so the channel can be built and
// tested without the daemon.
using AcceptBatchFn = std::function<Result<std::vector<Result<router::Acceptance>>>(std::vector<router::Envelope>,
                                                                                  router::ChannelCursor)>;
using CursorFn = std::function<Result<std::optional<Json>>()>;
// The bot token, read from the vault's channel secret when the channel (re)connects.
using TokenFn = std::function<Result<std::string>()>;

struct TelegramOptions {
  std::string api_base = "https://api.telegram.org";
  std::string token_secret;  // the vault secret's name, for messages
  std::chrono::milliseconds poll_timeout{25000};  // getUpdates long-poll timeout
  std::chrono::milliseconds request_timeout{15000};  // every other call
  std::filesystem::path extra_ca_file;
  net::ProxySettings proxy;
  // After a failure: 1 s, 2 s, 4 s ... up to 30 s, a fifth of jitter (several moatds on one bot).
  net::Backoff backoff{.initial = std::chrono::milliseconds(1000), .factor = 2.0, .cap = std::chrono::milliseconds(30000),
                       .jitter = 0.2};
  // After a refused token: up to a minute between tries (the owner has to act).
  std::chrono::milliseconds refused_token_cap{60000};
};

class TelegramChannel : public router::Channel {
 public:
  TelegramChannel(TokenFn token, AcceptBatchFn accept, CursorFn cursor, TelegramOptions opts);
  ~TelegramChannel() override;  // stop()s
  TelegramChannel(const TelegramChannel&) = delete;
  TelegramChannel& operator=(const TelegramChannel&) = delete;

  std::string_view name() const override { return "telegram"; }
  router::DeliveryResult deliver(const router::Outbound& msg) override;
  router::MessageLimit message_limit() const override { return {4096, router::TextUnit::Utf16}; }

  // Starts the polling thread (after the router has started: what it accepts is queued at once).
  void start();
  // Stops polling (an open long poll is cancelled within ~100 ms) and joins the thread.
  void stop();

  ChannelStatus status() const;

 private:
  struct ApiError {
    int code = 0;  // HTTP status; 0 for a network or protocol failure
    std::string description;
    std::chrono::milliseconds retry_after{0};
  };
  using ApiResult = std::expected<Json, ApiError>;

  void run();
  // One Bot API call: POST <api_base>/bot<token>/<method> with a JSON body; the "result" on ok.
  ApiResult call(std::string_view method, const Json& params, std::chrono::milliseconds timeout);
  bool identify();  // getMe; false on failure (status set)
  // One getUpdates and the commit of what it brought; false on failure (status set, wait computed).
  bool poll_once(std::chrono::milliseconds& wait);
  bool load_token();
  bool token_changed();  // the vault holds another token than the one last used

  void set_state(ChannelState s, std::string error = {});
  std::string redact(std::string text) const;
  std::string describe(const ApiError& e) const;
  // Sleeps up to `d`, waking early on stop(); false when stopping.
  bool pause(std::chrono::milliseconds d);

  TokenFn token_fn_;
  AcceptBatchFn accept_;
  CursorFn cursor_;
  TelegramOptions opts_;
  net::Url base_;
  std::string base_error_;  // api_base did not parse
  std::unique_ptr<net::HttpClient> client_;

  mutable std::mutex token_mu_;
  std::string token_;  // wiped when replaced and at destruction

  std::atomic<bool> stopping_{false};
  std::mutex wait_mu_;
  std::condition_variable wake_;
  std::thread thread_;

  std::optional<int64_t> offset_;  // poll thread only
  telegram::BotIdentity bot_;      // poll thread writes before Connected; deliver() does not need it

  mutable std::mutex status_mu_;
  ChannelStatus status_;

  std::mutex sent_mu_;
  std::unordered_map<std::string, std::string> sent_;  // key -> platform message id, this process
  std::deque<std::string> sent_order_;                 // bounds sent_
};

}  // namespace moat::channels

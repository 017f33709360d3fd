#pragma once
// The Discord channel ("discord"): one bot on the Gateway v10 (a TLS WebSocket, net/websocket.h) on a
// thread of its own, replying through the REST API (discord_rest.h). One bot per config and one
// Gateway connection: no sharding. docs/channels.md has the setup; discord_message.h the mapping.
//
// Gateway. GET /gateway/bot gives the URL; HELLO gives the heartbeat interval, and the first heartbeat
// goes after interval * a random share (Discord asks for that jitter so that a fleet reconnecting at
// once does not beat in step), then one per interval. A heartbeat not ACKed (op 11) by the next one is
// a dead ("zombied") connection: it is closed with 4000 (not 1000/1001, which would end the session)
// and resumed. IDENTIFY asks for GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT; READY
// gives the session id, the resume URL and the bot's user id; GUILD_CREATE the bot's roles in each
// guild (for role mentions). After a drop (1006, a read error, 4000-4009 other than 4004/4007/4009),
// op 7 (reconnect) or op 9 with d=true, the channel RESUMEs on the resume URL with the session id and
// the last sequence: Discord replays what came after it. Op 9 with d=false (or close 4007/4009):
// the session is gone; after 1-5 s the channel IDENTIFYs afresh and then backfills, for each Discord
// channel it has seen a message in, GET /channels/{id}/messages?after=<last id> so that nothing said
// meanwhile is missed. Op 1 (heartbeat request) is answered at once. Fatal closes — 4004 (the token
// was refused), 4010-4014 (shard, sharding, API version, intents; 4014: MESSAGE_CONTENT not enabled)
// — stop the channel as "failed" with the fix instead of a reconnect loop; it tries again only when the
// token secret changes (looked at each second). Other failures reconnect with net::Backoff.
//
// Inbound, exactly once into the store. The cursor — session id, resume URL, sequence, and per Discord
// channel the last message id (and its guild) — is committed in one transaction with the envelopes of
// the events up to that sequence (AcceptBatchFn = Router::accept_with_cursor). A crash before the
// commit leaves the stored sequence behind: the next moatd RESUMEs from it (or, if Discord dropped
// the session, identifies and backfills from the last ids), the events come again, and the router's
// dedupe on "<channel id>:<message id>" drops what was stored already.
//
// Outbound: POST /channels/{id}/messages with nonce = the outbox key and enforce_nonce, so a send
// retried after a crash (between Discord's answer and the outbox's delivered mark) gets back the
// message already made instead of a second one — within Discord's nonce window, a few minutes. 2000
// characters a message (the router splits longer replies). A delivery with edit_platform_id, and a
// preview after its first, edit (PATCH) instead (a 404 there, a deleted message, is never deliverable
// as an edit: the router sends the reply as a new message). Rate limits per route bucket and the global one are
// kept by DiscordRest; a 429's retry_after is returned to the router. 403 and 404 (no access, unknown
// channel) and 400 are never deliverable; 401 makes the channel "failed". While a turn runs for a
// chat, POST /channels/{id}/typing every 8 s (Discord shows it for 10 s), from a thread of its own.
//
// The token is in the Authorization header only; it never appears in a log line, an error or a status.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "base/result.h"
#include "channels/accept_fn.h"
#include "channels/attachment_fetch.h"
#include "channels/channel_status.h"
#include "channels/discord/discord_message.h"
#include "channels/discord/discord_rest.h"
#include "net/backoff.h"
#include "net/websocket.h"
#include "router/channel.h"
#include "router/router.h"

namespace moat::channels {

struct DiscordOptions {
  std::string api_base = "https://discord.com/api/v10";
  std::string token_secret;  // the vault secret's name, for messages
  std::chrono::milliseconds request_timeout{15000};
  std::filesystem::path extra_ca_file;
  net::ProxySettings proxy;
  // After a failure: 1 s, 2 s, 4 s ... up to 30 s, a fifth of jitter.
  net::Backoff backoff{.initial = std::chrono::milliseconds(1000), .factor = 2.0, .cap = std::chrono::milliseconds(30000),
                       .jitter = 0.2};
  // Op 9 with d=false: Discord asks for a random 1-5 s before identifying again.
  std::chrono::milliseconds reidentify_min{1000}, reidentify_max{5000};
  std::chrono::milliseconds typing_every{8000};
  std::chrono::milliseconds preview_interval{1500};  // Discord allows 5 edits per 5 s per channel
  // Where files attached to messages are downloaded before the messages are stored; null: they are
  // listed to the agent as unavailable.
  AttachmentStage* attachments = nullptr;
  // One file's download at most: the Gateway thread waits for it (a heartbeat is due every ~41 s).
  std::chrono::milliseconds download_timeout{20000};
};

class DiscordChannel : public router::Channel {
 public:
  DiscordChannel(TokenFn token, AcceptBatchFn accept, CursorFn cursor, DiscordOptions opts);
  ~DiscordChannel() override;  // stop()s
  DiscordChannel(const DiscordChannel&) = delete;
  DiscordChannel& operator=(const DiscordChannel&) = delete;

  std::string_view name() const override { return "discord"; }
  router::DeliveryResult deliver(const router::Outbound& msg) override;
  router::MessageLimit message_limit() const override { return {2000, router::TextUnit::CodePoints}; }
  void live(const router::LiveEvent& ev) override;
  std::chrono::milliseconds preview_interval() const override { return opts_.preview_interval; }
  router::DeliveryResult preview(const router::Preview& p) override;

  // Starts the Gateway and typing threads (after the router has started).
  void start();
  // Closes the Gateway connection (resumable: 4000) and joins the threads.
  void stop();

  ChannelStatus status() const;

 private:
  // How one Gateway connection ended, and so what the next one does.
  enum class Next { Reconnect, Reidentify, Fatal, Stop };
  struct Session {
    std::string id, resume_url;
    int64_t seq = -1;  // -1: none yet
  };
  struct Known {  // a Discord channel the bot has seen messages in, for backfill
    std::string guild_id;  // empty: a DM
    std::string last_id;
  };

  void run();
  void typing_loop();
  bool load_token();
  bool token_changed();
  std::string token() const;
  bool load_cursor();
  Json cursor_json() const;
  bool fetch_gateway_url();
  // One connection: connect, HELLO, IDENTIFY or RESUME, then events until it ends.
  Next connect_once(bool resume);
  Next on_close(const net::WebSocketEvent& end);
  // Handles one dispatch (op 0); messages join `batch_`.
  void on_dispatch(const Json& p);
  // Commits batch_ with the cursor (one transaction); false when the store refused.
  bool commit();
  // GET each known channel's messages after its last id, oldest first, into the store.
  bool backfill();

  router::DeliveryResult send_or_edit(const std::string& chat, const std::string& edit_id, const std::string& text,
                                      const std::string& nonce, const std::string& reply_to);
  router::DeliveryResult failure(const discord::ApiError& e, std::string_view what);

  void set_state(ChannelState s, std::string error = {});
  std::string redact(std::string text) const;
  bool pause(std::chrono::milliseconds d);  // false when stopping

  TokenFn token_fn_;
  AcceptBatchFn accept_;
  CursorFn cursor_;
  DiscordOptions opts_;
  std::unique_ptr<discord::DiscordRest> rest_;
  std::unique_ptr<net::HttpClient> files_;  // attachment downloads (Discord's CDN, no token)
  // Downloads the files of the envelopes about to be stored (channels/attachment_fetch.h).
  void download_attachments(std::vector<router::Envelope>& batch);

  mutable std::mutex token_mu_;
  std::string token_;

  std::atomic<bool> stopping_{false};
  std::mutex wait_mu_;
  std::condition_variable wake_;
  std::thread thread_, typing_thread_;

  // Gateway thread only.
  std::string gateway_url_;
  bool cursor_loaded_ = false;
  Session session_;
  std::map<std::string, Known> known_;
  bool need_backfill_ = false;
  bool ready_ = false;  // this connection got READY or RESUMED
  discord::BotIdentity bot_;
  std::vector<router::Envelope> batch_;
  bool dirty_ = false;  // the sequence moved since the last commit
  int64_t newest_ms_ = 0;

  // Typing: chat -> turns running there.
  std::mutex typing_mu_;
  std::map<std::string, int> typing_;
  bool typing_kick_ = false;  // a turn started: show typing at once

  mutable std::mutex status_mu_;
  ChannelStatus status_;
};

}  // namespace moat::channels

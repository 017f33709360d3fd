#pragma once
// moatd's composition root: builds every part from the config and wires the API verbs to them.
// This is the only place that knows all the parts.
#include <atomic>
#include <memory>
#include <thread>

#include "api/server.h"
#include "audit/audit_log.h"
#include "audit/checkpointer.h"
#include "agent/agent_runtime.h"
#include "base/unique_fd.h"
#include "config/config.h"
#include "channels/discord/discord_channel.h"
#include "channels/telegram/telegram_channel.h"
#include "daemon/channel_directory.h"
#include "store/attachment_stage.h"
#include "channels/web/web_chat.h"
#include "channels/webhook/webhook_channel.h"
#include "daemon/agent_directory.h"
#include "daemon/terminal_channel.h"
#include "daemon/egress_door.h"
#include "egress/cert_authority.h"
#include "egress/gateway.h"
#include "egress/policy_book.h"
#include "egress/usage_meter.h"
#include "image/image_store.h"
#include "net/http_server.h"
#include "router/router.h"
#include "sandbox/manager.h"
#include "store/database.h"
#include "vault/vault.h"

namespace moat {

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> create(const Config& config, std::filesystem::path init_binary);
  ~Daemon();

  // Reconciles, then serves the API until stop() (from a signal or the daemon.stop verb).
  Status run();
  void stop();

  SandboxManager& sandboxes() { return *manager_; }
  // The bearer token of an agent's webhook: HMAC-SHA256 of the agent's name under
  // <state>/webhook.key, so no token is stored anywhere and removing the key file rotates them all.
  std::string webhook_token(std::string_view agent) const;

 private:
  Daemon(const Config& config) : config_(config) {}
  void register_handlers();
  void idle_loop();
  Status start_egress();
  Status start_agents();
  Status start_channels();
  void start_telegram(const TelegramConfig& tc);
  void start_discord(const DiscordConfig& dc);
  std::vector<channels::ChannelStatus> channel_statuses() const;
  // `moat channel add|rm`: checked and stored by channel_dir_, started or stopped at once.
  Result<channels::ChannelStatus> add_channel(const std::string& name, const Json& settings, const std::string& actor);
  Status remove_channel(const std::string& name, const std::string& actor);

  Config config_;
  UniqueFd state_lock_;  // flock on <state>/moatd.lock: one moatd per state directory
  std::optional<Database> db_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<Checkpointer> checkpointer_;  // signs the chain's head; goes before the log
  std::optional<image::ImageStore> images_;
  // Egress: declared before the manager so that they outlive it (it calls the door on stop).
  std::unique_ptr<vault::Vault> vault_;
  std::optional<egress::CertAuthority> ca_;
  std::unique_ptr<egress::PolicyBook> policies_;
  std::unique_ptr<egress::UsageMeter> usage_;
  std::unique_ptr<egress::Gateway> gateway_;
  std::unique_ptr<EgressDoor> door_;
  std::unique_ptr<SandboxManager> manager_;
  // Agents: declared after the manager so that the router (and its turns, which use sandboxes)
  // stops and goes before it.
  std::unique_ptr<AttachmentStage> attachments_;  // channels stage downloads here; turns copy them in
  std::unique_ptr<AgentDirectory> agents_;
  std::unique_ptr<agent::AgentRuntime> runtime_;
  TerminalChannel terminal_;
  std::unique_ptr<channels::WebChat> web_;
  std::unique_ptr<channels::WebhookChannel> webhook_;
  std::string webhook_key_;  // tokens are HMAC(key, agent): see webhook_token()
  // moat.toml's [channels.NAME] and those added with `moat channel add`.
  std::unique_ptr<ChannelDirectory> channel_dir_;
  // Guards which platform channels run (telegram_, discord_): `moat channel add|rm` change it while serving.
  mutable std::mutex platform_mu_;
  // [channels.telegram]; its polling thread is stopped before the router (it accepts into it).
  std::unique_ptr<channels::TelegramChannel> telegram_;
  // [channels.discord]; its Gateway thread is stopped before the router, like Telegram's.
  std::unique_ptr<channels::DiscordChannel> discord_;
  // Channels removed with `moat channel rm`, stopped but kept until the router is gone (a delivery,
  // a turn or a preview may still hold them).
  std::vector<std::unique_ptr<router::Channel>> retired_channels_;
  std::unique_ptr<router::Router> router_;
  // The channels' listener goes first: no request may reach a router that is gone.
  std::unique_ptr<net::HttpServer> http_;
  api::Server server_;
  std::atomic<bool> stopping_{false};
  std::thread idle_thread_;
};

}  // namespace moat

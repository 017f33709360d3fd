#pragma once
// moat.toml: one typed schema. Every key is documented in docs/config.md; an unknown key or a value
// of the wrong type is an error naming the key and its line.
#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/json.h"
#include "base/result.h"
#include "config/audit_sink.h"
#include "config/limits.h"

namespace moat {

// Defaults for sandboxes created without explicit flags.
struct SandboxDefaults {
  std::string image = "default";
  std::string runtime = "runc";
  uint64_t disk_bytes = 10ull << 30;
  uint64_t memory_bytes = 2ull << 30;
  uint64_t pids = 1024;
  double cpus = 1.0;
  // The block I/O throttle on each sandbox's disk (see kLimitTable and docs/config.md for how these
  // were chosen): high enough that an agent's ordinary work never meets it, low enough that one
  // sandbox's storm leaves the device to its neighbours.
  IoThrottle<uint64_t> io = kDefaultIoThrottle;
};

struct DaemonConfig {
  std::filesystem::path socket;                            // empty = <state_dir>/moatd.sock
  std::chrono::milliseconds idle_timeout{30 * 60 * 1000};  // 0 = never stop idle sandboxes
  std::chrono::milliseconds stop_grace{10 * 1000};         // TERM, then KILL after this
  std::string log_level = "info";
  // Where the host's passwd, group, subuid and subgid live (moatd --etc-dir; not in moat.toml: tests
  // point it at a copy so that they never write the host's own files).
  std::filesystem::path etc_dir = "/etc";
};

// A base-URL route of the egress gateway: plain HTTP to http://127.0.0.1:3128/<name>/... inside a
// sandbox is forwarded over TLS to `upstream` with the agent's bound credentials set.
struct EgressRoute {
  std::string upstream;  // "https://host[:port][/path-prefix]"
  std::string env;       // variable set to the route's base URL inside every sandbox; may be empty
};

// Egress settings of one agent; unset fields fall back to [egress].
struct AgentEgressConfig {
  std::optional<std::string> preset;
  std::vector<std::string> allow, deny;  // rule texts, checked by the gateway when moatd starts
  std::optional<uint64_t> max_connections, max_bytes_per_day;
};

struct EgressConfig {
  std::string preset = "balanced";
  std::vector<std::string> allow, deny;  // rules for every agent, before the agent's own
  uint64_t max_connections = 256;        // per agent, at once
  uint64_t max_bytes_per_day = 20ull << 30;  // per agent, up + down, UTC day
  std::filesystem::path upstream_ca_file;    // extra CAs for upstream TLS, beside the host's store
  std::chrono::milliseconds connect_timeout{10 * 1000};
  std::map<std::string, EgressRoute> routes = {
      {"anthropic", {"https://api.anthropic.com", "ANTHROPIC_BASE_URL"}},
      {"openai", {"https://api.openai.com/v1", "OPENAI_BASE_URL"}},
  };
  std::map<std::string, AgentEgressConfig> agents;  // from [agents.NAME.egress]
};

// An agent declared in moat.toml: [agents.NAME] minus its egress table. The keys are the agent's
// spec fields (docs/config.md); config checks only that they are TOML values, and the agent component
// validates them when moatd starts (errors name the file, line and key).
struct AgentDeclaration {
  Json fields;   // TOML table as JSON
  int line = 0;  // of the [agents.NAME] header, for errors
};

struct RouterConfig {
  uint64_t max_concurrent_turns = 8;
  uint64_t max_attempts = 3;
  std::chrono::milliseconds retry_base{1000};
};

// [attachments] (docs/config.md): the host-side staging area channels download attachments into,
// from which a turn copies them into the agent's sandbox (store/attachment_stage.h).
struct AttachmentsConfig {
  uint64_t max_file = 20ull << 20;   // a larger attachment is noted as unavailable; the turn still runs
  uint64_t max_total = 1ull << 30;   // the whole area
  std::chrono::milliseconds keep{7LL * 24 * 3600 * 1000};  // staged files are pruned after this
};

// Where the webhook channel may POST replies (docs/config.md, [web]).
enum class WebhookCallbacks {
  Loopback,  // programs on this host only: 127.0.0.0/8, ::1, localhost
  Public,    // public addresses only, never this host's or a private network's
};

struct WebConfig {
  std::string listen = "127.0.0.1:7700";  // web chat and webhooks; "off" disables
  WebhookCallbacks webhook_callbacks = WebhookCallbacks::Loopback;
};

// Signed checkpoints of the audit chain (docs/security.md, "Signed audit checkpoints").
struct AuditConfig {
  uint64_t checkpoint_records = 1000;                         // sign after this many new records
  std::chrono::milliseconds checkpoint_interval{60 * 1000};  // or after this long, if any
  AuditSink sink;                                            // where checkpoints are shipped; None = nowhere
};

// [channels.telegram] (docs/channels.md): a Telegram bot, long polling getUpdates or called by Telegram
// at a webhook moatd serves on its [web] listener (behind a reverse proxy with public HTTPS).
enum class TelegramMode { Polling, Webhook };

struct TelegramConfig {
  std::string token_secret;  // name of a channel secret in the vault (moat secret set NAME --channel)
  TelegramMode mode = TelegramMode::Polling;
  std::string api_base = "https://api.telegram.org";  // overridable for tests and Bot API servers of one's own
  std::chrono::milliseconds poll_timeout{25 * 1000};  // getUpdates long-poll timeout, 1s..50s
  // Webhook mode: the public URL Telegram POSTs updates to. https:// on port 443, 80, 88 or 8443 (the
  // ones Telegram calls), or http:// to a loopback host (a Bot API server of one's own, tests). Its
  // path starts with /telegram; moatd serves that same path on its [web] listener.
  std::string webhook_url;
  std::string webhook_path;  // webhook_url's path (without the query): the route moatd serves
  int line = 0;  // of the [channels.telegram] header, for errors
};

// [channels.discord] (docs/channels.md): one Discord bot over the Gateway (no sharding). The gateway's
// URL comes from GET <api_base>/gateway/bot; the intents are the channel's own, not configured.
struct DiscordConfig {
  std::string token_secret;  // name of a channel secret in the vault (moat secret set NAME --channel)
  std::string api_base = "https://discord.com/api/v10";  // overridable for tests
  int line = 0;  // of the [channels.discord] header, for errors
};

struct ChannelsConfig {
  std::optional<TelegramConfig> telegram;  // absent: no Telegram channel
  std::optional<DiscordConfig> discord;    // absent: no Discord channel
};

struct Config {
  std::filesystem::path state_dir = "/var/lib/moat";
  DaemonConfig daemon;
  SandboxDefaults sandbox;
  EgressConfig egress;
  RouterConfig router;
  AttachmentsConfig attachments;
  WebConfig web;
  AuditConfig audit;
  ChannelsConfig channels;
  std::map<std::string, AgentDeclaration> agents;  // from [agents.NAME]

  std::filesystem::path socket_path() const { return daemon.socket.empty() ? state_dir / "moatd.sock" : daemon.socket; }
  std::filesystem::path config_path() const { return state_dir / "moat.toml"; }
};

// Parses TOML text; `origin` names the file in error messages.
Result<Config> parse_config(std::string_view toml_text, std::string_view origin, Config base = {});

// The state directory from --state-dir, else $MOAT_STATE_DIR, else /var/lib/moat.
std::filesystem::path resolve_state_dir(std::string_view flag_value);

// Loads <state_dir>/moat.toml (or `explicit_path`); a missing default file means all defaults.
Result<Config> load_config(const std::filesystem::path& state_dir, const std::filesystem::path& explicit_path = {});

}  // namespace moat

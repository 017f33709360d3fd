#include "daemon/daemon.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <openssl/hmac.h>
#include <openssl/crypto.h>


#include "base/fs.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "base/ids.h"
#include "vault/private_file.h"
#include "config/limits.h"
#include "daemon/agent_hooks.h"
#include "daemon/agent_verbs.h"
#include "daemon/audit_verbs.h"
#include "daemon/exec_relay.h"
#include "daemon/policy_verbs.h"
#include "daemon/secret_verbs.h"
#include "daemon/channel_verbs.h"
#include "net/url.h"
#include "wire/frame.h"
#include "wire/messages.h"

namespace moat {
using namespace std::chrono_literals;

namespace {

// Each runtime's version as it reports it, read at the first status (a runtime is not upgraded under
// a running moatd without a restart): what docs/security.md's runtime CVE table is checked against.
const Json& runtime_versions() {
  static const Json versions = [] {
    Json out = Json::object();
    for (const char* name : {"runc", "runsc", "crun"}) {
      auto r = run_process({name, "--version"});
      if (!r || !r->ok()) {
        out[name] = "not installed";
        continue;
      }
      // "runc version 1.1.5+ds1" and "commit: 1.1.5+ds1-1+deb12u1" (Debian's package revision).
      std::string text = r->out, first = text.substr(0, text.find('\n'));
      auto commit = text.find("commit: ");
      if (commit != std::string::npos) first += ", " + text.substr(commit, text.find('\n', commit) - commit);
      out[name] = first;
    }
    return out;
  }();
  return versions;
}


Json record_json(const SandboxRecord& r) {
  return Json{{"name", r.name},
              {"id", r.id},
              {"image", r.image},
              {"image_digest", r.image_digest},
              {"runtime", r.runtime},
              {"state", r.state},
              {"uid_base", r.uid_base},
              {"disk_bytes", r.disk_bytes},
              {"memory_bytes", r.memory_bytes},
              {"pids", r.pids_limit},
              {"cpus", r.cpus},
              {"io_read_bps", r.io_read_bps},
              {"io_write_bps", r.io_write_bps},
              {"io_read_iops", r.io_read_iops},
              {"io_write_iops", r.io_write_iops},
              {"created_at_ms", r.created_at_ms},
              {"last_used_at_ms", r.last_used_at_ms}};
}

Json image_json(const image::ImageInfo& i) {
  return Json{{"name", i.name}, {"digest", "sha256:" + i.digest}, {"size_bytes", i.size_bytes},
              {"source", i.source}, {"created_at", i.created_at}};
}

constexpr uint64_t kMaxCopyBytes = 1ull << 30;

std::string actor_of(const Json& args) { return args.value("actor", std::string("cli")); }

// An exec whose moat-init went away before the command's exit: the client is told why in one error
// frame (instead of finding its connection closed, as if moatd had died), and a sandbox that died
// under the command is recorded as stopped.
void report_lost_guest(SandboxManager& m, const std::string& name, int client_fd, const std::string& actor) {
  std::string why =
      m.reap_if_died(name, actor)
          ? fmt::format("sandbox '{}' stopped while the command was running (its processes were killed from outside "
                        "the sandbox, e.g. by the OOM killer); its files are kept: 'moat sandbox start {}' or the "
                        "next exec starts it again",
                        name, name)
          : fmt::format("moat-init in sandbox '{}' closed the connection before the command finished; see moatd.log",
                        name);
  (void)wire::write_frame(client_fd, wire::FrameType::Error, wire::encode(wire::ErrorMsg{why}));
}

}  // namespace

Result<std::unique_ptr<Daemon>> Daemon::create(const Config& config, std::filesystem::path init_binary) {
  std::unique_ptr<Daemon> d(new Daemon(config));  // private constructor; ownership is immediate
  if (auto st = SandboxManager::check_state_dir(config.state_dir); !st) return std::unexpected(st.error());
  if (auto st = make_dirs(config.state_dir, 0711); !st) return std::unexpected(st.error());
  // One moatd per state directory, for its whole life: two would race on every sandbox, the store and
  // the socket. The lock goes with the process, so a moatd killed with -9 frees it at once.
  d->state_lock_ = UniqueFd(::open((config.state_dir / "moatd.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!d->state_lock_) return fail(ErrorKind::Internal, "cannot open {}/moatd.lock: {}", config.state_dir.string(), strerror(errno));
  if (::flock(d->state_lock_.get(), LOCK_EX | LOCK_NB) != 0)
    return fail(ErrorKind::Conflict, "another moatd is already using the state directory {}; stop it first ('moat daemon stop')",
                config.state_dir.string());
  auto db = Database::open(config.state_dir / "moat.db");
  if (!db) return wrap(db.error(), "opening the store");
  d->db_.emplace(std::move(*db));
  d->audit_ = std::make_unique<AuditLog>(*d->db_);
  auto checkpointer = start_checkpointer(config, *d->db_, *d->audit_);
  if (!checkpointer) return std::unexpected(checkpointer.error());
  d->checkpointer_ = std::move(*checkpointer);
  auto images = image::ImageStore::open(config.state_dir / "images");
  if (!images) return std::unexpected(images.error());
  d->images_.emplace(std::move(*images));
  ManagerOptions mo;
  mo.state_dir = config.state_dir;
  mo.init_binary = std::move(init_binary);
  mo.defaults = config.sandbox;
  mo.stop_grace = config.daemon.stop_grace;
  mo.idle_timeout = config.daemon.idle_timeout;
  mo.etc_dir = config.daemon.etc_dir;
  if (auto st = d->start_egress(); !st) return std::unexpected(st.error());
  d->manager_ = std::make_unique<SandboxManager>(mo, *d->db_, *d->audit_, *d->images_);
  d->manager_->set_observer(d->door_.get());
  if (auto st = d->manager_->prepare(); !st) return std::unexpected(st.error());
  if (auto st = d->start_agents(); !st) return std::unexpected(st.error());
  d->register_handlers();
  return d;
}

// The vault (key file apart from the store), the interception CA (made at first start), policies,
// usage, the gateway's event loop, and the door every sandbox gets to it.
Status Daemon::start_egress() {
  auto vault = vault::Vault::open(*db_, config_.state_dir / "vault.key");
  if (!vault) return wrap(vault.error(), "opening the vault");
  vault_ = std::move(*vault);
  for (const auto& change : vault_->migrations()) {
    log::warn("vault: {}", change);
    if (auto r = audit_->append("secret.binding_migrated", "moatd", "vault", Json{{"change", change}}); !r)
      log::warn("audit: could not record a binding migration: {}", r.error().message);
  }
  auto ca = egress::CertAuthority::open_or_create(config_.state_dir / "egress");
  if (!ca) return wrap(ca.error(), "preparing the egress CA");
  ca_.emplace(std::move(*ca));
  auto policies = egress::PolicyBook::open(*db_, config_.egress);
  if (!policies) return std::unexpected(policies.error());
  policies_ = std::move(*policies);
  usage_ = std::make_unique<egress::UsageMeter>(*db_);
  auto gateway = egress::Gateway::start(egress::GatewayParts{config_.egress, *policies_, *usage_, *vault_, *ca_, *audit_});
  if (!gateway) return wrap(gateway.error(), "starting the egress gateway");
  gateway_ = std::move(*gateway);
  door_ = std::make_unique<EgressDoor>(config_.state_dir, config_.egress, *gateway_, *policies_, *vault_, ca_->ca_cert_pem());
  return {};
}

// Agents (moat.toml and the store), the runtime that runs their turns, and the router in front of
// them. The router starts in run(), after reconcile, so that turns find their sandboxes adopted.
Status Daemon::start_agents() {
  auto agents = AgentDirectory::open(*db_, config_);
  if (!agents) return std::unexpected(agents.error());
  agents_ = std::move(*agents);
  auto current_spec = [this](const std::string& name) { return agents_->get(name); };
  const auto& ac = config_.attachments;
  auto stage = AttachmentStage::open(config_.state_dir / "attachments",
                                     AttachmentLimits{.max_file = ac.max_file, .max_total = ac.max_total, .keep = ac.keep});
  if (!stage) return wrap(stage.error(), "preparing the attachment staging area");
  attachments_ = std::move(*stage);
  attachments_->prune();
  auto hooks = make_runtime_hooks(config_, *vault_, *manager_, current_spec);
  hooks.read_attachment = [stage = attachments_.get()](std::string_view staged) { return stage->read(staged); };
  runtime_ = std::make_unique<agent::AgentRuntime>(*db_, *audit_, std::move(hooks));
  router::RouterOptions ro;
  ro.max_concurrent_turns = config_.router.max_concurrent_turns;
  ro.max_attempts = static_cast<int>(config_.router.max_attempts);
  ro.retry_base = config_.router.retry_base;
  router_ = std::make_unique<router::Router>(*db_, *audit_, ro);
  auto rules_of = [](const AgentDirectory::Snapshot& snap) {
    std::vector<router::RouteRule> rules;
    rules.reserve(snap->size());
    for (auto& [name, spec] : *snap) rules.push_back(route_rule_for(spec));
    return rules;
  };
  router_->set_rules(rules_of(agents_->snapshot()));
  agents_->on_change([this, rules_of](const AgentDirectory::Snapshot& snap) { router_->set_rules(rules_of(snap)); });
  router_->set_turn_runner([this](const router::Turn& turn, const router::LiveSink& live) -> Result<router::TurnResult> {
    auto spec = agents_->get(turn.agent);
    if (!spec) return fail(ErrorKind::InvalidInput, "{}", spec.error().message);
    return runtime_->run_turn(*spec, turn, live);
  });
  router_->add_channel(terminal_);
  return start_channels();
}

// The web chat and the webhook channel, on one HTTP listener ([web] listen). Serving starts in
// run(), with the router.
Status Daemon::start_channels() {
  auto key_path = config_.state_dir / "webhook.key";
  auto key = vault::read_private_file(key_path, "the webhook key", 64);
  if (!key && key.error().kind == ErrorKind::NotFound) {
    std::string hex = random_hex_id(32);
    auto st = vault::create_private_file(key_path, hex, "the webhook key");
    OPENSSL_cleanse(hex.data(), hex.size());
    if (!st && st.error().kind != ErrorKind::Conflict)
      return wrap(st.error(), "preparing webhook tokens");
    key = vault::read_private_file(key_path, "the webhook key", 64);
  }
  if (!key) return wrap(key.error(), "preparing webhook tokens");
  webhook_key_ = std::string(key->view());
  auto accept = [this](router::Envelope e) { return router_->accept(std::move(e)); };
  auto agent_list = [this] {
    std::vector<channels::AgentInfo> out;
    for (auto& [name, spec] : *agents_->snapshot()) {
      std::string what = spec.command.empty() ? fmt::format("{} {}", spec.model.provider, spec.model.model)
                                              : "command agent";
      out.push_back({name, what});
    }
    return out;
  };
  web_ = std::make_unique<channels::WebChat>(accept, agent_list);
  channels::WebhookOptions hook_options;
  hook_options.callbacks = config_.web.webhook_callbacks == WebhookCallbacks::Public
                               ? channels::CallbackScope::Public
                               : channels::CallbackScope::Loopback;
  hook_options.extra_ca_file = config_.egress.upstream_ca_file;  // as for the providers
  webhook_ = std::make_unique<channels::WebhookChannel>(
      accept,
      [this](std::string_view agent) {
        return agents_->exists(agent) ? std::vector<std::string>{webhook_token(agent)} : std::vector<std::string>{};
      },
      hook_options);
  // What the two channels had shown before a restart (their latest messages and replies, up to
  // kRestored of each); replies still undelivered come when the router starts. Without it the web
  // chat would open empty and a reply nobody polled would be gone.
  constexpr size_t kRestored = 20'000;
  if (auto h = router_->channel_history("web", kRestored, kRestored); h)
    web_->restore(*h);
  else
    log::warn("web chat: cannot read its history from the store ({}); conversations start empty", h.error().message);
  if (auto h = router_->channel_history("webhook", 0, kRestored); h)  // it shows replies only
    webhook_->restore(*h);
  else
    log::warn("webhook: cannot read its replies from the store ({}); polling starts empty", h.error().message);
  router_->add_channel(*web_);
  router_->add_channel(*webhook_);
  auto dir = ChannelDirectory::open(*db_, config_);
  if (!dir) return std::unexpected(dir.error());
  channel_dir_ = std::move(*dir);
  const auto effective = channel_dir_->effective();
  if (effective.telegram) start_telegram(*effective.telegram);
  if (effective.discord) start_discord(*effective.discord);
  if (config_.web.listen == "off") {
    if (effective.telegram && effective.telegram->mode == TelegramMode::Webhook)
      return fail(ErrorKind::InvalidInput,
                  "[channels.telegram] mode = \"webhook\" needs moatd's HTTP listener, but [web] listen = \"off\"; "
                  "set [web] listen to the address the reverse proxy forwards {} to",
                  effective.telegram->webhook_path);
    return {};
  }
  net::ServerOptions so;
  auto listen = net::parse_listen_address(config_.web.listen);
  if (!listen) return fail(ErrorKind::InvalidInput, "[web] listen = \"{}\": {}", config_.web.listen, listen.error().message);
  so.address = listen->host;
  so.port = listen->port;
  http_ = std::make_unique<net::HttpServer>(so);
  web_->register_routes(*http_);
  webhook_->register_routes(*http_);
  if (telegram_) telegram_->register_routes(*http_);  // webhook mode only
  return {};
}

// [channels.telegram]: the channel is made and registered now; it polls once the router runs. Its
// token is read from the vault's channel secret each time it (re)connects, never kept in the config.
void Daemon::start_telegram(const TelegramConfig& tc) {
  channels::TelegramOptions opts;
  opts.api_base = tc.api_base;
  opts.token_secret = tc.token_secret;
  opts.poll_timeout = tc.poll_timeout;
  if (tc.mode == TelegramMode::Webhook) {
    opts.webhook_url = tc.webhook_url;
    opts.webhook_path = tc.webhook_path;
  }
  opts.extra_ca_file = config_.egress.upstream_ca_file;  // as for the providers and webhook callbacks
  opts.proxy = net::ProxySettings::from_environment();
  opts.attachments = attachments_.get();
  std::string secret = tc.token_secret;
  telegram_ = std::make_unique<channels::TelegramChannel>(
      [this, secret]() -> Result<std::string> {
        auto v = vault_->channel_secret(secret);
        if (!v) return std::unexpected(v.error());
        return std::string(v->view());
      },
      [this](std::vector<router::Envelope> envelopes, router::ChannelCursor cursor) {
        return router_->accept_with_cursor(std::move(envelopes), std::move(cursor));
      },
      [this] { return router_->channel_cursor("telegram"); }, opts);
  router_->add_channel(*telegram_);
}

// [channels.discord]: made and registered now; it connects to the Gateway once the router runs. Its
// token is read from the vault's channel secret each time it connects, never kept in the config.
void Daemon::start_discord(const DiscordConfig& dc) {
  channels::DiscordOptions opts;
  opts.api_base = dc.api_base;
  opts.token_secret = dc.token_secret;
  opts.extra_ca_file = config_.egress.upstream_ca_file;  // as for the providers and Telegram
  opts.proxy = net::ProxySettings::from_environment();
  opts.attachments = attachments_.get();
  std::string secret = dc.token_secret;
  discord_ = std::make_unique<channels::DiscordChannel>(
      [this, secret]() -> Result<std::string> {
        auto v = vault_->channel_secret(secret);
        if (!v) return std::unexpected(v.error());
        return std::string(v->view());
      },
      [this](std::vector<router::Envelope> envelopes, router::ChannelCursor cursor) {
        return router_->accept_with_cursor(std::move(envelopes), std::move(cursor));
      },
      [this] { return router_->channel_cursor("discord"); }, opts);
  router_->add_channel(*discord_);
}

Result<channels::ChannelStatus> Daemon::add_channel(const std::string& name, const Json& settings,
                                                    const std::string& actor) {
  std::lock_guard g(platform_mu_);
  // A webhook path is a route of the HTTP listener, which takes its routes when moatd starts.
  if (name == "telegram" && settings.value("mode", std::string()) == "webhook")
    return fail(ErrorKind::InvalidInput,
                "a Telegram channel in webhook mode cannot be added to a running moatd (its webhook path is served "
                "from start): add it in polling mode, or declare [channels.telegram] with mode = \"webhook\" in "
                "moat.toml and restart moatd");
  auto cfg = channel_dir_->add(name, settings, actor);
  if (!cfg) return std::unexpected(cfg.error());
  channels::ChannelStatus status;
  if (cfg->telegram) {
    start_telegram(*cfg->telegram);
    telegram_->start();
    status = telegram_->status();
  }
  if (cfg->discord) {
    start_discord(*cfg->discord);
    discord_->start();
    status = discord_->status();
  }
  (void)audit_->append("channel.add", actor, name, Json{{"settings", settings}});
  return status;
}

Status Daemon::remove_channel(const std::string& name, const std::string& actor) {
  std::lock_guard g(platform_mu_);
  if (auto s = channel_dir_->remove(name); !s) return s;
  router_->remove_channel(name);
  if (name == "telegram" && telegram_) {
    telegram_->stop();
    retired_channels_.push_back(std::move(telegram_));
  }
  if (name == "discord" && discord_) {
    discord_->stop();
    retired_channels_.push_back(std::move(discord_));
  }
  (void)audit_->append("channel.rm", actor, name, Json::object());
  return {};
}

std::vector<channels::ChannelStatus> Daemon::channel_statuses() const {
  std::vector<channels::ChannelStatus> out;
  for (const char* name : {"terminal", "web", "webhook"}) {
    channels::ChannelStatus s;
    s.name = name;
    s.kind = "built-in";
    s.state = channels::ChannelState::Serving;
    if (std::string_view(name) != "terminal")
      s.identity = http_ ? http_->base_url() : std::string("[web] listen = \"off\"");
    out.push_back(std::move(s));
  }
  std::lock_guard g(platform_mu_);
  if (telegram_) out.push_back(telegram_->status());
  if (discord_) out.push_back(discord_->status());
  return out;
}

std::string Daemon::webhook_token(std::string_view agent) const {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), webhook_key_.data(), static_cast<int>(webhook_key_.size()),
       reinterpret_cast<const unsigned char*>(agent.data()), agent.size(), mac, &len);
  std::string out;
  for (unsigned int i = 0; i < len; ++i) out += fmt::format("{:02x}", mac[i]);
  return out;
}

Daemon::~Daemon() {
  stop();
  if (telegram_) telegram_->stop();
  if (discord_) discord_->stop();
  if (idle_thread_.joinable()) idle_thread_.join();
}

void Daemon::stop() {
  stopping_ = true;
  server_.stop();
}

void Daemon::idle_loop() {
  while (!stopping_) {
    for (int i = 0; i < 10 && !stopping_; ++i) std::this_thread::sleep_for(100ms);
    if (stopping_) break;
    if (size_t n = manager_->stop_idle(); n > 0) log::info("stopped {} idle sandbox(es)", n);
    if (auto r = vault_->flush_usage(); !r) log::warn("vault: recording last use: {}", r.error().message);
    if (auto st = usage_->flush(); !st) log::warn("egress: recording usage: {}", st.error().message);
  }
}

Status Daemon::run() {
  if (auto st = server_.listen(config_.socket_path()); !st) return st;
  if (auto st = manager_->reconcile(); !st) log::warn("reconcile: {}", st.error().message);
  (void)audit_->append("daemon.start", "daemon", "", Json{{"pid", getpid()}});
  log::info("moatd listening on {} (state {})", config_.socket_path().string(), config_.state_dir.string());
  idle_thread_ = std::thread([this] { idle_loop(); });
  if (auto st = router_->start(); !st) {
    stop();
    return wrap(st.error(), "starting the router");
  }
  if (http_) {
    if (auto st = http_->start(); !st) {
      stop();
      if (http_) http_->stop();
      router_->stop();
      return wrap(st.error(), fmt::format("serving the web chat on {} (set [web] listen in moat.toml, or \"off\")",
                                          config_.web.listen));
    }
    log::info("web chat on {}", http_->base_url());
  }
  {
    std::lock_guard g(platform_mu_);
    if (telegram_) telegram_->start();
    if (discord_) discord_->start();
  }
  server_.serve();
  {
    std::lock_guard g(platform_mu_);
    if (telegram_) telegram_->stop();  // nothing more accepted into a router that is stopping
    if (discord_) discord_->stop();
  }
  // Give in-flight requests a moment to answer before the process exits; sandboxes keep running
  // and are adopted by the next moatd.
  for (int i = 0; i < 50 && server_.active_connections() > 0; ++i) std::this_thread::sleep_for(100ms);
  router_->stop();
  (void)vault_->flush_usage();
  (void)usage_->flush();
  gateway_->flush_audit();
  (void)audit_->append("daemon.stop", "daemon", "", Json{{"pid", getpid()}});
  if (auto st = checkpointer_->stop(); !st) log::error("audit checkpoint at stop: {}", st.error().message);
  return {};
}

void Daemon::register_handlers() {
  auto& s = server_;
  auto& m = *manager_;
  register_secret_verbs(s, *vault_, *audit_);
  register_policy_verbs(s, *policies_, *usage_, *audit_, [this](const std::string& agent) {
    return agents_->exists(agent) || manager_->get(agent).has_value() || config_.egress.agents.contains(agent);
  });
  register_agent_verbs(s, AgentVerbParts{*agents_, *router_, *runtime_, terminal_, *manager_, *audit_,
                                         [this](const std::string& agent) {
                                           std::string base = http_ ? http_->base_url() : std::string("(web listener off)");
                                           return Json{{"url", fmt::format("{}/hooks/{}", base, agent)},
                                                       {"token", webhook_token(agent)}};
                                         }});

  s.handle("daemon.status", [this](const Json&, api::Session&) -> Result<Json> {
    auto all = manager_->list();
    if (!all) return std::unexpected(all.error());
    int running = 0;
    for (auto& r : *all) running += r.state == "running";
    return Json{{"pid", getpid()}, {"state_dir", config_.state_dir.string()},
                {"socket", config_.socket_path().string()}, {"sandboxes", all->size()}, {"running", running},
                {"agents", agents_->snapshot()->size()}, {"web_url", http_ ? http_->base_url() : std::string()},
                {"dumpable", prctl(PR_GET_DUMPABLE) != 0}, {"runtimes", runtime_versions()}};
  });
  s.handle("daemon.stop", [this](const Json& args, api::Session&) -> Result<Json> {
    if (args.value("all", false)) {
      auto all = manager_->list();
      if (all) {
        for (auto& r : *all) {
          if (r.state == "running") (void)manager_->stop(r.name, actor_of(args), "daemon stop");
        }
      }
    }
    stop();
    return Json{{"stopping", true}};
  });

  s.handle("sandbox.create", [&m](const Json& a, api::Session& session) -> Result<Json> {
    CreateRequest req;
    req.name = a.at("name").get<std::string>();
    req.image = a.value("image", "");
    req.runtime = a.value("runtime", "");
    for (auto st : {read_limit(a, "disk", Limit::DiskBytes, req.disk_bytes),
                    read_limit(a, "memory", Limit::MemoryBytes, req.memory_bytes),
                    read_limit(a, "pids", Limit::Pids, req.pids), read_limit(a, "cpus", Limit::Cpus, req.cpus),
                    read_io_limits(a, req.io)})
      if (!st) return std::unexpected(st.error());
    for (auto& opt : a.value("insecure", std::vector<std::string>{})) {
      if (opt == "no-seccomp") req.hardening.seccomp = false;
      else if (opt == "all-caps") req.hardening.drop_capabilities = false;
      else if (opt == "no-userns") req.hardening.user_namespace = false;
      else if (opt == "new-privileges") req.hardening.no_new_privileges = false;
      else if (opt == "unmask-paths") req.hardening.mask_paths = false;
      else
        return fail(ErrorKind::InvalidInput,
                    "unknown --insecure option '{}': choose no-seccomp, all-caps, no-userns, new-privileges or unmask-paths",
                    opt);
    }
    auto rec = m.create(req, actor_of(a));
    if (!rec) return std::unexpected(rec.error());
    if (a.value("start", false)) {
      if (auto st = m.start(rec->name, actor_of(a)); !st) {
        (void)m.remove(rec->name, true, actor_of(a));
        return std::unexpected(st.error());
      }
    }
    auto fresh = m.get(rec->name);
    if (!fresh) return std::unexpected(fresh.error());
    return record_json(*fresh);
  });
  auto simple = [&](const char* verb, auto fn) {
    s.handle(verb, [&m, fn](const Json& a, api::Session&) -> Result<Json> {
      std::string name = a.at("name").get<std::string>();
      if (auto st = fn(m, name, a); !st) return std::unexpected(st.error());
      auto rec = m.get(name);
      if (!rec) return Json{{"name", name}, {"removed", true}};
      return record_json(*rec);
    });
  };
  simple("sandbox.start", [](SandboxManager& m, const std::string& n, const Json& a) { return m.start(n, actor_of(a)); });
  simple("sandbox.stop", [](SandboxManager& m, const std::string& n, const Json& a) { return m.stop(n, actor_of(a)); });
  simple("sandbox.restart", [](SandboxManager& m, const std::string& n, const Json& a) { return m.restart(n, actor_of(a)); });
  simple("sandbox.reset", [](SandboxManager& m, const std::string& n, const Json& a) {
    return m.reset(n, a.value("wipe_workspace", false), actor_of(a));
  });
  simple("sandbox.rm", [](SandboxManager& m, const std::string& n, const Json& a) {
    return m.remove(n, a.value("force", false), actor_of(a));
  });
  s.handle("sandbox.migrate-ids", [&m](const Json& a, api::Session& session) -> Result<Json> {
    return m.migrate_ids(a.at("name").get<std::string>(), actor_of(a),
                         [&](std::string_view line) { session.progress_line(line); });
  });
  s.handle("sandbox.inspect", [&m](const Json& a, api::Session&) { return m.inspect(a.at("name").get<std::string>()); });
  s.handle("sandbox.ls", [&m](const Json&, api::Session&) -> Result<Json> {
    auto all = m.list();
    if (!all) return std::unexpected(all.error());
    Json out = Json::array();
    for (auto& r : *all) out.push_back(record_json(r));
    return out;
  });

  s.handle("exec", [&m](const Json& a, api::Session& session) -> Result<Json> {
    wire::ExecStart req;
    req.argv = a.at("argv").get<std::vector<std::string>>();
    req.env = a.value("env", std::vector<std::string>{});
    req.cwd = a.value("cwd", std::string("/"));
    req.uid = a.value("uid", 0u);
    req.gid = a.value("gid", 0u);
    req.tty = a.value("tty", false);
    req.rows = a.value("rows", uint16_t{24});
    req.cols = a.value("cols", uint16_t{80});
    req.timeout_ms = a.value("timeout_ms", uint64_t{0});
    std::string name = a.at("name").get<std::string>();
    auto ch = m.open_exec(name, req, actor_of(a));
    if (!ch) return std::unexpected(ch.error());
    if (auto st = session.respond_ok(Json{{"sandbox", name}}); !st) {
      ExecRecord lost;
      lost.lost = true;
      m.finish_exec(*ch, req, lost, actor_of(a));
      return Json();
    }
    auto rec = relay_exec(session.fd(), ch->fd.get());
    m.finish_exec(*ch, req, rec, actor_of(a));
    if (rec.guest_gone) report_lost_guest(m, name, session.fd(), actor_of(a));
    return Json();
  });

  // file.put: the request announces the size; after an OK the client sends FileData frames and
  // FileEnd, and a second ApiResponse says whether the write succeeded.
  s.handle("file.put", [&m](const Json& a, api::Session& session) -> Result<Json> {
    std::string name = a.at("name").get<std::string>();
    std::string path = a.at("path").get<std::string>();
    uint64_t size = a.at("size").get<uint64_t>();
    if (size > kMaxCopyBytes)
      return fail(ErrorKind::InvalidInput, "file too large to copy through moatd ({} bytes; the limit is {})", size,
                  kMaxCopyBytes);
    if (auto st = m.get(name); !st) return std::unexpected(st.error());
    if (auto st = session.respond_ok(Json{{"ready", true}}); !st) return Json();
    std::string data;
    data.reserve(size);
    for (;;) {
      auto f = wire::read_frame(session.fd());
      if (!f) return Json();
      if (f->type == wire::FrameType::FileEnd) break;
      if (f->type != wire::FrameType::FileData || data.size() + f->payload.size() > size) return Json();
      data += f->payload;
    }
    auto st = m.put_file(name, path, data, a.value("mode", 0644u), actor_of(a));
    Json resp = st ? api::ok_response(Json{{"bytes", data.size()}}) : api::error_response(st.error());
    (void)wire::write_frame(session.fd(), wire::FrameType::ApiResponse, resp.dump());
    return Json();
  });
  // file.get: FileData frames as ApiProgress would be JSON; the contents go as raw FileData frames
  // before the final ApiResponse.
  s.handle("file.get", [&m](const Json& a, api::Session& session) -> Result<Json> {
    auto data = m.get_file(a.at("name").get<std::string>(), a.at("path").get<std::string>(), actor_of(a));
    if (!data) return std::unexpected(data.error());
    std::string_view rest = *data;
    while (!rest.empty()) {
      auto chunk = rest.substr(0, wire::kMaxChunk);
      if (!wire::write_frame(session.fd(), wire::FrameType::FileData, chunk)) return Json();
      rest.remove_prefix(chunk.size());
    }
    return Json{{"bytes", data->size()}};
  });

  s.handle("image.build", [this](const Json& a, api::Session& session) -> Result<Json> {
    std::string name = a.value("name", std::string("default"));
    if (name != "default" && !a.value("any_name", true))
      return fail(ErrorKind::InvalidInput, "only 'default' can be built");
    auto info = images_->build_default(name, [&](std::string_view line) { session.progress_line(line); });
    if (!info) return std::unexpected(info.error());
    (void)audit_->append("image.build", actor_of(a), name, Json{{"digest", info->digest}});
    return image_json(*info);
  });
  s.handle("image.import", [this](const Json& a, api::Session& session) -> Result<Json> {
    std::string name = a.at("name").get<std::string>();
    std::string path = a.at("path").get<std::string>();
    auto info = images_->import_tarball(name, path, [&](std::string_view line) { session.progress_line(line); });
    if (!info) return std::unexpected(info.error());
    (void)audit_->append("image.import", actor_of(a), name, Json{{"digest", info->digest}, {"path", path}});
    return image_json(*info);
  });
  s.handle("image.ls", [this](const Json&, api::Session&) -> Result<Json> {
    auto all = images_->list();
    if (!all) return std::unexpected(all.error());
    Json out = Json::array();
    for (auto& i : *all) out.push_back(image_json(i));
    return out;
  });
  s.handle("image.rm", [this](const Json& a, api::Session&) -> Result<Json> {
    std::string name = a.at("name").get<std::string>();
    auto st = images_->remove(name, [this](const std::string& digest) { return manager_->image_in_use(digest); });
    if (!st) return std::unexpected(st.error());
    (void)audit_->append("image.rm", actor_of(a), name, Json::object());
    return Json{{"name", name}, {"removed", true}};
  });

  register_audit_verbs(s, *db_, *checkpointer_);
  register_channel_verbs(s, *router_, [this] { return channel_statuses(); },
                         ChannelAdmin{[this](const std::string& name, const Json& settings, const std::string& actor) {
                                        return add_channel(name, settings, actor);
                                      },
                                      [this](const std::string& name, const std::string& actor) {
                                        return remove_channel(name, actor);
                                      }});
}

}  // namespace moat

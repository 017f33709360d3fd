#include <gtest/gtest.h>

#include "config/config.h"
#include "config/units.h"

using namespace moat;

TEST(Config, DefaultsWhenEmpty) {
  auto c = parse_config("", "moat.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->sandbox.disk_bytes, 10ull << 30);
  EXPECT_EQ(c->sandbox.memory_bytes, 2ull << 30);
  EXPECT_EQ(c->sandbox.pids, 1024u);
  EXPECT_EQ(c->sandbox.runtime, "runc");
}

TEST(Config, ParsesEveryKey) {
  auto c = parse_config(R"(
[daemon]
socket = "/run/moat.sock"
idle_timeout = "5m"
stop_grace = "3s"
log_level = "debug"
[sandbox]
image = "tiny"
runtime = "runsc"
disk = "1GiB"
memory = 536870912
pids = 64
cpus = 0.5
io_read_bps = "100MiB"
io_write_bps = 52428800
io_read_iops = 2000
io_write_iops = 1000
)", "moat.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->daemon.socket, "/run/moat.sock");
  EXPECT_EQ(c->daemon.idle_timeout, std::chrono::minutes(5));
  EXPECT_EQ(c->daemon.stop_grace, std::chrono::seconds(3));
  EXPECT_EQ(c->sandbox.runtime, "runsc");
  EXPECT_EQ(c->sandbox.disk_bytes, 1ull << 30);
  EXPECT_EQ(c->sandbox.memory_bytes, 536870912u);
  EXPECT_EQ(c->sandbox.pids, 64u);
  EXPECT_DOUBLE_EQ(c->sandbox.cpus, 0.5);
  EXPECT_EQ(c->sandbox.io, (IoThrottle<uint64_t>{100ull << 20, 50ull << 20, 2000, 1000}));
  auto bad = parse_config("[sandbox]\nio_write_iops = 0\n", "moat.toml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("moat.toml:2"), std::string::npos) << bad.error().message;
  EXPECT_NE(bad.error().message.find("allowed 16 to 1000000000 I/O operations per second"), std::string::npos)
      << bad.error().message;
}

TEST(Config, UnknownKeyNamesKeyAndLine) {
  auto c = parse_config("[sandbox]\nimage = \"x\"\nmemroy = \"1G\"\n", "moat.toml");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("moat.toml:3"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("sandbox.memroy"), std::string::npos) << c.error().message;
}

TEST(Config, UnknownTableAndBadValuesAreErrors) {
  auto t = parse_config("[sandboxes]\nx=1\n", "moat.toml");
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message.find("sandboxes"), std::string::npos);
  auto v = parse_config("[sandbox]\nruntime = \"docker\"\n", "moat.toml");
  ASSERT_FALSE(v);
  EXPECT_NE(v.error().message.find("moat.toml:2"), std::string::npos) << v.error().message;
  auto syntax = parse_config("[sandbox\n", "moat.toml");
  ASSERT_FALSE(syntax);
  EXPECT_NE(syntax.error().message.find("moat.toml:1"), std::string::npos) << syntax.error().message;
}

TEST(Units, SizesAndDurations) {
  EXPECT_EQ(*parse_size("10GiB"), 10ull << 30);
  EXPECT_EQ(*parse_size("512M"), 512ull << 20);
  EXPECT_EQ(*parse_size("1024"), 1024u);
  EXPECT_FALSE(parse_size("lots"));
  EXPECT_FALSE(parse_size("1 furlong"));
  EXPECT_EQ(*parse_duration("30m"), std::chrono::minutes(30));
  EXPECT_EQ(*parse_duration("250ms"), std::chrono::milliseconds(250));
  EXPECT_FALSE(parse_duration("soon"));
  EXPECT_EQ(format_size(2ull << 30), "2GiB");
  EXPECT_EQ(format_duration(std::chrono::minutes(30)), "30m");
}

TEST(ConfigParse, EgressTablesRoutesAndAgents) {
  auto c = parse_config(R"(
[egress]
preset = "locked"
allow = ["api.example.com:443"]
deny = ["*.evil.example"]
max_connections = 8
max_bytes_per_day = "1GiB"
upstream_ca_file = "/etc/moat/upstream-ca.pem"
connect_timeout = "3s"

[egress.routes.internal]
upstream = "https://llm.internal:8443/v1"
env = "INTERNAL_URL"

[agents.builder.egress]
preset = "open"
allow = ["10.0.0.5:5432"]
max_connections = 2
)", "moat.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->egress.preset, "locked");
  EXPECT_EQ(c->egress.allow, std::vector<std::string>{"api.example.com:443"});
  EXPECT_EQ(c->egress.max_bytes_per_day, 1ull << 30);
  EXPECT_EQ(c->egress.connect_timeout, std::chrono::seconds(3));
  EXPECT_EQ(c->egress.routes.at("internal").upstream, "https://llm.internal:8443/v1");
  EXPECT_TRUE(c->egress.routes.contains("anthropic"));  // defaults stay
  EXPECT_EQ(c->egress.agents.at("builder").preset, "open");
  EXPECT_EQ(c->egress.agents.at("builder").max_connections, 2u);
}

TEST(ConfigParse, EgressMistakesNameKeyAndLine) {
  auto bad_preset = parse_config("[egress]\npreset = \"wide\"\n", "moat.toml");
  ASSERT_FALSE(bad_preset);
  EXPECT_NE(bad_preset.error().message.find("moat.toml:2"), std::string::npos) << bad_preset.error().message;
  auto bad_route = parse_config("[egress.routes.x]\nupstream = \"http://plain\"\n", "moat.toml");
  ASSERT_FALSE(bad_route);
  EXPECT_NE(bad_route.error().message.find("https://"), std::string::npos) << bad_route.error().message;
  auto bad_agent_key = parse_config("[agents.a.egress]\nallowed = []\n", "moat.toml");
  ASSERT_FALSE(bad_agent_key);
  EXPECT_NE(bad_agent_key.error().message.find("agents.a.egress.allowed"), std::string::npos) << bad_agent_key.error().message;
  auto bad_list = parse_config("[egress]\nallow = \"x\"\n", "moat.toml");
  ASSERT_FALSE(bad_list);
}

TEST(ConfigParse, AgentsRouterAndWeb) {
  auto c = parse_config(R"(
[router]
max_concurrent_turns = 4
max_attempts = 5
retry_base = "250ms"

[web]
listen = "127.0.0.1:8800"

[agents.helper]
system_prompt = "be brief"
senders = ["telegram:42"]
model = { provider = "openai", model = "gpt-4o" }

[agents.helper.egress]
preset = "locked"
)", "moat.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->router.max_concurrent_turns, 4u);
  EXPECT_EQ(c->router.max_attempts, 5u);
  EXPECT_EQ(c->router.retry_base, std::chrono::milliseconds(250));
  EXPECT_EQ(c->web.listen, "127.0.0.1:8800");
  const auto& decl = c->agents.at("helper");
  EXPECT_EQ(decl.line, 10);
  EXPECT_EQ(decl.fields["system_prompt"], "be brief");
  EXPECT_EQ(decl.fields["senders"][0], "telegram:42");
  EXPECT_EQ(decl.fields["model"]["provider"], "openai");
  EXPECT_FALSE(decl.fields.contains("egress"));  // that goes to the egress policy
  EXPECT_EQ(c->egress.agents.at("helper").preset, "locked");

  auto bad = parse_config("[web]\nlisten = \"7700\"\n", "moat.toml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("moat.toml:2: web.listen"), std::string::npos) << bad.error().message;
  auto unknown = parse_config("[router]\nmax_turns = 3\n", "moat.toml");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("max_concurrent_turns"), std::string::npos) << unknown.error().message;
}

// Found by fuzz/fuzz_config: toml++ 3.3 reaches undefined behaviour when it asks whether some
// non-ASCII characters are whitespace, so it never sees non-ASCII bytes (toml_text.h). What the file
// says comes through unchanged, in keys and strings of every kind, and mistakes are still named by line.
TEST(ConfigParse, NonAsciiComesThroughAndTheParserNeverSeesIt) {
  auto ok = parse_config(
      "\xef\xbb\xbf# caf\xc3\xa9 \xef\xb9\xbf\n[sandbox]\nimage = \"caf\xc3\xa9 \xef\xb9\xbf\"\n"
      "[agents.a]\nsystem_prompt = \"\"\"\xe3\x81\x82\\\n  \xef\xb9\xb7\"\"\"\n"
      "[agents.b]\nsystem_prompt = '''\xc3\xa9''\xc3\xa9'''\n"
      "[agents.\"d\xc3\xa9j\xc3\xa0\"]\nchats = [ \"\xc3\xa9\",\n  '\xc3\xa9' ]\n",
      "moat.toml");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->sandbox.image, "caf\xc3\xa9 \xef\xb9\xbf");
  EXPECT_EQ(ok->agents.at("a").fields["system_prompt"], "\xe3\x81\x82\xef\xb9\xb7");
  EXPECT_EQ(ok->agents.at("b").fields["system_prompt"], "\xc3\xa9''\xc3\xa9");
  ASSERT_TRUE(ok->agents.contains("d\xc3\xa9j\xc3\xa0"));
  EXPECT_EQ(ok->agents.at("d\xc3\xa9j\xc3\xa0").fields["chats"], Json::array({"\xc3\xa9", "\xc3\xa9"}));

  for (auto [bad, want] : {std::pair{"[sandbox]\nimage = \"tiny\"\n\xef\xb9\xbf\n", "moat.toml:3:"},    // between tokens
                           std::pair{"[sandbox]\nimage = \"tiny\"\n\xc3\xa9 = 1\n", "unknown key 'sandbox.\xc3\xa9'"},
                           std::pair{"[sandbox]\nimage = \"tiny\"\nx = \"\\\xc3\xa9\"\n", "moat.toml:3:"},  // after a backslash
                           std::pair{"[sandbox]\nimage = \"tiny\"\nx = -\"\xc2\xb8\"\n", "moat.toml:3:"},  // in a number
                           std::pair{"[sandbox]\nimage = \"tiny\"\nx = \"\xff\"\n", "moat.toml:3: the file is not valid UTF-8"}}) {
    auto c = parse_config(bad, "moat.toml");
    ASSERT_FALSE(c) << bad;
    EXPECT_EQ(c.error().kind, ErrorKind::InvalidInput);
    EXPECT_NE(c.error().message.find(want), std::string::npos) << c.error().message;
    EXPECT_EQ(c.error().message.find("moatU"), std::string::npos) << "a placeholder leaked: " << c.error().message;
  }
}

TEST(ConfigParse, AuditCheckpointsAndSink) {
  auto d = parse_config("", "moat.toml");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->audit.checkpoint_records, 1000u);
  EXPECT_EQ(d->audit.checkpoint_interval, std::chrono::seconds(60));
  EXPECT_EQ(d->audit.sink.kind, AuditSink::Kind::None);
  auto c = parse_config(
      "[audit]\ncheckpoint_records = 50\ncheckpoint_interval = \"5s\"\nsink = \"/var/log/moat/cp.jsonl\"\n", "moat.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->audit.checkpoint_records, 50u);
  EXPECT_EQ(c->audit.checkpoint_interval, std::chrono::seconds(5));
  EXPECT_EQ(c->audit.sink.kind, AuditSink::Kind::File);
  EXPECT_EQ(c->audit.sink.file, "/var/log/moat/cp.jsonl");
  EXPECT_EQ(c->audit.sink.text(), "/var/log/moat/cp.jsonl");

  auto sys = parse_config("[audit]\nsink = \"syslog+tcp://Logs.Example.:5514\"\n", "moat.toml");
  ASSERT_TRUE(sys) << sys.error().message;
  EXPECT_EQ(sys->audit.sink.kind, AuditSink::Kind::SyslogTcp);
  EXPECT_EQ(sys->audit.sink.host, "logs.example");
  EXPECT_EQ(sys->audit.sink.port, 5514);
  EXPECT_EQ(sys->audit.sink.text(), "syslog+tcp://logs.example:5514");
  auto tls = parse_config("[audit]\nsink_ca_file = \"/etc/moat/logs-ca.pem\"\nsink = \"syslog+tls://logs.example:6514\"\n",
                          "moat.toml");
  ASSERT_TRUE(tls) << tls.error().message;
  EXPECT_EQ(tls->audit.sink.kind, AuditSink::Kind::SyslogTls);
  EXPECT_EQ(tls->audit.sink.ca_file, "/etc/moat/logs-ca.pem") << "kept whichever key comes first";
  EXPECT_EQ(tls->audit.sink.text(), "syslog+tls://logs.example:6514");
  auto ca_alone = parse_config("[audit]\nsink = \"/var/log/cp.jsonl\"\nsink_ca_file = \"/etc/ca.pem\"\n", "moat.toml");
  ASSERT_FALSE(ca_alone);
  EXPECT_NE(ca_alone.error().message.find("audit.sink_ca_file is only for a TLS syslog sink"), std::string::npos)
      << ca_alone.error().message;
  auto ca_rel = parse_config("[audit]\nsink_ca_file = \"ca.pem\"\n", "moat.toml");
  ASSERT_FALSE(ca_rel);
  EXPECT_NE(ca_rel.error().message.find("moat.toml:2: audit.sink_ca_file: must be an absolute path"), std::string::npos)
      << ca_rel.error().message;
  auto v6 = parse_audit_sink("syslog+tcp://[::1]:601");
  ASSERT_TRUE(v6) << v6.error().message;
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->text(), "syslog+tcp://[::1]:601");
  for (auto [bad, says] : std::vector<std::pair<std::string, std::string>>{
           {"syslog+tcp://logs.example", "names no port"},
           {"syslog+tls://logs.example", "expected \"syslog+tls://HOST:PORT\""},
           {"syslog+tcp://logs.example:0", "is not a port"},
           {"syslog+tcp://logs.example:514/x", "no path"},
           {"syslog+tcp://user@logs.example:514", "no path, query or user"},
           {"syslog+udp://logs.example:514", "must be an absolute path"},
           {"https://logs.example/in", "syslog+tcp://HOST:PORT"}}) {
    auto r = parse_config(fmt::format("[audit]\nsink = \"{}\"\n", bad), "moat.toml");
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message.find("moat.toml:2: audit.sink: "), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(says), std::string::npos) << bad << ": " << r.error().message;
  }

  auto rel = parse_config("[audit]\nsink = \"cp.jsonl\"\n", "moat.toml");
  ASSERT_FALSE(rel);
  EXPECT_NE(rel.error().message.find("moat.toml:2: audit.sink: must be an absolute path"), std::string::npos)
      << rel.error().message;
  auto zero = parse_config("[audit]\ncheckpoint_records = 0\n", "moat.toml");
  ASSERT_FALSE(zero);
  EXPECT_NE(zero.error().message.find("positive integer"), std::string::npos) << zero.error().message;
  auto unknown = parse_config("[audit]\nsinks = \"/x\"\n", "moat.toml");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("known keys in [audit]: checkpoint_records, checkpoint_interval, sink, sink_ca_file"),
            std::string::npos)
      << unknown.error().message;
}

TEST(ConfigParse, TelegramChannel) {
  auto none = parse_config("", "moat.toml");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->channels.telegram);
  auto c = parse_config("[channels.telegram]\ntoken_secret = \"tg-bot\"\n", "moat.toml");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->channels.telegram);
  EXPECT_EQ(c->channels.telegram->token_secret, "tg-bot");
  EXPECT_EQ(c->channels.telegram->mode, TelegramMode::Polling);
  EXPECT_EQ(c->channels.telegram->api_base, "https://api.telegram.org");
  EXPECT_EQ(c->channels.telegram->poll_timeout, std::chrono::seconds(25));
  auto full = parse_config("[channels.telegram]\ntoken_secret = \"tg\"\nmode = \"polling\"\n"
                           "api_base = \"http://127.0.0.1:8081/\"\npoll_timeout = \"5s\"\n",
                           "moat.toml");
  ASSERT_TRUE(full) << full.error().message;
  EXPECT_EQ(full->channels.telegram->api_base, "http://127.0.0.1:8081");
  EXPECT_EQ(full->channels.telegram->poll_timeout, std::chrono::seconds(5));

  // Each mistake is one error naming the file, line and field, and what to write instead.
  auto err = [](std::string_view toml) {
    auto r = parse_config(toml, "moat.toml");
    EXPECT_FALSE(r) << toml;
    return r ? std::string() : r.error().message;
  };
  std::string e = err("[channels.telegram]\nmode = \"polling\"\n");
  EXPECT_NE(e.find("moat.toml:1: [channels.telegram] needs token_secret"), std::string::npos) << e;
  e = err("[channels.telegram]\ntoken_secret = \"123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw\"\n");
  EXPECT_NE(e.find("moat.toml:2: channels.telegram.token_secret: this looks like a bot token"), std::string::npos) << e;
  EXPECT_EQ(e.find("AAHdqTcv"), std::string::npos) << "the error quotes the token: " << e;
  e = err("[channels.telegram]\ntoken_secret = \"tg\"\nmode = \"webhook\"\n");
  EXPECT_NE(e.find("moat.toml:1: [channels.telegram] mode = \"webhook\" needs webhook_url"), std::string::npos) << e;
  e = err("[channels.telegram]\ntoken_secret = \"tg\"\nwebhook_url = \"https://bot.example.com/telegram\"\n");
  EXPECT_NE(e.find("webhook_url is set but mode is \"polling\""), std::string::npos) << e;
  e = err("[channels.telegram]\ntoken_secret = \"tg\"\nmode = \"sometimes\"\n");
  EXPECT_NE(e.find("channels.telegram.mode: expected \"polling\""), std::string::npos) << e;
  for (auto [url, why] : std::vector<std::pair<std::string, std::string>>{
           {"http://bot.example.com/telegram/hook", "only over https://"},
           {"https://bot.example.com:8080/telegram/hook", "only on ports 443, 80, 88 and 8443, not 8080"},
           {"https://bot.example.com/hooks/assistant", "the path must start with /telegram"},
           {"https://bot.example.com/telegramx", "the path must start with /telegram"},
           {"https://bot.example.com/telegram/hook?x=1", "no query string"},
           {"not a url", "expected the public https:// URL"}}) {
    e = err(fmt::format("[channels.telegram]\ntoken_secret = \"tg\"\nmode = \"webhook\"\nwebhook_url = \"{}\"\n", url));
    EXPECT_NE(e.find("moat.toml:4: channels.telegram.webhook_url: "), std::string::npos) << e;
    EXPECT_NE(e.find(why), std::string::npos) << url << ": " << e;
  }
  auto hook = parse_config("[channels.telegram]\ntoken_secret = \"tg\"\nmode = \"webhook\"\n"
                           "webhook_url = \"https://bot.example.com:8443/telegram/hook\"\n",
                           "moat.toml");
  ASSERT_TRUE(hook) << hook.error().message;
  EXPECT_EQ(hook->channels.telegram->mode, TelegramMode::Webhook);
  EXPECT_EQ(hook->channels.telegram->webhook_url, "https://bot.example.com:8443/telegram/hook");
  EXPECT_EQ(hook->channels.telegram->webhook_path, "/telegram/hook");
  auto local = parse_config("[channels.telegram]\ntoken_secret = \"tg\"\nmode = \"webhook\"\n"
                            "webhook_url = \"http://127.0.0.1:9000/telegram\"\n",
                            "moat.toml");
  ASSERT_TRUE(local) << local.error().message;
  EXPECT_EQ(local->channels.telegram->webhook_path, "/telegram");
  e = err("[channels.telegram]\ntoken_secret = \"tg\"\napi_base = \"ftp://x\"\n");
  EXPECT_NE(e.find("channels.telegram.api_base"), std::string::npos) << e;
  e = err("[channels.telegram]\ntoken_secret = \"tg\"\npoll_timeout = \"2m\"\n");
  EXPECT_NE(e.find("channels.telegram.poll_timeout: expected a duration from \"1s\" to \"50s\""), std::string::npos) << e;
  e = err("[channels.telegram]\ntoken_secret = \"tg\"\ntoken = \"x\"\n");
  EXPECT_NE(e.find("unknown key 'channels.telegram.token'"), std::string::npos) << e;
  e = err("[channels.slack]\ntoken_secret = \"s\"\n");
  EXPECT_NE(e.find("unknown channel [channels.slack]"), std::string::npos) << e;
}

TEST(ConfigParse, DiscordChannel) {
  auto none = parse_config("", "moat.toml");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->channels.discord);
  auto c = parse_config("[channels.discord]\ntoken_secret = \"discord-bot\"\n", "moat.toml");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->channels.discord);
  EXPECT_EQ(c->channels.discord->token_secret, "discord-bot");
  EXPECT_EQ(c->channels.discord->api_base, "https://discord.com/api/v10");
  auto full = parse_config("[channels.discord]\ntoken_secret = \"d\"\napi_base = \"http://127.0.0.1:9/api/v10/\"\n",
                           "moat.toml");
  ASSERT_TRUE(full) << full.error().message;
  EXPECT_EQ(full->channels.discord->api_base, "http://127.0.0.1:9/api/v10");

  auto err = [](std::string_view toml) {
    auto r = parse_config(toml, "moat.toml");
    EXPECT_FALSE(r) << toml;
    return r ? std::string() : r.error().message;
  };
  std::string e = err("[channels.discord]\napi_base = \"http://127.0.0.1:9\"\n");
  EXPECT_NE(e.find("moat.toml:1: [channels.discord] needs token_secret"), std::string::npos) << e;
  e = err("[channels.discord]\ntoken_secret = \"MTEwMDAwMDAwMDAwMDAwMDAwMQ.GhXyZw.abcdefghijklmnopqrstuvwxyz0123456789AB\"\n");
  EXPECT_NE(e.find("moat.toml:2: channels.discord.token_secret: this looks like a bot token"), std::string::npos) << e;
  EXPECT_EQ(e.find("GhXyZw"), std::string::npos) << "the error quotes the token: " << e;
  e = err("[channels.discord]\ntoken_secret = \"d\"\napi_base = \"wss://gateway.discord.gg\"\n");
  EXPECT_NE(e.find("moat.toml:3: channels.discord.api_base: expected an http(s):// URL"), std::string::npos) << e;
  e = err("[channels.discord]\ntoken_secret = \"d\"\nintents = 513\n");
  EXPECT_NE(e.find("unknown key 'channels.discord.intents'"), std::string::npos) << e;
  e = err("[channels.discord]\ntoken_secret = 7\n");
  EXPECT_NE(e.find("channels.discord.token_secret: expected the name of a vault secret"), std::string::npos) << e;
}

TEST(ConfigParse, AttachmentsTable) {
  auto c = parse_config("[attachments]\nmax_file = \"5MiB\"\nmax_total = \"200MiB\"\nkeep = \"2d\"\n", "moat.toml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->attachments.max_file, 5u << 20);
  EXPECT_EQ(c->attachments.max_total, 200u << 20);
  EXPECT_EQ(c->attachments.keep, std::chrono::hours(48));
  auto d = parse_config("", "moat.toml");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->attachments.max_file, 20u << 20);
  auto bad = parse_config("[attachments]\nmax_file = \"10\"\n", "moat.toml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("max_file"), std::string::npos) << bad.error().message;
  auto unknown = parse_config("[attachments]\nmax_size = \"1MiB\"\n", "moat.toml");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("max_size"), std::string::npos) << unknown.error().message;
}

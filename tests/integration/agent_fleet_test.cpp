// Done-when 3 of issue 4: 100 agents, a cap of 8 turns at once, 1,000 messages across 200 chats,
// delivered through the webhook channel to a callback server while moatd is killed with SIGKILL at
// random moments (20 times). Every message must be answered exactly once and in order per chat:
// checked from what the callback server received and from the store.
//
// The model is a provider double that echoes each turn's user message, so a reply names exactly the
// messages it answers ("<m12-3>" = chat 12, 4th message).
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <functional>
#include <numeric>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "base/json.h"
#include "base/subprocess.h"
#include "support/moat_env.h"
#include "support/provider_double.h"

namespace moat::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kAgents = 100, kChats = 200, kPerChat = 5, kKills = 20;

std::string agent_of(int chat) { return fmt::format("f{:03}", chat % kAgents); }

struct Received {
  std::string key, chat, text;
};

// Posts one message; retries (as a real integration would) until moatd answers 202, across restarts.
// A retry after a lost response is a duplicate for moatd and comes back "duplicate".
void post_until_accepted(const std::function<std::string()>& base, const std::string& token, const std::string& agent,
                         const Json& body, const std::atomic<bool>& give_up) {
  while (!give_up) {
    auto r = run_process({"curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                          "Authorization: Bearer " + token, "-H", "Content-Type: application/json", "--data-binary",
                          body.dump(), fmt::format("{}/hooks/{}", base(), agent)});
    if (r && r->out == "202") return;
    std::this_thread::sleep_for(50ms);
  }
}

TEST(AgentFleet, ThousandMessagesUnderSigkillAreAnsweredExactlyOnceInOrder) {
  MOAT_REQUIRE_ROOT();
  ProviderDouble model({.api_key = "fleet-key"});
  model.set_reply_function([](const ProviderRequest& r) { return ScriptedReply::say("echo " + r.last_user_text()); });

  std::mutex mu;
  std::vector<Received> received;
  UpstreamServer callback({.handler = [&](const RecordedRequest& req, ResponseWriter& w) {
    auto j = Json::parse(req.body, nullptr, false);
    {
      std::lock_guard l(mu);
      received.push_back({req.header("idempotency-key").value_or(""), j.is_discarded() ? "" : j.value("chat", ""),
                          j.is_discarded() ? "" : j.value("text", "")});
    }
    w.send(HttpResponse::json(200, "{}"));
  }});

  std::string toml = "[router]\nmax_concurrent_turns = 8\nretry_base = \"200ms\"\nmax_attempts = 10\n";
  toml += "[web]\nlisten = \"127.0.0.1:0\"\n";
  for (int a = 0; a < kAgents; ++a)
    toml += fmt::format("[agents.f{:03}]\nmodel = {{ provider = \"anthropic\", model = \"claude-sonnet-4-5\", base_url = \"{}\" }}\n",
                        a, model.anthropic_base_url());
  MoatEnv env(toml);
  env.ok({"secret", "set", "fleet-key", "--host", fmt::format("127.0.0.1:{}", model.port()), "--header", "x-api-key: {}"},
         "fleet-key");
  std::map<std::string, std::string> tokens;
  for (int a = 0; a < kAgents; ++a) {
    auto name = fmt::format("f{:03}", a);
    tokens[name] = Json::parse(env.ok({"--json", "agent", "webhook", name}))["token"];
  }

  // The web listener's port changes with each restart (port 0): posters read the current one.
  std::mutex base_mu;
  std::string base = env.web_url();
  auto current_base = [&] {
    std::lock_guard l(base_mu);
    return base;
  };

  std::atomic<bool> give_up{false};
  std::atomic<int> posted{0};
  std::vector<std::thread> posters;
  for (int t = 0; t < 8; ++t) {
    posters.emplace_back([&, t] {
      // Each poster owns the chats c with c % 8 == t and posts each chat's messages in order.
      for (int seq = 0; seq < kPerChat; ++seq) {
        for (int c = t; c < kChats; c += 8) {
          std::string cb = fmt::format("{}/cb", callback.origin());
          Json body{{"chat", fmt::format("c{}", c)}, {"sender", "fleet"}, {"message_id", fmt::format("m{}-{}", c, seq)},
                    {"text", fmt::format("<m{}-{}>", c, seq)}, {"callback_url", cb}};
          post_until_accepted(current_base, tokens[agent_of(c)], agent_of(c), body, give_up);
          ++posted;
        }
      }
    });
  }

  std::mt19937 rng(std::random_device{}());
  for (int k = 0; k < kKills; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(300, 2500)(rng)));
    env.kill_daemon(SIGKILL);
    env.start_daemon();
    std::lock_guard l(base_mu);
    base = env.web_url();
  }
  for (auto& p : posters) p.join();
  ASSERT_EQ(posted.load(), kChats * kPerChat);

  // Wait for every message to be answered.
  std::regex token_re("<m(\\d+)-(\\d+)>");
  auto answered_tokens = [&] {
    std::lock_guard l(mu);
    std::set<std::string> seen;
    for (auto& r : received)
      for (std::sregex_iterator it(r.text.begin(), r.text.end(), token_re), end; it != end; ++it) seen.insert(it->str());
    return seen.size();
  };
  for (int i = 0; i < 1800 && answered_tokens() < size_t(kChats * kPerChat); ++i) std::this_thread::sleep_for(200ms);
  ASSERT_EQ(answered_tokens(), size_t(kChats * kPerChat)) << "not every message was answered";

  // Exactly once, in order: per chat, the replies (one per outbox key; a repeated key is the same
  // reply offered again and dropped by the receiver) name each message once, in sequence.
  std::map<std::string, std::string> text_by_key;
  int repeats = 0;
  {
    std::lock_guard l(mu);
    for (auto& r : received) {
      ASSERT_FALSE(r.key.empty()) << "a callback without Idempotency-Key";
      auto [it, fresh] = text_by_key.emplace(r.key, r.text);
      if (!fresh) {
        ++repeats;
        EXPECT_EQ(it->second, r.text) << "key " << r.key << " carried two different texts";
      }
    }
  }
  std::map<int, std::vector<std::pair<int64_t, std::string>>> replies_by_chat;  // chat -> (outbox id, text)
  for (auto& [key, text] : text_by_key) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(text, m, token_re)) << text;
    replies_by_chat[std::stoi(m[1])].push_back({std::stoll(key.substr(1)), text});
  }
  for (int c = 0; c < kChats; ++c) {
    auto& replies = replies_by_chat[c];
    std::sort(replies.begin(), replies.end());
    std::vector<int> order;
    for (auto& [id, text] : replies)
      for (std::sregex_iterator it(text.begin(), text.end(), token_re), end; it != end; ++it) {
        EXPECT_EQ(std::stoi((*it)[1]), c) << "a reply in chat " << c << " answered another chat: " << text;
        order.push_back(std::stoi((*it)[2]));
      }
    std::vector<int> want(kPerChat);
    std::iota(want.begin(), want.end(), 0);
    EXPECT_EQ(order, want) << "chat " << c << ": messages answered out of order, twice or not at all";
  }

  // The store agrees: every envelope answered once, every outbox row delivered once.
  env.stop_daemon();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(env.db_path().c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  auto count = [&](const char* sql) {
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, sql, -1, &st, nullptr);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return n;
  };
  EXPECT_EQ(count("SELECT count(*) FROM envelopes WHERE channel = 'webhook' AND state = 'answered'"), kChats * kPerChat);
  EXPECT_EQ(count("SELECT count(*) FROM envelopes WHERE channel = 'webhook'"), kChats * kPerChat);
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE channel = 'webhook' AND delivered_at_ms = 0"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM outbox WHERE channel = 'webhook'"), int64_t(text_by_key.size()));
  sqlite3_close(db);
  std::printf("fleet: %zu replies for %d messages, %d repeated deliveries dropped by key, %d kills\n", text_by_key.size(),
              kChats * kPerChat, repeats, kKills);
  env.start_daemon();  // so the fixture can remove the sandboxes
}

}  // namespace
}  // namespace moat::testing

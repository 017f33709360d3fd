// make bench, agents part: moatd's memory with 10,000 agents registered (none running), against the
// same moatd with none; and moat's own time per turn, outside the model: a turn through the router,
// the agent loop and the agent's sandbox (MEMORY.md is read there every turn) answered by a provider
// double, against the same model call made directly with the same provider client.
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "agent/providers/provider.h"
#include "api/client.h"
#include "bench_support.h"
#include "support/moat_env.h"
#include "support/provider_double.h"
#include "support/temp_dir.h"

using namespace moat;
using namespace moat::bench;
using namespace std::chrono;

namespace {

std::string base_config() {
  return "[daemon]\nidle_timeout = \"0\"\n[sandbox]\nimage = \"tiny\"\ndisk = \"64MiB\"\nmemory = \"128MiB\"\n"
         "[web]\nlisten = \"127.0.0.1:0\"\n";
}

// RSS of a moatd that has registered `agents` agents (declared in moat.toml) and runs none.
uint64_t rss_with_agents(int agents) {
  testing::TempDir state("moat-bench-agents");
  std::string config = base_config();
  config.reserve(config.size() + agents * 64);
  for (int i = 0; i < agents; ++i) config += fmt::format("[agents.a{:05}]\nmodel = {{ provider = \"none\" }}\n", i);
  auto t0 = steady_clock::now();
  Daemon d(state.path(), config);
  auto status = d.call("daemon.status", Json::object());
  if (status.value("agents", 0) != agents) die(fmt::format("moatd registered {} agents, not {}", status.value("agents", 0), agents));
  std::fprintf(stderr, "moatd with %d agents up in %.0f ms\n", agents, ms_since(t0));
  std::this_thread::sleep_for(1s);  // settle: the idle loop, the API threads
  return d.rss_kib();
}

int run(int argc, char** argv) {
  if (geteuid() != 0) die("run as root (make bench)");
  std::string out_path = argc > 1 ? argv[1] : "docs/benchmarks.md";
  const int kAgents = 10000;
  const int kTurns = 100;

  uint64_t rss_none = rss_with_agents(0);
  uint64_t rss_many = rss_with_agents(kAgents);
  std::fprintf(stderr, "moatd RSS: %lu KiB with no agents, %lu KiB with %d\n", rss_none, rss_many, kAgents);

  // Turn overhead.
  testing::ProviderDouble model({.api_key = "bench-key"});
  model.set_reply_function([](const testing::ProviderRequest&) { return testing::ScriptedReply::say("ok"); });
  testing::TempDir state("moat-bench-turns");
  auto tarball = state.path() / "tiny.tar.gz";
  testing::make_busybox_tarball(tarball);
  Daemon d(state.path(), base_config() + fmt::format("[agents.bench]\nmodel = {{ provider = \"anthropic\", "
                                                      "model = \"claude-sonnet-4-5\", base_url = \"{}\" }}\n",
                                                      model.anthropic_base_url()));
  d.call("image.import", Json{{"name", "tiny"}, {"path", tarball.string()}});
  d.call("secret.set", Json{{"name", "bench-key"}, {"value", "bench-key"},
                            {"hosts", Json::array({fmt::format("127.0.0.1:{}", model.port())})},
                            {"header", "x-api-key: {}"}});
  auto turn = [&](int i) {
    auto t0 = steady_clock::now();
    auto r = must(api::call(d.socket(), "chat.send", Json{{"agent", "bench"}, {"text", fmt::format("turn {}", i)}}), "chat.send");
    double ms = ms_since(t0);
    if (r["replies"].empty() || r["replies"][0]["text"] != "ok") die("unexpected reply: " + r.dump());
    return ms;
  };
  for (int i = 0; i < 5; ++i) turn(i);  // warm: the sandbox is created and started by the first
  std::vector<double> turns;
  for (int i = 0; i < kTurns; ++i) turns.push_back(turn(i));

  agent::ProviderConfig pc{.kind = "anthropic", .base_url = model.anthropic_base_url()};
  auto provider = must(agent::make_provider(pc, [](const std::string&, uint16_t) -> Result<std::vector<agent::Credential>> {
                         return std::vector<agent::Credential>{{"x-api-key", "bench-key"}};
                       }),
                       "provider");
  std::vector<double> direct;
  for (int i = -5; i < kTurns; ++i) {
    agent::ModelRequest req{.model = "claude-sonnet-4-5", .system = "bench"};
    req.messages.push_back({"user", {agent::ContentBlock::text_block(fmt::format("turn {}", i))}});
    auto t0 = steady_clock::now();
    must(provider->complete(req, {}), "direct model call");
    if (i >= 0) direct.push_back(ms_since(t0));
  }
  double overhead = median(turns) - median(direct);
  std::fprintf(stderr, "turn p50 %.2f ms (p99 %.2f), direct model call p50 %.2f ms: moat's own %.2f ms per turn\n",
               median(turns), percentile(turns, 0.99), median(direct), overhead);

  const double rss_mib = rss_many / 1024.0;
  std::string section = fmt::format(
      "## Agents\n\n"
      "`make bench` (`moat-bench-agent docs/benchmarks.md`), {}.\n\n"
      "| figure | moat | baseline (same run) | target | |\n"
      "| --- | --- | --- | --- | --- |\n"
      "| moatd RSS, {} agents registered, none running | {:.1f} MiB | {:.1f} MiB with none | ≤ 150 MiB | {} |\n"
      "| one turn through moat (router, agent loop, MEMORY.md read in the sandbox, store), p50 of {} | {:.2f} ms (p99 {:.2f}) | "
      "{:.2f} ms: the same model call made directly | | |\n"
      "| moat's own time per turn, outside the model | {:.2f} ms | | | |\n\n"
      "A turn is `chat.send` over the control API to an agent whose model is a provider double answering at once; "
      "the baseline is the same request sent by the same provider client straight to the double.\n",
      machine_line(), kAgents, rss_mib, rss_none / 1024.0, verdict(rss_mib <= 150), kTurns, median(turns),
      percentile(turns, 0.99), median(direct), overhead);
  write_section(out_path, "## Agents", section);
  std::printf("%s", section.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_reporting_failure(run, argc, argv);
}

// moat chat AGENT: talk to an agent from the terminal. Replies stream in as the model writes them;
// tool calls and their results are shown as they happen, one readable line each.
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <iostream>

#include "cli/cli.h"

namespace moat::cli {

namespace {

struct TurnPrinter {
  bool color = false;
  std::string streamed;  // text streamed during this turn

  const char* dim() const { return color ? "\033[2m" : ""; }
  const char* reset() const { return color ? "\033[0m" : ""; }

  void on_progress(const Json& p) {
    std::string ev = p.value("event", std::string());
    const Json& d = p.contains("data") ? p["data"] : Json::object();
    if (ev == "text") {
      std::string t = d.value("text", std::string());
      streamed += t;
      auto shown = printable(t);
      std::fwrite(shown.data(), 1, shown.size(), stdout);
      std::fflush(stdout);
    } else if (ev == "tool_call") {
      std::string input = d.contains("input") ? d["input"].dump() : "{}";
      if (d.contains("input") && d["input"].contains("command")) input = d["input"]["command"].get<std::string>();
      if (input.size() > 200) input = input.substr(0, 197) + "...";
      std::printf("%s%s  > %s: %s%s\n", streamed.empty() || streamed.ends_with('\n') ? "" : "\n", dim(),
                  printable(d.value("name", std::string("tool")), Lines::Escape).c_str(),
                  printable(input, Lines::Escape).c_str(), reset());
      streamed.clear();
    } else if (ev == "turn_ended" && d.value("outcome", std::string()) == "retrying") {
      std::printf("%s%s(attempt %d failed: %s; trying again in %.1f s)%s\n", streamed.empty() || streamed.ends_with('\n') ? "" : "\n",
                  dim(), d.value("attempt", 0), printable(d.value("error", std::string()), Lines::Escape).c_str(),
                  d.value("retry_in_ms", 0) / 1000.0, reset());
      streamed.clear();
    } else if (ev == "tool_result") {
      std::string out = d.value("output", std::string());
      size_t lines = std::count(out.begin(), out.end(), '\n') + (out.empty() || out.ends_with('\n') ? 0 : 1);
      std::string first = out.substr(0, std::min(out.find('\n'), size_t{120}));
      std::printf("%s    %s%s (%zu line%s)%s\n", dim(), d.value("is_error", false) ? "error: " : "",
                  printable(first, Lines::Escape).c_str(), lines,
                  lines == 1 ? "" : "s", reset());
    }
    std::fflush(stdout);
  }

  // Prints the durable replies that did not already stream in.
  void finish(const Json& result) {
    bool any_streamed = !streamed.empty();
    if (any_streamed && !streamed.ends_with('\n')) std::printf("\n");
    for (auto& r : result.value("replies", Json::array())) {
      std::string text = r.value("text", std::string());
      if (any_streamed && streamed.find(text) != std::string::npos) continue;
      std::printf("%s%s\n", r.value("is_error", false) ? "error: " : "", printable(text).c_str());
    }
    if (result.value("outcome", std::string()) != "answered" && result.contains("outcome"))
      std::printf("(message %s: %s)\n", result["outcome"].get<std::string>().c_str(),
                  result.value("reason", std::string()).c_str());
    streamed.clear();
    std::fflush(stdout);
  }
};

Result<Json> send(const Globals& g, const std::string& agent, const std::string& text, TurnPrinter& printer) {
  return api::call(g.socket_path(), "chat.send", Json{{"agent", agent}, {"text", text}},
                   [&](const Json& p) { printer.on_progress(p); });
}

}  // namespace

void add_chat_command(CLI::App& app, Globals& g, int& rc) {
  auto* c = app.add_subcommand("chat", "talk to an agent from the terminal")
                ->footer("Interactive on a terminal (Ctrl-D ends); otherwise each line of stdin is one message. "
                         "With -m, sends one message and exits. The conversation is the agent's 'terminal' chat and "
                         "is kept across sessions.");
  auto agent = std::make_shared<std::string>();
  auto message = std::make_shared<std::string>();
  c->add_option("agent", *agent, "agent name (see 'moat agent ls')")->required();
  c->add_option("-m,--message", *message, "send this one message and print the reply");
  c->callback([&g, &rc, agent, message] {
    TurnPrinter printer;
    printer.color = isatty(STDOUT_FILENO) && !g.json;
    auto one = [&](const std::string& text) -> bool {
      TurnPrinter quiet;
      auto r = send(g, *agent, text, g.json ? quiet : printer);
      if (!r) {
        rc = report(r.error());
        return false;
      }
      if (g.json) std::printf("%s\n", r->dump(2).c_str());
      else printer.finish(*r);
      return true;
    };
    if (!message->empty()) {
      one(*message);
      return;
    }
    bool tty = isatty(STDIN_FILENO);
    if (tty) std::printf("chatting with %s; Ctrl-D to end\n", agent->c_str());
    std::string line;
    for (;;) {
      if (tty) {
        std::printf("you> ");
        std::fflush(stdout);
      }
      if (!std::getline(std::cin, line)) break;
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      if (!one(line) && !tty) return;
    }
    if (tty) std::printf("\n");
  });
}

}  // namespace moat::cli

// moat agent create|ls|show|edit|rm|usage, moat approve CODE, moat messages.
#include <cstdio>

#include "cli/cli.h"

namespace moat::cli {

namespace {

// The flags of `agent create` and `agent edit`; only those given become spec fields.
struct AgentFlags {
  std::string image, runtime, provider, model, base_url, system_prompt, trigger, unknown_senders;
  std::string memory, disk;
  std::optional<double> cpus;
  std::optional<int64_t> pids;  // signed, so that -1 gets the range in its refusal, not a parse error
  IoFlags io;
  std::vector<std::string> command, channels, chats, senders, may_message;
  bool clear_command = false;

  void add_to(CLI::App* c) {
    c->add_option("--image", image, "image of the agent's sandbox (default: [sandbox] image)");
    c->add_option("--runtime", runtime, "runc (default), runsc (gVisor) or crun");
    c->add_option("--memory", memory, "memory limit of its sandbox, e.g. 2GiB");
    c->add_option("--disk", disk, "disk cap of its sandbox, e.g. 10GiB");
    c->add_option("--cpus", cpus, "CPU limit of its sandbox, e.g. 1 or 0.5");
    c->add_option("--pids", pids, "process/thread limit of its sandbox");
    io.add_to(c, "its sandbox's disk");
    c->add_option("--provider", provider, "model provider: anthropic, openai (any OpenAI-compatible server) or none");
    c->add_option("--model", model, "model name, e.g. claude-sonnet-4-5, gpt-4o, llama3.1");
    c->add_option("--base-url", base_url, "provider base URL, e.g. http://127.0.0.1:11434/v1 for Ollama");
    c->add_option("--system-prompt", system_prompt, "what the agent is for (its MEMORY.md is added to it)");
    c->add_option("--command", command,
                  "a command agent: run this inside the sandbox per turn (conversation on stdin, reply on stdout)")
        ->expected(1, -1);
    c->add_option("--channel", channels, "channels it answers besides terminal, web and webhook (repeatable)");
    c->add_option("--chat", chats, "chats it answers: CHANNEL:CHAT, '*' globs allowed (repeatable)");
    c->add_option("--sender", senders, "senders it answers: CHANNEL:SENDER or '*' (repeatable; default anyone)");
    c->add_option("--trigger", trigger, "regex a group message must match (or mention the agent)");
    c->add_option("--unknown-senders", unknown_senders, "drop (default) or hold for approval with a pairing code")
        ->check(CLI::IsMember({"drop", "hold"}));
    c->add_option("--may-message", may_message, "other chats it may send_message to: CHANNEL:CHAT globs (repeatable)");
  }

  Json fields() const {
    Json j = Json::object();
    auto put = [&](const char* k, const std::string& v) {
      if (!v.empty()) j[k] = v;
    };
    put("image", image);
    put("runtime", runtime);
    put("memory_bytes", memory);
    put("disk_bytes", disk);
    if (cpus) j["cpus"] = *cpus;
    if (pids) j["pids"] = *pids;
    io.put(j);
    Json m = Json::object();
    if (!provider.empty()) m["provider"] = provider;
    if (!model.empty()) m["model"] = model;
    if (!base_url.empty()) m["base_url"] = base_url;
    if (!m.empty()) j["model"] = m;
    put("system_prompt", system_prompt);
    put("trigger", trigger);
    put("unknown_senders", unknown_senders);
    if (!command.empty()) j["command"] = command;
    if (!channels.empty()) j["channels"] = channels;
    if (!chats.empty()) j["chats"] = chats;
    if (!senders.empty()) j["senders"] = senders;
    if (!may_message.empty()) j["may_message"] = may_message;
    return j;
  }
};

std::string str_or(const Json& j, const char* k, const char* fallback = "-") {
  if (!j.contains(k) || !j[k].is_string() || j[k].get<std::string>().empty()) return fallback;
  return j[k].get<std::string>();
}

std::string mind_of(const Json& a) {
  if (a.contains("command") && a["command"].is_array() && !a["command"].empty()) {
    std::string cmd;
    for (auto& w : a["command"]) cmd += (cmd.empty() ? "" : " ") + w.get<std::string>();
    return "command: " + cmd;
  }
  const Json& m = a.contains("model") ? a["model"] : Json::object();
  return str_or(m, "provider") + "/" + str_or(m, "model");
}

void print_agent(const Json& a) {
  std::printf("agent %s (%s)\n", a["name"].get<std::string>().c_str(), str_or(a, "source").c_str());
  std::printf("  mind:     %s\n", mind_of(a).c_str());
  if (a.contains("model") && a["model"].contains("base_url") && !a["model"]["base_url"].get<std::string>().empty())
    std::printf("  base url: %s\n", a["model"]["base_url"].get<std::string>().c_str());
  std::printf("  sandbox:  %s (image %s, runtime %s)\n",
              a.contains("sandbox") ? str_or(a["sandbox"], "state").c_str() : "-", str_or(a, "image", "default").c_str(),
              str_or(a, "runtime", "runc").c_str());
  auto list = [&](const char* label, const char* key) {
    if (!a.contains(key) || a[key].empty()) return;
    std::string s;
    for (auto& v : a[key]) s += (s.empty() ? "" : ", ") + v.get<std::string>();
    std::printf("  %-9s %s\n", label, s.c_str());
  };
  list("chats:", "chats");
  list("senders:", "senders");
  if (!str_or(a, "trigger", "").empty()) std::printf("  trigger:  %s\n", a["trigger"].get<std::string>().c_str());
  std::printf("  unknown senders: %s\n", str_or(a, "unknown_senders", "drop").c_str());
  if (a.contains("usage") && !a["usage"].empty()) {
    auto& u = a["usage"];
    std::printf("  usage:    %s turns, %s model calls, %s in / %s out tokens, $%.4f\n", u["turns"].dump().c_str(),
                u["model_calls"].dump().c_str(), u["input_tokens"].dump().c_str(), u["output_tokens"].dump().c_str(),
                u["cost_usd"].get<double>());
  }
  if (!str_or(a, "system_prompt", "").empty())
    std::printf("  system prompt:\n    %s\n", a["system_prompt"].get<std::string>().c_str());
}

void print_or_json(const Globals& g, const Json& j, const std::function<void(const Json&)>& human) {
  if (g.json) std::printf("%s\n", j.dump(2).c_str());
  else human(j);
}

}  // namespace

void add_agent_commands(CLI::App& app, Globals& g, int& rc) {
  auto* a = app.add_subcommand("agent", "agents: who answers, with which model, in which sandbox")
                ->footer("An agent has its own sandbox (named after it, created on first use, stopped when idle). "
                         "Agents declared in moat.toml ([agents.NAME]) are changed there; `create` makes one at run time.");
  a->require_subcommand(1);
  auto name = std::make_shared<std::string>();
  auto flags = std::make_shared<AgentFlags>();

  auto* create = a->add_subcommand("create", "create an agent");
  create->add_option("name", *name, "agent name: lower-case letters, digits and '-'")->required();
  flags->add_to(create);
  create->callback([&g, &rc, name, flags] {
    Json args = flags->fields();
    args["name"] = *name;
    if (auto st = check_limit_args(args, "disk_bytes", "memory_bytes"); !st) {
      rc = report(st.error());
      return;
    }
    auto r = call_or_report(g, "agent.create", args, rc);
    if (r) print_or_json(g, *r, [](const Json& j) {
      std::printf("created agent %s; talk to it with: moat chat %s\n", j["name"].get<std::string>().c_str(),
                  j["name"].get<std::string>().c_str());
    });
  });

  auto* ls = a->add_subcommand("ls", "list agents");
  ls->callback([&g, &rc] {
    auto r = call_or_report(g, "agent.ls", Json::object(), rc);
    if (!r) return;
    print_or_json(g, *r, [](const Json& all) {
      std::vector<std::vector<std::string>> rows{{"NAME", "MIND", "SANDBOX", "FROM"}};
      for (auto& x : all)
        rows.push_back({x["name"].get<std::string>(), mind_of(x), str_or(x["sandbox"], "state"), str_or(x, "source")});
      print_table(rows);
    });
  });

  auto* show = a->add_subcommand("show", "an agent's settings, sandbox and usage");
  show->add_option("name", *name, "agent name")->required();
  show->callback([&g, &rc, name] {
    auto r = call_or_report(g, "agent.show", Json{{"name", *name}}, rc);
    if (r) print_or_json(g, *r, print_agent);
  });

  auto* edit = a->add_subcommand("edit", "change a run-time agent's settings (only the flags given)");
  edit->add_option("name", *name, "agent name")->required();
  flags->add_to(edit);
  edit->callback([&g, &rc, name, flags] {
    Json changes = flags->fields();
    if (changes.empty()) {
      rc = report(Error{ErrorKind::InvalidInput, "nothing to change: give at least one flag (see 'moat agent edit --help')"});
      return;
    }
    if (auto st = check_limit_args(changes, "disk_bytes", "memory_bytes"); !st) {
      rc = report(st.error());
      return;
    }
    auto r = call_or_report(g, "agent.edit", Json{{"name", *name}, {"changes", changes}}, rc);
    if (r) print_or_json(g, *r, [](const Json& j) {
      print_agent(j);
      if (j.contains("sandbox_note")) std::printf("note: %s\n", j["sandbox_note"].get<std::string>().c_str());
    });
  });

  auto* rm = a->add_subcommand("rm", "remove an agent and (unless --keep-sandbox) its sandbox");
  auto keep = std::make_shared<bool>(false);
  rm->add_option("name", *name, "agent name")->required();
  rm->add_flag("--keep-sandbox", *keep, "keep the sandbox (its files and MEMORY.md)");
  rm->callback([&g, &rc, name, keep] {
    auto r = call_or_report(g, "agent.rm", Json{{"name", *name}, {"keep_sandbox", *keep}}, rc);
    if (r) print_or_json(g, *r, [](const Json& j) {
      std::printf("removed agent %s%s\n", j["name"].get<std::string>().c_str(),
                  j["sandbox_removed"].get<bool>() ? " and its sandbox" : "");
    });
  });

  auto* usage = a->add_subcommand("usage", "turns, model calls, tokens and cost per agent");
  auto uname = std::make_shared<std::string>();
  usage->add_option("name", *uname, "one agent (default: all)");
  usage->callback([&g, &rc, uname] {
    Json args = Json::object();
    if (!uname->empty()) args["name"] = *uname;
    auto r = call_or_report(g, "agent.usage", args, rc);
    if (!r) return;
    print_or_json(g, *r, [](const Json& all) {
      std::vector<std::vector<std::string>> rows{{"AGENT", "TURNS", "MODEL CALLS", "TOKENS IN", "TOKENS OUT", "TOOL CALLS", "COST"}};
      for (auto& u : all)
        rows.push_back({u["agent"].get<std::string>(), u["turns"].dump(), u["model_calls"].dump(), u["input_tokens"].dump(),
                        u["output_tokens"].dump(), u["tool_calls"].dump(), fmt::format("${:.4f}", u["cost_usd"].get<double>())});
      print_table(rows);
    });
  });

  auto* webhook = a->add_subcommand("webhook", "the URL and bearer token other programs post messages to")
                      ->footer("POST JSON {chat, sender, message_id, text, callback_url?} with 'Authorization: Bearer TOKEN'. "
                               "See docs/channels.md.");
  webhook->add_option("name", *name, "agent name")->required();
  webhook->callback([&g, &rc, name] {
    auto r = call_or_report(g, "agent.webhook", Json{{"name", *name}}, rc);
    if (r) print_or_json(g, *r, [](const Json& j) {
      std::printf("url:   %s\ntoken: %s\n", j["url"].get<std::string>().c_str(), j["token"].get<std::string>().c_str());
    });
  });

  auto* approve = app.add_subcommand("approve", "approve a sender held for approval, by the pairing code it was sent");
  auto code = std::make_shared<std::string>();
  approve->add_option("code", *code, "the pairing code")->required();
  approve->callback([&g, &rc, code] {
    auto r = call_or_report(g, "approve", Json{{"code", *code}}, rc);
    if (r) print_or_json(g, *r, [](const Json& j) {
      std::printf("approved %s on %s for agent %s; %s held message(s) queued\n", str_or(j, "sender").c_str(),
                  str_or(j, "channel").c_str(), str_or(j, "agent").c_str(), j.value("requeued", Json(0)).dump().c_str());
    });
  });

  auto* messages = app.add_subcommand("messages", "inbound messages and what became of them");
  auto failed = std::make_shared<bool>(false);
  auto state = std::make_shared<std::string>();
  auto agent = std::make_shared<std::string>();
  auto limit = std::make_shared<size_t>(50);
  messages->add_flag("--failed", *failed, "only messages that failed after every retry");
  messages->add_option("--state", *state, "only this state: queued, running, answered, failed, held, dropped");
  messages->add_option("--agent", *agent, "only this agent's");
  messages->add_option("--limit", *limit, "at most this many, newest first (default 50)");
  messages->callback([&g, &rc, failed, state, agent, limit] {
    Json args{{"state", *failed ? std::string("failed") : *state}, {"agent", *agent}, {"limit", *limit}};
    auto r = call_or_report(g, "messages", args, rc);
    if (!r) return;
    print_or_json(g, *r, [](const Json& all) {
      std::vector<std::vector<std::string>> rows{{"ID", "WHEN", "CHANNEL", "CHAT", "AGENT", "STATE", "TEXT / ERROR"}};
      for (auto& m : all) {
        std::string text = m["state"] == "failed" ? str_or(m, "error") : str_or(m, "text", "");
        if (text.size() > 60) text = text.substr(0, 57) + "...";
        for (auto& c : text) if (c == '\n') c = ' ';
        rows.push_back({m["id"].dump(), format_time_ago(m.value("received_ms", int64_t{0})), str_or(m, "channel"),
                        str_or(m, "chat"), str_or(m, "agent"), str_or(m, "state"), text});
      }
      print_table(rows);
    });
  });
}

}  // namespace moat::cli

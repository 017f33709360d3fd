// moat sandbox create|start|stop|restart|reset|rm|migrate-ids|ls|inspect
#include <cstdio>

#include "cli/cli.h"
#include "config/units.h"

namespace moat::cli {
namespace {

void print_record(const Globals& g, const Json& r) {
  if (g.json) {
    std::printf("%s\n", r.dump(2).c_str());
    return;
  }
  if (r.value("removed", false)) {
    std::printf("%s removed\n", r["name"].get<std::string>().c_str());
    return;
  }
  std::printf("%s %s\n", r["name"].get<std::string>().c_str(), r["state"].get<std::string>().c_str());
}

// One verb that takes a sandbox name and prints the sandbox afterwards.
void add_simple(CLI::App& parent, Globals& g, int& rc, const char* name, const char* verb, const char* help,
                std::function<void(CLI::App&, Json&)> extra = {}) {
  auto* cmd = parent.add_subcommand(name, help);
  auto args = std::make_shared<Json>(Json::object());
  auto sandbox = std::make_shared<std::string>();
  cmd->add_option("name", *sandbox, "sandbox name")->required();
  if (extra) extra(*cmd, *args);
  cmd->callback([&g, &rc, verb, args, sandbox] {
    (*args)["name"] = *sandbox;
    auto r = call_or_report(g, verb, *args, rc);
    if (!r) return;
    print_record(g, *r);
  });
}

}  // namespace

Status check_limit_args(const Json& args, std::string_view disk_key, std::string_view memory_key) {
  std::optional<uint64_t> whole;
  std::optional<double> cpus;
  for (auto st : {read_limit(args, disk_key, Limit::DiskBytes, whole), read_limit(args, memory_key, Limit::MemoryBytes, whole),
                  read_limit(args, "pids", Limit::Pids, whole), read_limit(args, "cpus", Limit::Cpus, cpus)})
    if (!st) return st;
  IoThrottle<std::optional<uint64_t>> io;
  return read_io_limits(args, io);
}

void IoFlags::add_to(CLI::App* cmd, std::string_view disk) {
  cmd->add_option("--io-read-bps", read_bps, fmt::format("read limit on {}, bytes per second, e.g. 100MiB", disk));
  cmd->add_option("--io-write-bps", write_bps, fmt::format("write limit on {}, bytes per second, e.g. 100MiB", disk));
  cmd->add_option("--io-read-iops", read_iops, fmt::format("read limit on {}, operations per second", disk));
  cmd->add_option("--io-write-iops", write_iops, fmt::format("write limit on {}, operations per second", disk));
}

void IoFlags::put(Json& args) const {
  if (!read_bps.empty()) args["io_read_bps"] = read_bps;
  if (!write_bps.empty()) args["io_write_bps"] = write_bps;
  if (read_iops) args["io_read_iops"] = *read_iops;
  if (write_iops) args["io_write_iops"] = *write_iops;
}

void add_sandbox_commands(CLI::App& app, Globals& g, int& rc) {
  auto* sb = app.add_subcommand("sandbox", "manage sandboxes: hardened, persistent machines");
  sb->require_subcommand(1);

  auto* create = sb->add_subcommand("create", "create a sandbox (its own capped disk, uid range and limits)");
  struct CreateOpts {
    std::string name, image, runtime, disk, memory;
    std::optional<int64_t> pids;  // signed, so that -1 gets the range in its refusal, not a parse error
    std::optional<double> cpus;
    IoFlags io;
    bool start = false;
    std::vector<std::string> insecure;
  };
  auto co = std::make_shared<CreateOpts>();
  create->add_option("name", co->name, "sandbox name: 1-63 of a-z 0-9 - _ .")->required();
  create->add_option("--image", co->image, "image to start from (default from moat.toml, 'default')");
  create->add_option("--runtime", co->runtime, "runc (default), runsc (gVisor) or crun");
  create->add_option("--disk", co->disk, "disk cap, e.g. 10GiB (default from moat.toml)");
  create->add_option("--memory", co->memory, "memory limit, e.g. 2GiB");
  create->add_option("--pids", co->pids, "process/thread limit");
  create->add_option("--cpus", co->cpus, "CPU limit in cores, e.g. 0.5");
  co->io.add_to(create, "the sandbox's disk");
  create->add_flag("--start", co->start, "start it right away");
  create->add_option("--insecure", co->insecure,
                     "explicitly turn off one protection: no-seccomp, all-caps, no-userns, new-privileges, unmask-paths");
  create->callback([&g, &rc, co] {
    Json args{{"name", co->name}, {"start", co->start}, {"insecure", co->insecure}};
    if (!co->image.empty()) args["image"] = co->image;
    if (!co->runtime.empty()) args["runtime"] = co->runtime;
    if (!co->disk.empty()) args["disk"] = co->disk;
    if (!co->memory.empty()) args["memory"] = co->memory;
    if (co->pids) args["pids"] = *co->pids;
    if (co->cpus) args["cpus"] = *co->cpus;
    co->io.put(args);
    if (auto st = check_limit_args(args, "disk", "memory"); !st) {
      rc = report(st.error());
      return;
    }
    auto r = call_or_report(g, "sandbox.create", args, rc);
    if (!r) return;
    print_record(g, *r);
  });

  add_simple(*sb, g, rc, "start", "sandbox.start", "start a sandbox");
  add_simple(*sb, g, rc, "stop", "sandbox.stop", "stop a sandbox (TERM, then KILL after the grace period)");
  add_simple(*sb, g, rc, "restart", "sandbox.restart", "stop and start a sandbox");
  add_simple(*sb, g, rc, "reset", "sandbox.reset",
             "drop the writable layer: back to the image (/workspace is kept unless --workspace)",
             [](CLI::App& cmd, Json& args) {
               auto wipe = std::make_shared<bool>(false);
               cmd.add_flag("--workspace", *wipe, "also empty /workspace");
               cmd.preparse_callback([&args, wipe](size_t) { args["wipe_workspace"] = false; });
               cmd.parse_complete_callback([&args, wipe] { args["wipe_workspace"] = *wipe; });
             });
  add_simple(*sb, g, rc, "rm", "sandbox.rm", "remove a sandbox and its disk", [](CLI::App& cmd, Json& args) {
    auto force = std::make_shared<bool>(false);
    cmd.add_flag("--force,-f", *force, "stop it first if running");
    cmd.parse_complete_callback([&args, force] { args["force"] = *force; });
  });

  auto* migrate = sb->add_subcommand(
      "migrate-ids",
      "move a sandbox made before moat's own id region into it (re-owns its files; resumable)\n"
      "  moat sandbox stop box && moat sandbox migrate-ids box && moat sandbox start box");
  auto mname = std::make_shared<std::string>();
  migrate->add_option("name", *mname, "sandbox name (stopped)")->required();
  migrate->callback([&g, &rc, mname] {
    auto r = call_or_report(g, "sandbox.migrate-ids", Json{{"name", *mname}}, rc);
    if (!r) return;
    if (g.json) {
      std::printf("%s\n", r->dump(2).c_str());
    } else if (r->value("moved", false)) {
      std::printf("%s: host ids %lld-%lld -> %lld-%lld, %llu of %llu files re-owned\n", (*r)["name"].get<std::string>().c_str(),
                  static_cast<long long>((*r)["from"].get<int64_t>()), static_cast<long long>((*r)["from"].get<int64_t>() + 65535),
                  static_cast<long long>((*r)["uid_base"].get<int64_t>()),
                  static_cast<long long>((*r)["uid_base"].get<int64_t>() + 65535),
                  static_cast<unsigned long long>((*r)["reowned"].get<uint64_t>()),
                  static_cast<unsigned long long>((*r)["files"].get<uint64_t>()));
    } else {
      std::printf("%s: %s\n", (*r)["name"].get<std::string>().c_str(), (*r)["note"].get<std::string>().c_str());
    }
  });

  auto* ls = sb->add_subcommand("ls", "list sandboxes");
  ls->callback([&g, &rc] {
    auto r = call_or_report(g, "sandbox.ls", Json::object(), rc);
    if (!r) return;
    if (g.json) {
      std::printf("%s\n", r->dump(2).c_str());
      return;
    }
    std::vector<std::vector<std::string>> rows{{"NAME", "STATE", "IMAGE", "RUNTIME", "DISK", "MEMORY", "LAST USED"}};
    for (auto& s : *r) {
      rows.push_back({s["name"], s["state"], s["image"], s["runtime"], format_size(s["disk_bytes"].get<uint64_t>()),
                      format_size(s["memory_bytes"].get<uint64_t>()), format_time_ago(s["last_used_at_ms"].get<int64_t>())});
    }
    print_table(rows);
  });

  auto* inspect = sb->add_subcommand("inspect", "show everything about a sandbox (JSON)");
  auto iname = std::make_shared<std::string>();
  inspect->add_option("name", *iname, "sandbox name")->required();
  inspect->callback([&g, &rc, iname] {
    auto r = call_or_report(g, "sandbox.inspect", Json{{"name", *iname}}, rc);
    if (!r) return;
    std::printf("%s\n", r->dump(2).c_str());
  });
}

}  // namespace moat::cli

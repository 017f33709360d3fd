#pragma once
// The moat CLI: thin verbs over the control API (it never touches sandboxes or the store itself).
#include <CLI/CLI.hpp>
#include <filesystem>
#include <optional>
#include <string>

#include "api/client.h"
#include "config/limits.h"

namespace moat::cli {

struct Globals {
  std::string state_dir;
  std::string socket;
  bool json = false;

  std::filesystem::path socket_path() const;
};

// Exit codes by error kind, so scripts can tell "not found" from "moatd down" without parsing text.
int exit_code_for(const Error& e);
// Prints "moat: <message>" and returns the exit code for it.
int report(const Error& e);
// Calls a verb, printing progress lines to stderr as they arrive.
Result<Json> call(const Globals& g, std::string_view verb, Json args);
// call(), and on failure report the error into `rc` and return nothing.
std::optional<Json> call_or_report(const Globals& g, std::string_view verb, Json args, int& rc);

// The limits among a request's arguments (disk and memory under the given keys, pids, cpus, the io_
// limits), checked
// early with the very check moatd makes (config/limits.h), so the refusal reads the same either way.
Status check_limit_args(const Json& args, std::string_view disk_key, std::string_view memory_key);

// --io-read-bps, --io-write-bps (sizes per second, e.g. 100MiB), --io-read-iops, --io-write-iops: the
// I/O throttle flags of `sandbox create`, `agent create` and `agent edit`; put() adds those given to a
// request under the table's names (io_read_bps, ...).
struct IoFlags {
  std::string read_bps, write_bps;
  std::optional<int64_t> read_iops, write_iops;  // signed, so that -1 gets the range in its refusal
  void add_to(CLI::App* cmd, std::string_view disk);  // disk: "the sandbox's disk"
  void put(Json& args) const;
};

void add_sandbox_commands(CLI::App& app, Globals& g, int& rc);
void add_exec_commands(CLI::App& app, Globals& g, int& rc);
void add_image_commands(CLI::App& app, Globals& g, int& rc);
void add_audit_commands(CLI::App& app, Globals& g, int& rc);
void add_daemon_commands(CLI::App& app, Globals& g, int& rc);
void add_cp_command(CLI::App& app, Globals& g, int& rc);
void add_policy_commands(CLI::App& app, Globals& g, int& rc);
void add_secret_commands(CLI::App&, Globals&, int&);
void add_agent_commands(CLI::App& app, Globals& g, int& rc);
void add_chat_command(CLI::App& app, Globals& g, int& rc);
void add_channel_commands(CLI::App& app, Globals& g, int& rc);

// Runs an exec conversation over an API connection already answered OK; returns the command's exit code.
int run_exec_stream(api::Client& client, bool forward_stdin, bool tty);

// Human formatting. Text from sandboxes and senders reaches the operator's terminal only through
// printable(): control characters (C0, DEL, C1) come out as visible escapes, never as terminal commands;
// newlines and tabs are kept in messages and escaped in table cells.
enum class Lines { Keep, Escape };
std::string printable(std::string_view text, Lines lines = Lines::Keep);
std::string format_time_ago(int64_t epoch_ms);
void print_table(const std::vector<std::vector<std::string>>& rows);

}  // namespace moat::cli

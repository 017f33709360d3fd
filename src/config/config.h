#pragma once
// moat.toml: one typed schema. Every key is documented in docs/config.md; an unknown key or a value
// of the wrong type is an error naming the key and its line.
#include <chrono>
#include <filesystem>
#include <string>

#include "base/result.h"

namespace moat {

// Defaults for sandboxes created without explicit flags.
struct SandboxDefaults {
  std::string image = "default";
  std::string runtime = "runc";
  uint64_t disk_bytes = 10ull << 30;
  uint64_t memory_bytes = 2ull << 30;
  uint64_t pids = 1024;
  double cpus = 1.0;
};

struct DaemonConfig {
  std::filesystem::path socket;                            // empty = <state_dir>/moatd.sock
  std::chrono::milliseconds idle_timeout{30 * 60 * 1000};  // 0 = never stop idle sandboxes
  std::chrono::milliseconds stop_grace{10 * 1000};         // TERM, then KILL after this
  std::string log_level = "info";
};

struct Config {
  std::filesystem::path state_dir = "/var/lib/moat";
  DaemonConfig daemon;
  SandboxDefaults sandbox;

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

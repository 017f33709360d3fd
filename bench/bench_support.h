#pragma once
// What every `make bench` program shares: a real moatd on a temp state directory, percentiles, a
// failure that unwinds (so daemons stop and temp directories go), and writing one's own section of
// docs/benchmarks.md without touching the others'.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/json.h"
#include "base/result.h"

namespace moat::bench {

inline const std::filesystem::path kBuild = MOAT_BUILD_DIR;

// Thrown rather than exiting, so the daemon and temp directories are cleaned up on the way out.
struct BenchFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A bench's main: runs `run`, printing a BenchFailure (after the daemons and temp directories are
// gone) and returning 1 for it.
int run_reporting_failure(int (*run)(int, char**), int argc, char** argv);

// Throws BenchFailure with `what` (and the current daemon's log, when there is one).
[[noreturn]] void die(const std::string& what);

template <class T>
T must(Result<T> r, std::string_view what) {
  if (!r) die(fmt::format("{}: {}", what, r.error().message));
  return std::move(*r);
}

double percentile(std::vector<double> v, double p);
inline double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }
double ms_since(std::chrono::steady_clock::time_point t0);
inline const char* verdict(bool met) { return met ? "met" : "**not met**"; }

// A moatd from the build tree on `state` with `config` as its moat.toml; stopped (with every
// sandbox) when destroyed.
class Daemon {
 public:
  Daemon(const std::filesystem::path& state, const std::string& config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  const std::filesystem::path& state() const { return state_; }
  std::filesystem::path socket() const { return state_ / "moatd.sock"; }
  pid_t pid() const { return pid_; }
  Json call(std::string_view verb, Json args) const;
  // Resident set size of moatd now, in KiB (VmRSS).
  uint64_t rss_kib() const;

 private:
  std::filesystem::path state_;
  pid_t pid_ = -1;
};

// What one exec over the API ended with.
struct ExecResult {
  int exit_code = -1;
  std::string out;  // stdout and stderr, as they came
};

// One exec of argv in sandbox `name` over the API, as a client of moatd does it; returns once Exit
// arrives.
ExecResult exec_over_api(const Daemon& d, const std::string& name, std::vector<std::string> argv);

// Replaces the section that starts with `heading` ("## Router") in the markdown file, or appends it.
void write_section(const std::string& path, const std::string& heading, const std::string& section);

// "2 cores, host NAME, 2026-11-27 13:00 UTC": the machine line every section carries.
std::string machine_line();

}  // namespace moat::bench

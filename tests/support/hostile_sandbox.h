#pragma once
// The hostile suite's fixture: a real moatd with one running sandbox, "box", on the runtime under test
// (the parameter: runc, runsc, crun where the host allows it), small limits so that exhaustion attempts
// end quickly, and a report the test fills with each attempt and its outcome.
#include <gtest/gtest.h>

#include <memory>

#include "support/hostile_report.h"
#include "support/moat_env.h"

namespace moat::testing {

class HostileSandbox : public ::testing::TestWithParam<std::string> {
 protected:
  static constexpr int kPids = 64;
  static constexpr const char* kDisk = "64MiB";
  static constexpr int64_t kDiskBytes = 64ll << 20;

  void SetUp() override {
    MOAT_REQUIRE_ROOT();
    std::string why;
    if (!runtime_usable(GetParam(), &why)) GTEST_SKIP() << why;
    env_ = std::make_unique<MoatEnv>(config(extra_config()));
    env_->ok({"sandbox", "create", "box", "--start"});
  }

  // What a suite adds to moat.toml (egress routes, agents...).
  virtual std::string extra_config() const { return ""; }
  // The suite's moat.toml: `more` is appended.
  std::string config(const std::string& more) const {
    return fmt::format("[sandbox]\nimage = \"tiny\"\nruntime = \"{}\"\ndisk = \"{}\"\nmemory = \"96MiB\"\npids = {}\n{}",
                       GetParam(), kDisk, kPids, more);
  }

  // moat-probe, the hostile agent, into a sandbox at /usr/local/bin/moat-probe.
  void copy_probe(const std::string& sandbox = "box") {
    env_->ok({"cp", MOAT_BUILD_DIR "/moat-probe", sandbox + ":/usr/local/bin/moat-probe"});
  }

  // Runs a shell command in a sandbox; the result whatever the exit code.
  CliResult sh(const std::string& sandbox, const std::string& script, const std::string& timeout = "60s") {
    return env_->moat({"exec", "--timeout", timeout, sandbox, "--", "sh", "-c", script});
  }

  std::unique_ptr<MoatEnv> env_;
  HostileReport report_{GetParam()};
};

// Instantiates a hostile test suite on every runtime tier.
#define MOAT_HOSTILE_ON_EVERY_RUNTIME(suite)                                                       \
  INSTANTIATE_TEST_SUITE_P(Runtimes, suite, ::testing::Values("runc", "runsc", "crun"), \
                           [](const auto& info) { return info.param; })

}  // namespace moat::testing

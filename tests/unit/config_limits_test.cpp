// The one table of sandbox limits and its check: every limit has a positive floor (no value in range
// switches a limit off), refusals name the field, the value and the allowed range, and JSON input
// (the API, agent settings) and moat.toml go through the same check.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "config/config.h"
#include "config/limits.h"

using namespace moat;

namespace {

std::string refusal(Limit l, double v, std::string_view field) {
  auto st = check_limit(l, v, field);
  if (st) return "";
  EXPECT_EQ(st.error().kind, ErrorKind::InvalidInput);
  return st.error().message;
}

}  // namespace

TEST(Limits, TableHasEveryLimitWithAPositiveFloor) {
  for (auto l : {Limit::DiskBytes, Limit::MemoryBytes, Limit::Pids, Limit::Cpus, Limit::IoReadBps, Limit::IoWriteBps,
                 Limit::IoReadIops, Limit::IoWriteIops}) {
    const auto& r = limit_range(l);
    EXPECT_EQ(r.limit, l);
    EXPECT_GT(r.min, 0) << r.name;  // 0 or below would mean "no limit" to the runtimes
    EXPECT_LT(r.min, r.max) << r.name;
    EXPECT_LE(r.max, 9007199254740992.0) << r.name;  // exactly representable as a double
  }
  EXPECT_EQ(limit_range(Limit::Pids).min, 16);
  EXPECT_EQ(limit_range(Limit::Pids).max, 4194304);
  EXPECT_EQ(limit_range_text(Limit::Pids), "16 to 4194304 processes and threads");
  EXPECT_EQ(limit_range_text(Limit::Cpus), "0.01 to 1024 CPUs");
  EXPECT_EQ(limit_range_text(Limit::DiskBytes), "64MiB to 8TiB");
  EXPECT_EQ(limit_range_text(Limit::MemoryBytes), "32MiB to 4TiB");
  EXPECT_EQ(limit_range_text(Limit::IoReadBps), "1MiB to 1TiB per second");
  EXPECT_EQ(limit_range_text(Limit::IoWriteIops), "16 to 1000000000 I/O operations per second");
  EXPECT_LE(limit_range(Limit::IoReadIops).max, 4294967295.0) << "the kernel keeps IOPS in 32 bits";
}

TEST(Limits, DefaultsAreInRange) {
  SandboxDefaults d;
  EXPECT_TRUE(check_limit(Limit::DiskBytes, d.disk_bytes, "disk"));
  EXPECT_TRUE(check_limit(Limit::MemoryBytes, d.memory_bytes, "memory"));
  EXPECT_TRUE(check_limit(Limit::Pids, d.pids, "pids"));
  EXPECT_TRUE(check_limit(Limit::Cpus, d.cpus, "cpus"));
  for (const auto& f : io_fields<uint64_t>())
    EXPECT_TRUE(check_limit(f.limit, double(d.io.*f.field), limit_range(f.limit).name)) << limit_range(f.limit).name;
}

TEST(Limits, IoLimitsAreReadFromJsonUnderTheirTableNames) {
  IoThrottle<std::optional<uint64_t>> io;
  ASSERT_TRUE(read_io_limits(Json{{"io_read_bps", "8MiB"}, {"io_write_iops", 500}}, io));
  EXPECT_EQ(io.read_bps, 8ull << 20);
  EXPECT_EQ(io.write_iops, 500u);
  EXPECT_FALSE(io.write_bps);
  EXPECT_FALSE(io.read_iops);
  Json back = Json::object();
  put_io_limits(back, io);
  EXPECT_EQ(back, (Json{{"io_read_bps", 8ull << 20}, {"io_write_iops", 500}}));
  auto full = io_or(io, kDefaultIoThrottle);
  EXPECT_EQ(full.read_bps, 8ull << 20);
  EXPECT_EQ(full.write_bps, kDefaultIoWriteBps);
  auto bad = read_io_limits(Json{{"io_read_iops", 0}}, io);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message, "io_read_iops: 0 is out of range; allowed 16 to 1000000000 I/O operations per second");
  bad = read_io_limits(Json{{"io_write_bps", "512KiB"}}, io);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message, "io_write_bps: 512KiB is out of range; allowed 1MiB to 1TiB per second");
}

TEST(Limits, BoundsAreInclusiveAndEverythingOutsideIsRefused) {
  for (const auto& r : kLimitTable) {
    EXPECT_TRUE(check_limit(r.limit, r.min, r.name)) << r.name;
    EXPECT_TRUE(check_limit(r.limit, r.max, r.name)) << r.name;
    for (double bad : {0.0, -1.0, r.min / 2, r.max * 2, std::nan(""), std::numeric_limits<double>::infinity(),
                       -std::numeric_limits<double>::infinity()})
      EXPECT_FALSE(check_limit(r.limit, bad, r.name)) << r.name << " " << bad;
  }
  EXPECT_FALSE(check_limit(Limit::Pids, 16.5, "pids"));  // whole numbers only
  EXPECT_TRUE(check_limit(Limit::Cpus, 0.5, "cpus"));
}

TEST(Limits, RefusalNamesFieldValueAndRange) {
  EXPECT_EQ(refusal(Limit::Cpus, -1, "cpus"), "cpus: -1 is out of range; allowed 0.01 to 1024 CPUs");
  EXPECT_EQ(refusal(Limit::Cpus, 0, "cpus"), "cpus: 0 is out of range; allowed 0.01 to 1024 CPUs");
  EXPECT_EQ(refusal(Limit::Pids, 1, "pids"), "pids: 1 is out of range; allowed 16 to 4194304 processes and threads");
  EXPECT_EQ(refusal(Limit::Pids, 0, "pids"), "pids: 0 is out of range; allowed 16 to 4194304 processes and threads");
  EXPECT_EQ(refusal(Limit::MemoryBytes, double(1 << 20), "memory"), "memory: 1MiB is out of range; allowed 32MiB to 4TiB");
  EXPECT_EQ(refusal(Limit::DiskBytes, 1000000, "disk_bytes"),
            "disk_bytes: 976.6KiB (1000000 bytes) is out of range; allowed 64MiB to 8TiB");
  // Without a field (moat.toml's error names the file, line and key itself).
  EXPECT_EQ(refusal(Limit::Pids, 8, ""), "8 is out of range; allowed 16 to 4194304 processes and threads");
}

TEST(Limits, JsonValuesAreReadThenChecked) {
  std::optional<uint64_t> u;
  std::optional<double> d;
  ASSERT_TRUE(read_limit(Json::object(), "pids", Limit::Pids, u));
  EXPECT_FALSE(u);
  ASSERT_TRUE(read_limit(Json{{"pids", nullptr}}, "pids", Limit::Pids, u));
  EXPECT_FALSE(u);
  ASSERT_TRUE(read_limit(Json{{"pids", 64}}, "pids", Limit::Pids, u));
  EXPECT_EQ(u, 64u);
  ASSERT_TRUE(read_limit(Json{{"memory", "64MiB"}}, "memory", Limit::MemoryBytes, u));
  EXPECT_EQ(u, 64ull << 20);
  ASSERT_TRUE(read_limit(Json{{"cpus", 0.5}}, "cpus", Limit::Cpus, d));
  EXPECT_EQ(d, 0.5);

  auto message = [](const Json& j, std::string_view key, Limit l) -> std::string {
    std::optional<uint64_t> whole;
    std::optional<double> frac;
    auto st = l == Limit::Cpus ? read_limit(j, key, l, frac) : read_limit(j, key, l, whole);
    EXPECT_FALSE(whole || frac) << "nothing is taken from a refused value";
    return st ? "" : st.error().message;
  };
  // A negative JSON integer is refused as itself, never wrapped round to a huge unsigned value.
  EXPECT_EQ(message(Json{{"pids", -1}}, "pids", Limit::Pids),
            "pids: -1 is out of range; allowed 16 to 4194304 processes and threads");
  EXPECT_EQ(message(Json{{"cpus", -1.0}}, "cpus", Limit::Cpus), "cpus: -1 is out of range; allowed 0.01 to 1024 CPUs");
  EXPECT_NE(message(Json{{"pids", 16.5}}, "pids", Limit::Pids).find("whole number"), std::string::npos);
  EXPECT_NE(message(Json{{"pids", "16"}}, "pids", Limit::Pids).find("pids: expected a number"), std::string::npos);
  EXPECT_NE(message(Json{{"disk", "lots"}}, "disk", Limit::DiskBytes).find("disk: invalid size 'lots'"), std::string::npos);
  EXPECT_EQ(message(Json{{"disk", "1MiB"}}, "disk", Limit::DiskBytes), "disk: 1MiB is out of range; allowed 64MiB to 8TiB");
  EXPECT_NE(message(Json{{"memory", 18446744073709551615ull}}, "memory", Limit::MemoryBytes).find("out of range"),
            std::string::npos);
}

TEST(Limits, MoatTomlUsesTheSameCheckNamingLineAndKey) {
  auto expect_refused = [](std::string toml, std::string_view needle) {
    auto c = parse_config(toml, "moat.toml");
    ASSERT_FALSE(c) << toml;
    EXPECT_NE(c.error().message.find(needle), std::string::npos) << c.error().message;
  };
  expect_refused("[sandbox]\npids = 1\n", "moat.toml:2: sandbox.pids: 1 is out of range; allowed 16 to 4194304");
  expect_refused("[sandbox]\npids = 0\n", "sandbox.pids: 0 is out of range");
  expect_refused("[sandbox]\ncpus = 0\n", "sandbox.cpus: 0 is out of range; allowed 0.01 to 1024 CPUs");
  expect_refused("[sandbox]\ncpus = -1.5\n", "sandbox.cpus: -1.5 is out of range");
  expect_refused("[sandbox]\nmemory = \"1MiB\"\n", "sandbox.memory: 1MiB is out of range; allowed 32MiB to 4TiB");
  expect_refused("[sandbox]\ndisk = 1024\n", "sandbox.disk: 1KiB is out of range; allowed 64MiB to 8TiB");
  expect_refused("[sandbox]\npids = \"many\"\n", "sandbox.pids: expected an integer; allowed 16 to 4194304");
  auto ok = parse_config("[sandbox]\npids = 16\ncpus = 2\nmemory = \"32MiB\"\ndisk = \"64MiB\"\n", "moat.toml");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->sandbox.pids, 16u);
  EXPECT_EQ(ok->sandbox.cpus, 2.0);
  EXPECT_EQ(ok->sandbox.memory_bytes, 32ull << 20);
}

#include "support/hostile_report.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace moat::testing {
namespace {

// Tabs and newlines would break the row format; the report shows them escaped.
std::string one_line(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\t') out += "\\t";
    else if (c == '\n') out += "\\n";
    else if (c == '|') out += "\\|";  // the markdown table's separator
    else out += c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace

void HostileReport::add(std::string_view category, std::string_view attempt, std::string_view outcome, bool safe) {
  rows_.push_back({std::string(category), one_line(attempt), one_line(outcome), safe});
  EXPECT_TRUE(safe) << "[" << runtime_ << "] " << category << ": " << attempt << " -> " << outcome;
}

int HostileReport::add_probe_lines(std::string_view category, std::string_view probe_output) {
  int lines = 0;
  while (!probe_output.empty()) {
    auto nl = probe_output.find('\n');
    auto line = probe_output.substr(0, nl);
    probe_output.remove_prefix(nl == std::string_view::npos ? probe_output.size() : nl + 1);
    auto colon = line.find(": ");
    if (colon == std::string_view::npos) continue;  // the closing "N allowed"
    auto outcome = line.substr(colon + 2);
    add(category, line.substr(0, colon), outcome, outcome.starts_with("denied"));
    ++lines;
  }
  return lines;
}

HostileReport::~HostileReport() {
  auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (rows_.empty() || info == nullptr) return;
  std::string name = fmt::format("{}.{}", info->test_suite_name(), info->name());
  for (char& c : name)
    if (c == '/') c = '_';
  auto dir = std::filesystem::path(MOAT_BUILD_DIR) / "hostile-report";
  std::filesystem::create_directories(dir);
  std::ofstream out(dir / (name + ".tsv"), std::ios::trunc);
  for (auto& r : rows_)
    out << runtime_ << '\t' << r.category << '\t' << r.attempt << '\t' << r.outcome << '\t' << (r.safe ? "safe" : "UNSAFE")
        << '\t' << name << '\n';
}

}  // namespace moat::testing

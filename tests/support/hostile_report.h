#pragma once
// The hostile suite's report: one row per attempt an agent makes to get out, reach what is not its
// own, exhaust the host or find a secret; each with what happened and whether that is safe. A test
// writes its rows to <build>/hostile-report/<Suite.Test>.tsv when it ends; scripts/hostile-report
// assembles them into <build>/hostile-report.md after `make test`.
#include <string>
#include <string_view>
#include <vector>

namespace moat::testing {

class HostileReport {
 public:
  explicit HostileReport(std::string runtime) : runtime_(std::move(runtime)) {}
  ~HostileReport();  // writes the rows
  HostileReport(const HostileReport&) = delete;
  HostileReport& operator=(const HostileReport&) = delete;

  // Records one attempt; an unsafe outcome also fails the running test.
  void add(std::string_view category, std::string_view attempt, std::string_view outcome, bool safe);
  // Records moat-probe's lines ("NAME: denied (reason)", "NAME: ALLOWED", "NAME: REACHABLE"); only
  // "denied" is safe. Returns how many lines it read, so a probe that said nothing fails the test.
  int add_probe_lines(std::string_view category, std::string_view probe_output);

 private:
  struct Row {
    std::string category, attempt, outcome;
    bool safe;
  };
  std::string runtime_;
  std::vector<Row> rows_;
};

}  // namespace moat::testing

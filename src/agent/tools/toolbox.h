#pragma once
// The tools an agent's model is offered, by name: their specs for the request, and dispatch of a
// call to the right one.
#include <memory>
#include <vector>

#include "agent/tools/tool.h"

namespace moat::agent {

class ToolBox {
 public:
  // All built-in tools.
  static ToolBox standard();
  void add(std::unique_ptr<Tool> tool);

  const std::vector<ToolSpec>& specs() const { return specs_; }
  // An unknown tool name or a non-object input is a tool error for the model, not a failure.
  Result<ToolOutput> call(const std::string& name, const Json& input, ToolContext& ctx) const;

 private:
  std::vector<std::unique_ptr<Tool>> tools_;
  std::vector<ToolSpec> specs_;
};

}  // namespace moat::agent

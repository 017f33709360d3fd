#include "agent/tools/toolbox.h"

namespace moat::agent {

ToolBox ToolBox::standard() {
  ToolBox b;
  b.add(make_bash_tool());
  b.add(make_read_file_tool());
  b.add(make_write_file_tool());
  b.add(make_edit_file_tool());
  b.add(make_list_files_tool());
  b.add(make_web_fetch_tool());
  b.add(make_send_message_tool());
  b.add(make_remember_tool());
  return b;
}

void ToolBox::add(std::unique_ptr<Tool> tool) {
  specs_.push_back(tool->spec());
  tools_.push_back(std::move(tool));
}

Result<ToolOutput> ToolBox::call(const std::string& name, const Json& input, ToolContext& ctx) const {
  for (size_t i = 0; i < tools_.size(); ++i) {
    if (specs_[i].name != name) continue;
    if (!input.is_object()) return ToolOutput::error(fmt::format("{}: the input must be a JSON object", name));
    return tools_[i]->call(input, ctx);
  }
  std::string known;
  for (const auto& s : specs_) known += (known.empty() ? "" : ", ") + s.name;
  return ToolOutput::error(fmt::format("there is no tool named '{}'; the tools are: {}", name, known));
}

}  // namespace moat::agent

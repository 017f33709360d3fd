// read_file, write_file, edit_file, list_files: file work in the agent's sandbox. Every path is
// resolved inside the sandbox by moat-init or a command there, never on the host (invariant 1).
#include <algorithm>

#include "agent/tools/tool.h"

namespace moat::agent {

namespace {

constexpr size_t kReadMax = 8 << 20;       // what read_file loads at all
constexpr size_t kReadShown = 64 * 1024;   // what the model gets back at once
constexpr size_t kListShown = 30 * 1024;

Json path_schema(const char* what) { return {{"type", "string"}, {"description", what}}; }

class ReadFileTool : public Tool {
 public:
  ToolSpec spec() const override {
    return {"read_file",
            "Read a text file in your sandbox. Relative paths are under /workspace. Optionally a range "
            "of lines: offset (1-based first line) and limit (number of lines). At most 64 KB is returned.",
            Json{{"type", "object"},
                 {"properties",
                  {{"path", path_schema("file to read")},
                   {"offset", {{"type", "integer"}, {"description", "first line, 1-based"}}},
                   {"limit", {{"type", "integer"}, {"description", "number of lines"}}}}},
                 {"required", {"path"}}}};
  }

  Result<ToolOutput> call(const Json& input, ToolContext& ctx) const override {
    auto p = string_arg(input, "path");
    if (!p) return ToolOutput::error(p.error().message);
    auto path = sandbox_path(*p);
    auto data = ctx.bench.read_file(path, kReadMax);
    if (!data) {
      if (data.error().kind == ErrorKind::ResourceLimit)
        return ToolOutput::error(fmt::format("{} is larger than {} MB; read parts of it with bash (head, tail, sed -n)",
                                             path, kReadMax >> 20));
      return bench_error(data.error(), fmt::format("reading {}", path));
    }
    bool ranged = input.contains("offset") || input.contains("limit");
    if (!ranged) return ToolOutput::ok(cap_text(std::move(*data), kReadShown));
    auto first = int_arg_or(input, "offset", 1, 1, INT64_MAX);
    auto count = int_arg_or(input, "limit", INT64_MAX, 0, INT64_MAX);
    int64_t end_line = count > INT64_MAX - first ? INT64_MAX : first + count;  // one past the last line wanted
    std::string out;
    int64_t line = 1;
    size_t pos = 0;
    while (pos < data->size() && line < end_line) {
      size_t nl = data->find('\n', pos);
      size_t end = nl == std::string::npos ? data->size() : nl + 1;
      if (line >= first) out.append(*data, pos, end - pos);
      pos = end;
      ++line;
    }
    if (out.empty() && first > 1)
      return ToolOutput::error(fmt::format("{} has only {} lines; offset {} is past the end", path, line - 1, first));
    return ToolOutput::ok(cap_text(std::move(out), kReadShown));
  }
};

class WriteFileTool : public Tool {
 public:
  ToolSpec spec() const override {
    return {"write_file",
            "Write (create or replace) a file in your sandbox with the given content; parent directories "
            "are created. Relative paths are under /workspace.",
            Json{{"type", "object"},
                 {"properties", {{"path", path_schema("file to write")}, {"content", path_schema("the whole new content")}}},
                 {"required", {"path", "content"}}}};
  }

  Result<ToolOutput> call(const Json& input, ToolContext& ctx) const override {
    auto p = string_arg(input, "path");
    if (!p) return ToolOutput::error(p.error().message);
    auto content = string_arg(input, "content");
    if (!content) return ToolOutput::error(content.error().message);
    auto path = sandbox_path(*p);
    if (auto st = ctx.bench.write_file(path, *content); !st) return bench_error(st.error(), fmt::format("writing {}", path));
    return ToolOutput::ok(fmt::format("wrote {} bytes to {}", content->size(), path));
  }
};

size_t count_occurrences(std::string_view hay, std::string_view needle) {
  size_t n = 0;
  for (size_t pos = hay.find(needle); pos != std::string_view::npos; pos = hay.find(needle, pos + needle.size())) ++n;
  return n;
}

class EditFileTool : public Tool {
 public:
  ToolSpec spec() const override {
    return {"edit_file",
            "Replace one exact occurrence of old_string with new_string in a file in your sandbox. "
            "old_string must occur exactly once: include enough surrounding text to make it unique.",
            Json{{"type", "object"},
                 {"properties",
                  {{"path", path_schema("file to edit")},
                   {"old_string", path_schema("exact text to replace (must be unique in the file)")},
                   {"new_string", path_schema("replacement text")}}},
                 {"required", {"path", "old_string", "new_string"}}}};
  }

  Result<ToolOutput> call(const Json& input, ToolContext& ctx) const override {
    auto p = string_arg(input, "path");
    if (!p) return ToolOutput::error(p.error().message);
    auto old_s = string_arg(input, "old_string");
    if (!old_s) return ToolOutput::error(old_s.error().message);
    auto new_s = string_arg(input, "new_string");
    if (!new_s) return ToolOutput::error(new_s.error().message);
    if (old_s->empty()) return ToolOutput::error("old_string is empty; use write_file to create or replace a whole file");
    auto path = sandbox_path(*p);
    auto data = ctx.bench.read_file(path, kReadMax);
    if (!data) return bench_error(data.error(), fmt::format("reading {}", path));
    size_t n = count_occurrences(*data, *old_s);
    if (n == 0) return ToolOutput::error(fmt::format("old_string was not found in {}; nothing was changed", path));
    if (n > 1)
      return ToolOutput::error(fmt::format(
          "old_string occurs {} times in {}; include more surrounding text so it matches exactly once (nothing was changed)",
          n, path));
    data->replace(data->find(*old_s), old_s->size(), *new_s);
    if (auto st = ctx.bench.write_file(path, *data); !st) return bench_error(st.error(), fmt::format("writing {}", path));
    return ToolOutput::ok(fmt::format("edited {} (1 replacement)", path));
  }
};

class ListFilesTool : public Tool {
 public:
  ToolSpec spec() const override {
    return {"list_files",
            "List files and directories under a path in your sandbox (default /workspace), down to a "
            "depth (default 2, max 6). Directories end with '/'.",
            Json{{"type", "object"},
                 {"properties",
                  {{"path", path_schema("directory to list")},
                   {"depth", {{"type", "integer"}, {"description", "how many levels down (1-6)"}}}}}}};
  }

  Result<ToolOutput> call(const Json& input, ToolContext& ctx) const override {
    auto path = sandbox_path(string_arg_or(input, "path", "/workspace"));
    auto depth = int_arg_or(input, "depth", 2, 1, 6);
    // The path goes in as $1 (never into the script text), and it is absolute, so find never reads
    // it as an option.
    static constexpr const char* kScript =
        "cd \"$1\" 2>/dev/null || { echo \"no such directory: $1\" >&2; exit 2; }; "
        "find . -mindepth 1 -maxdepth \"$2\" -type d | sed 's|^\\./||; s|$|/|'; "
        "find . -mindepth 1 -maxdepth \"$2\" ! -type d | sed 's|^\\./||'";
    auto r = ctx.bench.run({"/bin/sh", "-c", kScript, "list_files", path, std::to_string(depth)}, {},
                           std::chrono::seconds(60), 1 << 20, {}, "/");
    if (!r) return bench_error(r.error(), fmt::format("listing {}", path));
    if (r->exit_code != 0)
      return ToolOutput::error(r->err.empty() ? fmt::format("listing {} failed (exit {})", path, r->exit_code) : r->err);
    std::vector<std::string> lines;
    size_t pos = 0;
    while (pos < r->out.size()) {
      size_t nl = r->out.find('\n', pos);
      if (nl == std::string::npos) nl = r->out.size();
      if (nl > pos) lines.push_back(r->out.substr(pos, nl - pos));
      pos = nl + 1;
    }
    std::sort(lines.begin(), lines.end());
    std::string text = fmt::format("{} ({} entries{}):\n", path, lines.size(), r->truncated ? ", listing cut" : "");
    for (auto& l : lines) text += l + "\n";
    if (lines.empty()) text += "(empty)\n";
    return ToolOutput::ok(cap_text(std::move(text), kListShown));
  }
};

}  // namespace

std::unique_ptr<Tool> make_read_file_tool() { return std::make_unique<ReadFileTool>(); }
std::unique_ptr<Tool> make_write_file_tool() { return std::make_unique<WriteFileTool>(); }
std::unique_ptr<Tool> make_edit_file_tool() { return std::make_unique<EditFileTool>(); }
std::unique_ptr<Tool> make_list_files_tool() { return std::make_unique<ListFilesTool>(); }

}  // namespace moat::agent

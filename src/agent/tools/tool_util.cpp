#include "agent/tools/tool.h"

namespace moat::agent {

Result<ToolOutput> bench_error(const Error& e, std::string_view doing) {
  if (e.kind == ErrorKind::Unavailable || e.kind == ErrorKind::Internal) return wrap(e, doing);
  return ToolOutput::error(fmt::format("{}: {}", doing, e.message));
}

Result<std::string> string_arg(const Json& input, const char* key) {
  auto it = input.find(key);
  if (it == input.end() || !it->is_string())
    return fail(ErrorKind::InvalidInput, "the argument '{}' (a string) is required", key);
  return it->get<std::string>();
}

std::string string_arg_or(const Json& input, const char* key, std::string fallback) {
  auto it = input.find(key);
  if (it == input.end() || !it->is_string()) return fallback;
  return it->get<std::string>();
}

int64_t int_arg_or(const Json& input, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
  auto it = input.find(key);
  int64_t v = fallback;
  if (it != input.end() && it->is_number()) v = static_cast<int64_t>(it->get<double>());
  else if (it != input.end() && it->is_string()) {
    try {
      v = std::stoll(it->get<std::string>());
    } catch (...) {
      // Models sometimes quote numbers; anything unparseable keeps the default.
    }
  }
  return std::clamp(v, lo, hi);
}

std::string sandbox_path(const std::string& p) {
  if (p.empty()) return "/workspace";
  if (p[0] == '/') return p;
  if (p.starts_with("~/")) return "/workspace/" + p.substr(2);
  return "/workspace/" + p;
}

std::string cap_text(std::string text, size_t limit, uint64_t total_bytes) {
  if (total_bytes < text.size()) total_bytes = text.size();
  if (total_bytes <= limit && text.size() <= limit) return text;
  size_t keep = std::min(limit, text.size());
  // Step back over UTF-8 continuation bytes so the cut never splits a character.
  while (keep > 0 && keep < text.size() && (static_cast<unsigned char>(text[keep]) & 0xC0) == 0x80) --keep;
  text.resize(keep);
  if (!text.empty() && text.back() != '\n') text += '\n';
  text += fmt::format("[output truncated: {} bytes not shown]", total_bytes - keep);
  return text;
}

}  // namespace moat::agent

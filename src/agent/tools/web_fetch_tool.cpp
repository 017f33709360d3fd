// web_fetch: an HTTP(S) GET made from INSIDE the agent's sandbox (curl, else busybox wget), so it
// leaves through the sandbox's egress gateway like anything else the agent runs: policy applies,
// credentials are injected only where bound, and the audit log records the decision. A fetch made
// by moatd itself would bypass all of that.
#include "agent/tools/tool.h"

namespace moat::agent {

namespace {

constexpr size_t kDefaultBody = 30 * 1024, kMaxBody = 256 * 1024;

// Body to stdout; "moat-status=", "moat-rc=" and the client's own messages to stderr. The URL and
// timeout arrive as $1 and $2, never inside the script text.
constexpr const char* kScript = R"sh(
b=/tmp/.moat-fetch-$$; e=/tmp/.moat-fetch-err-$$
if command -v curl >/dev/null 2>&1; then
  code=$(curl -sS -L --max-time "$2" -o "$b" -w '%{http_code}' "$1" 2>"$e"); rc=$?
else
  wget -S -O "$b" "$1" 2>"$e"; rc=$?  # busybox wget may lack -T; the exec timeout bounds it
  code=$(sed -n 's/^ *HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' "$e" | tail -n 1)
fi
cat "$b" 2>/dev/null
echo "moat-status=${code:-0}" >&2
echo "moat-rc=$rc" >&2
cat "$e" >&2
rm -f "$b" "$e"
)sh";

std::string field(const std::string& err, std::string_view key) {
  auto pos = err.find(key);
  if (pos == std::string::npos) return "";
  pos += key.size();
  return err.substr(pos, err.find('\n', pos) - pos);
}

// The client's own words, minus our markers and wget's progress noise.
std::string client_messages(const std::string& err) {
  std::string out;
  size_t pos = 0;
  while (pos < err.size()) {
    size_t nl = err.find('\n', pos);
    if (nl == std::string::npos) nl = err.size();
    std::string_view line(err.data() + pos, nl - pos);
    pos = nl + 1;
    if (line.starts_with("moat-status=") || line.starts_with("moat-rc=") || line.find("ETA") != std::string_view::npos)
      continue;
    if (line.find_first_not_of(" \r\t") == std::string_view::npos) continue;
    out.append(line);
    out += '\n';
  }
  return out;
}

class WebFetchTool : public Tool {
 public:
  ToolSpec spec() const override {
    return {"web_fetch",
            "Fetch a URL (HTTP GET) through your sandbox's egress gateway, which enforces the network "
            "policy set for you. Returns the HTTP status and the body (text; capped, default 30 KB).",
            Json{{"type", "object"},
                 {"properties",
                  {{"url", {{"type", "string"}, {"description", "http:// or https:// URL"}}},
                   {"max_bytes", {{"type", "integer"}, {"description", "body bytes to return (max 262144)"}}}}},
                 {"required", {"url"}}}};
  }

  Result<ToolOutput> call(const Json& input, ToolContext& ctx) const override {
    auto url = string_arg(input, "url");
    if (!url) return ToolOutput::error(url.error().message);
    if (!url->starts_with("http://") && !url->starts_with("https://"))
      return ToolOutput::error(fmt::format("'{}' is not an http:// or https:// URL", *url));
    for (unsigned char c : *url)
      if (c <= 0x20 || c == 0x7f) return ToolOutput::error("the URL contains spaces or control characters; encode them");
    auto max_body = static_cast<size_t>(int_arg_or(input, "max_bytes", kDefaultBody, 1, kMaxBody));
    constexpr int kSeconds = 60;
    auto r = ctx.bench.run({"/bin/sh", "-c", kScript, "web_fetch", *url, std::to_string(kSeconds)}, {},
                           std::chrono::seconds(kSeconds + 10), max_body, {}, "/");
    if (!r) return bench_error(r.error(), fmt::format("fetching {}", *url));
    if (r->timed_out) return ToolOutput::error(fmt::format("fetching {} timed out", *url));
    auto status = field(r->err, "moat-status=");
    auto rc = field(r->err, "moat-rc=");
    auto said = client_messages(r->err);
    if (rc.empty()) return ToolOutput::error(fmt::format("fetching {} failed: {}", *url, r->err.empty() ? r->out : r->err));
    bool refused = said.find("moat egress") != std::string::npos || said.find("CONNECT tunnel failed") != std::string::npos ||
                   (status == "403" && r->out.starts_with("moat egress"));
    if (refused || r->out.starts_with("moat egress")) {
      return ToolOutput::error(fmt::format(
          "the moat egress gateway refused {} (network policy does not allow it). {}{}The owner can allow the host "
          "with `moat policy allow {} HOST`.",
          *url, cap_text(r->out, 2048), said.empty() ? "" : "\n" + cap_text(said, 2048) + "\n", ctx.spec.name));
    }
    if (rc != "0" && r->out.empty())
      return ToolOutput::error(fmt::format("fetching {} failed (status {}): {}", *url, status.empty() ? "none" : status,
                                           cap_text(said.empty() ? "no message" : said, 4096)));
    std::string text = fmt::format("HTTP status: {}\n", status.empty() ? "unknown" : status);
    text += cap_text(r->out, max_body, r->out_bytes);
    bool ok = !status.empty() && status[0] == '2';
    return ToolOutput{std::move(text), !ok};
  }
};

}  // namespace

std::unique_ptr<Tool> make_web_fetch_tool() { return std::make_unique<WebFetchTool>(); }

}  // namespace moat::agent

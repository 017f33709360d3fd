#include "sandbox/id_ranges.h"

#include <fcntl.h>
#include <shadow.h>
#include <sys/file.h>
#include <unistd.h>

#include <charconv>

#include "base/fs.h"
#include "base/unique_fd.h"

namespace moat {
namespace {

std::vector<std::string_view> split(std::string_view line, char sep) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    auto end = line.find(sep, start);
    out.push_back(line.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

std::optional<int64_t> number(std::string_view s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

Result<std::string> read_optional(const std::filesystem::path& path) {
  auto text = read_file(path);
  if (!text && text.error().kind == ErrorKind::NotFound) return std::string();
  return text;
}

// "owner:first:count" lines; comments and malformed lines are not ranges (newuidmap ignores them too).
void add_subids(const std::filesystem::path& path, const std::string& text, std::vector<HostIdRange>& out) {
  int line_no = 0;
  for (auto line : split(text, '\n')) {
    ++line_no;
    auto f = split(line, ':');
    if (f.size() != 3 || f[0].empty() || f[0].front() == '#') continue;
    auto first = number(f[1]), count = number(f[2]);
    if (!first || !count || *count == 0) continue;
    out.push_back({fmt::format("{}:{} ({})", path.string(), line_no, line), std::string(f[0]), *first, *count});
  }
}

// passwd / group: name:x:id:...
void add_ids(const std::filesystem::path& path, const std::string& text, const char* what, std::vector<HostIdRange>& out) {
  for (auto line : split(text, '\n')) {
    auto f = split(line, ':');
    if (f.size() < 3) continue;
    if (auto id = number(f[2]))
      out.push_back({fmt::format("{}: {} {} (id {})", path.string(), what, f[0], *id), std::string(f[0]), *id, 1});
  }
}

bool overlaps(const HostIdRange& r, int64_t first, int64_t count) { return r.first < first + count && first < r.first + r.count; }

bool is_moat_entry(const HostIdRange& r) {
  return r.owner == kIdRegionOwner && r.first == kIdRegionFirst && r.count == kIdRegionCount && r.source.find("/sub") != std::string::npos;
}

}  // namespace

Result<HostIds> read_host_ids(const std::filesystem::path& etc) {
  HostIds ids;
  for (auto [name, list] : {std::pair{"subuid", &ids.uids}, std::pair{"subgid", &ids.gids}}) {
    auto text = read_optional(etc / name);
    if (!text) return std::unexpected(text.error());
    add_subids(etc / name, *text, *list);
  }
  for (auto [name, what, list] : {std::tuple{"passwd", "user", &ids.uids}, std::tuple{"group", "group", &ids.gids}}) {
    auto text = read_optional(etc / name);
    if (!text) return std::unexpected(text.error());
    add_ids(etc / name, *text, what, *list);
  }
  return ids;
}

std::optional<std::string> foreign_holder(const HostIds& ids, int64_t first, int64_t count) {
  for (const auto* list : {&ids.uids, &ids.gids})
    for (const auto& r : *list)
      if (!is_moat_entry(r) && overlaps(r, first, count)) return r.source;
  return std::nullopt;
}

Status register_id_region(const std::filesystem::path& etc) {
  // One writer at a time across every moatd on the host (tests run several); shadow's own tools
  // rewrite these files by rename too, so a reader never sees half a file.
  UniqueFd lock(open((etc / ".moat-subid.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock || flock(lock.get(), LOCK_EX) != 0)
    return fail(ErrorKind::Internal, "cannot lock {}: {}", (etc / ".moat-subid.lock").string(), strerror(errno));
  // And shadow's own lock, which useradd and usermod take before they rewrite these files, so that an
  // entry one of them is adding is not lost to our rename (only for the host's /etc: it locks there).
  struct ShadowLock {
    bool held = false;
    ~ShadowLock() {
      if (held) ulckpwdf();
    }
  } shadow;
  if (etc == "/etc") {
    if (lckpwdf() != 0)
      return fail(ErrorKind::Unavailable, "cannot take the password files' lock (lckpwdf: {}); is useradd running? "
                  "start moatd again", strerror(errno));
    shadow.held = true;
  }
  for (auto name : {"subuid", "subgid"}) {
    auto path = etc / name;
    auto text = read_optional(path);
    if (!text) return std::unexpected(text.error());
    std::vector<HostIdRange> entries;
    add_subids(path, *text, entries);
    bool present = false;
    for (const auto& r : entries) {
      if (is_moat_entry(r)) {
        present = true;
      } else if (overlaps(r, kIdRegionFirst, kIdRegionCount)) {
        return fail(ErrorKind::Conflict,
                    "{} overlaps moat's own id region {}-{} (sandbox uids and gids come from there): whoever it names "
                    "could act as a sandbox's root; move that entry below {} or above {}, then start moatd again",
                    r.source, kIdRegionFirst, kIdRegionFirst + kIdRegionCount - 1, kIdRegionFirst,
                    kIdRegionFirst + kIdRegionCount - 1);
      }
    }
    if (present) continue;
    std::string updated = *text;
    if (!updated.empty() && !updated.ends_with('\n')) updated += '\n';
    updated += fmt::format("{}:{}:{}\n", kIdRegionOwner, kIdRegionFirst, kIdRegionCount);
    if (auto st = write_file_atomic(path, updated, 0644); !st)
      return wrap(st.error(), fmt::format("registering moat's id region in {}", path.string()));
  }
  return {};
}

}  // namespace moat

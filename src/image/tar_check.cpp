#include "image/tar_check.h"

#include <algorithm>
#include <charconv>

namespace moat::image {
namespace {

constexpr size_t kBlock = 512;

std::string field(std::string_view b, size_t off, size_t len) {
  auto f = b.substr(off, len);
  auto nul = f.find('\0');
  return std::string(nul == std::string_view::npos ? f : f.substr(0, nul));
}

// Numeric header field: octal text, or GNU base-256 when the top bit of the first byte is set.
bool parse_number(std::string_view f, uint64_t& out) {
  out = 0;
  if (!f.empty() && (static_cast<unsigned char>(f[0]) & 0x80)) {
    if (static_cast<unsigned char>(f[0]) & 0x40) return false;  // negative
    for (size_t i = 0; i < f.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(f[i]);
      if (i == 0) c &= 0x7f;
      if (out >> 56) return false;
      out = (out << 8) | c;
    }
    return true;
  }
  size_t i = 0;
  while (i < f.size() && (f[i] == ' ' || f[i] == '\0')) {
    if (f[i] == '\0' && i == 0) break;
    ++i;
  }
  bool any = false;
  for (; i < f.size() && f[i] >= '0' && f[i] <= '7'; ++i) {
    out = out * 8 + static_cast<uint64_t>(f[i] - '0');
    any = true;
  }
  return any || f.find_first_not_of(std::string_view("\0 ", 2)) == std::string_view::npos;
}

bool header_checksum_ok(std::string_view b) {
  uint64_t stored = 0;
  if (!parse_number(b.substr(148, 8), stored)) return false;
  uint64_t usum = 0;
  int64_t ssum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    unsigned char c = (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(b[i]);
    usum += c;
    ssum += static_cast<signed char>(c);
  }
  return stored == usum || static_cast<int64_t>(stored) == ssum;
}

bool all_zero(std::string_view b) {
  return std::all_of(b.begin(), b.end(), [](char c) { return c == '\0'; });
}

bool has_dotdot_component(std::string_view p) {
  size_t start = 0;
  while (start <= p.size()) {
    auto slash = p.find('/', start);
    auto comp = p.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (comp == "..") return true;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return false;
}

uint64_t padded(uint64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

}  // namespace

Compression detect_compression(std::string_view h) {
  auto starts = [&](std::string_view magic) { return h.substr(0, magic.size()) == magic; };
  if (starts("\x1f\x8b")) return Compression::Gzip;
  if (starts("\x28\xb5\x2f\xfd")) return Compression::Zstd;
  if (starts(std::string_view("\xfd" "7zXZ\0", 6))) return Compression::Xz;
  if (starts("BZh")) return Compression::Bzip2;
  return Compression::None;
}

std::string_view compression_name(Compression c) {
  switch (c) {
    case Compression::None: return "tar";
    case Compression::Gzip: return "gzip";
    case Compression::Zstd: return "zstd";
    case Compression::Xz: return "xz";
    case Compression::Bzip2: return "bzip2";
  }
  return "?";
}

Status TarChecker::feed(std::string_view chunk) {
  while (!chunk.empty() && !ended_) {
    if (state_ == State::Header) {
      size_t take = std::min(chunk.size(), kBlock - block_.size());
      block_.append(chunk.substr(0, take));
      chunk.remove_prefix(take);
      if (block_.size() < kBlock) return {};
      auto st = on_header();
      block_.clear();
      if (!st) return st;
      continue;
    }
    size_t take = static_cast<size_t>(std::min<uint64_t>(chunk.size(), remaining_));
    if (state_ != State::Data) {
      uint64_t want = collect_size_ > collect_.size() ? collect_size_ - collect_.size() : 0;
      collect_.append(chunk.substr(0, static_cast<size_t>(std::min<uint64_t>(take, want))));
    }
    chunk.remove_prefix(take);
    remaining_ -= take;
    if (remaining_ == 0) {
      if (state_ == State::LongName) {
        next_name_ = field(collect_, 0, collect_.size());
      } else if (state_ == State::LongLink) {
        next_link_ = field(collect_, 0, collect_.size());
      } else if (state_ == State::Pax) {
        parse_pax(collect_);
      }
      collect_.clear();
      state_ = State::Header;
    }
  }
  return {};
}

Status TarChecker::on_header() {
  std::string_view b = block_;
  if (all_zero(b)) {
    // GNU tar stops at the first zero block (a lone one only draws a warning), so nothing after it is extracted.
    if (!seen_header_) return fail(ErrorKind::InvalidInput, "not a tar archive: it starts with an empty block");
    ended_ = true;
    return {};
  }
  if (!header_checksum_ok(b)) {
    if (!seen_header_) return fail(ErrorKind::InvalidInput, "not a tar archive (no valid tar header at the start)");
    return fail(ErrorKind::InvalidInput, "corrupt tar archive: bad header checksum after {} members", members_);
  }
  seen_header_ = true;
  char type = b[156];
  uint64_t size = 0;
  if (!parse_number(b.substr(124, 12), size)) {
    return fail(ErrorKind::InvalidInput, "corrupt tar archive: bad size field after {} members", members_);
  }
  switch (type) {
    case 'L':
    case 'K':
    case 'x':
      if (size > (1u << 20)) return fail(ErrorKind::InvalidInput, "tar archive has an oversized extended header");
      state_ = type == 'L' ? State::LongName : type == 'K' ? State::LongLink : State::Pax;
      collect_.clear();
      collect_size_ = size;
      remaining_ = padded(size);
      if (remaining_ == 0) state_ = State::Header;
      return {};
    case 'g':  // pax global header: nothing in it names a member
      state_ = State::Data;
      remaining_ = padded(size);
      if (remaining_ == 0) state_ = State::Header;
      return {};
    default:
      break;
  }
  std::string name = field(b, 0, 100);
  std::string magic = field(b, 257, 6);
  std::string version(b.substr(263, 2));
  if (magic == "ustar" && version == "00") {  // POSIX ustar: a prefix field precedes the name
    std::string prefix = field(b, 345, 155);
    if (!prefix.empty()) name = prefix + "/" + name;
  }
  std::string link = field(b, 157, 100);
  if (!next_name_.empty()) name = std::exchange(next_name_, {});
  if (!next_link_.empty()) link = std::exchange(next_link_, {});
  if (has_next_size_) {
    size = next_size_;
    has_next_size_ = false;
  }
  ++members_;
  if (auto st = check_member(type, name, link); !st) return st;
  // Header-only types carry no data whatever their size field says (as GNU tar and Go's archive/tar read them).
  if (type == '1' || type == '2' || type == '3' || type == '4' || type == '5' || type == '6') size = 0;
  remaining_ = padded(size);
  state_ = remaining_ ? State::Data : State::Header;
  return {};
}

Status TarChecker::check_member(char type, const std::string& name, const std::string& link) const {
  if (name.empty()) return fail(ErrorKind::InvalidInput, "tar archive has a member with an empty name");
  if (name[0] == '/') {
    return fail(ErrorKind::InvalidInput, "tar archive member '{}' has an absolute path; images must use relative paths",
                name);
  }
  if (has_dotdot_component(name)) {
    return fail(ErrorKind::InvalidInput, "tar archive member '{}' contains '..'; refusing a path that escapes the root",
                name);
  }
  if (type == '1' && (link.empty() || link[0] == '/' || has_dotdot_component(link))) {
    return fail(ErrorKind::InvalidInput, "tar archive member '{}' is a hard link to '{}', outside the archive", name,
                link);
  }
  return {};
}

void TarChecker::parse_pax(std::string_view recs) {
  while (!recs.empty()) {
    auto sp = recs.find(' ');
    if (sp == std::string_view::npos) return;
    size_t len = 0;
    auto [p, ec] = std::from_chars(recs.data(), recs.data() + sp, len);
    if (ec != std::errc() || len <= sp + 1 || len > recs.size()) return;
    auto rec = recs.substr(sp + 1, len - sp - 1);
    if (!rec.empty() && rec.back() == '\n') rec.remove_suffix(1);
    auto eq = rec.find('=');
    if (eq != std::string_view::npos) {
      auto key = rec.substr(0, eq), value = rec.substr(eq + 1);
      if (key == "path") next_name_ = std::string(value);
      if (key == "linkpath") next_link_ = std::string(value);
      if (key == "size") {
        uint64_t v = 0;
        auto [q, ec2] = std::from_chars(value.data(), value.data() + value.size(), v);
        if (ec2 == std::errc()) {
          next_size_ = v;
          has_next_size_ = true;
        }
      }
    }
    recs.remove_prefix(len);
  }
}

Status TarChecker::finish() const {
  if (!seen_header_) return fail(ErrorKind::InvalidInput, "not a tar archive (the stream is empty or too short)");
  if (!ended_ && (state_ != State::Header || !block_.empty())) {
    return fail(ErrorKind::InvalidInput, "truncated tar archive: the stream ends inside member {}", members_);
  }
  return {};
}

}  // namespace moat::image

#include "egress/client_hello.h"

#include <algorithm>
#include <optional>
#include <vector>

namespace moat::egress {

namespace {

constexpr uint8_t kContentHandshake = 22;
constexpr uint8_t kHandshakeClientHello = 1;
constexpr size_t kRecordHeader = 5;
constexpr size_t kMaxRecordPayload = 1u << 14;     // RFC 8446 5.1: TLSPlaintext.length <= 2^14
constexpr size_t kMaxHelloBody = 16 * 1024;        // far above any real ClientHello (~2 KiB with PQ key shares)
constexpr uint16_t kExtServerName = 0;
constexpr uint8_t kNameTypeHostName = 0;

// A cursor over untrusted bytes: every read checks the bounds, and a failed read poisons the reader
// so a chain of reads can be checked once.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> d) : d_(d) {}
  bool ok() const { return ok_; }
  size_t remaining() const { return ok_ ? d_.size() - pos_ : 0; }
  uint32_t u8() { return take(1) ? d_[pos_ - 1] : 0; }
  uint32_t u16() { return take(2) ? (uint32_t{d_[pos_ - 2]} << 8 | d_[pos_ - 1]) : 0; }
  uint32_t u24() { return take(3) ? (uint32_t{d_[pos_ - 3]} << 16 | uint32_t{d_[pos_ - 2]} << 8 | d_[pos_ - 1]) : 0; }
  std::span<const uint8_t> bytes(size_t n) { return take(n) ? d_.subspan(pos_ - n, n) : std::span<const uint8_t>{}; }

 private:
  bool take(size_t n) {
    if (!ok_ || d_.size() - pos_ < n) {
      ok_ = false;
      return false;
    }
    pos_ += n;
    return true;
  }
  std::span<const uint8_t> d_;
  size_t pos_ = 0;
  bool ok_ = true;
};

HelloInfo status(HelloStatus s) { return HelloInfo{s, {}}; }

// Incomplete — unless the caller already gave us as much as we ever ask for.
HelloInfo need_more(std::span<const uint8_t> data) {
  return status(data.size() >= kClientHelloMaxBytes ? HelloStatus::Malformed : HelloStatus::NeedMore);
}

// RFC 6066: the host_name is ASCII without a trailing dot; we take the DNS character set and refuse
// anything else (NULs, spaces, non-ASCII) so that a comparison with the CONNECT host cannot be fooled.
std::optional<std::string> host_name(std::span<const uint8_t> raw) {
  if (raw.empty() || raw.size() > 255) return std::nullopt;
  std::string out;
  out.reserve(raw.size());
  for (uint8_t c : raw) {
    if (c >= 'A' && c <= 'Z') c = static_cast<uint8_t>(c - 'A' + 'a');
    bool okc = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!okc) return std::nullopt;
    out.push_back(static_cast<char>(c));
  }
  if (out.size() > 1 && out.back() == '.') out.pop_back();
  if (out == ".") return std::nullopt;
  return out;
}

// server_name extension body: ServerNameList<1..2^16-1> of {NameType, opaque HostName<1..2^16-1>}.
// Like OpenSSL, accept exactly one entry and only of type host_name.
std::optional<std::string> parse_server_name(std::span<const uint8_t> ext) {
  Reader r(ext);
  size_t list_len = r.u16();
  if (!r.ok() || list_len != r.remaining() || list_len == 0) return std::nullopt;
  uint32_t type = r.u8();
  size_t len = r.u16();
  auto name = r.bytes(len);
  if (!r.ok() || r.remaining() != 0 || type != kNameTypeHostName) return std::nullopt;
  return host_name(name);
}

HelloInfo parse_body(std::span<const uint8_t> body) {
  Reader r(body);
  uint32_t legacy_version = r.u16();
  r.bytes(32);  // random
  size_t sid_len = r.u8();
  r.bytes(sid_len);
  size_t suites_len = r.u16();
  r.bytes(suites_len);
  size_t comp_len = r.u8();
  r.bytes(comp_len);
  if (!r.ok() || (legacy_version >> 8) != 3 || sid_len > 32 || suites_len < 2 || suites_len % 2 != 0 || comp_len < 1)
    return status(HelloStatus::Malformed);
  HelloInfo info{HelloStatus::Tls, {}};
  if (r.remaining() == 0) return info;  // TLS 1.0-1.2 allow a hello without extensions

  size_t ext_total = r.u16();
  if (!r.ok() || ext_total != r.remaining()) return status(HelloStatus::Malformed);
  std::vector<uint16_t> seen;
  while (r.remaining() > 0) {
    auto type = static_cast<uint16_t>(r.u16());
    size_t len = r.u16();
    auto ext = r.bytes(len);
    if (!r.ok()) return status(HelloStatus::Malformed);
    seen.push_back(type);
    if (type == kExtServerName) {
      auto name = parse_server_name(ext);
      if (!name) return status(HelloStatus::Malformed);
      info.sni = std::move(*name);
    }
  }
  // RFC 8446 4.2: at most one extension of each type. Two server_names could otherwise disagree
  // between us and the upstream about which one counts.
  std::sort(seen.begin(), seen.end());
  if (std::adjacent_find(seen.begin(), seen.end()) != seen.end()) return status(HelloStatus::Malformed);
  return info;
}

}  // namespace

HelloInfo parse_client_hello(std::span<const uint8_t> data) {
  if (data.empty()) return status(HelloStatus::NeedMore);
  if (data[0] != kContentHandshake) return status(HelloStatus::NotTls);

  // Reassemble the handshake stream from consecutive handshake records until it holds the whole
  // ClientHello (a client may split it, whether for size or to dodge inspection).
  std::vector<uint8_t> hs;
  size_t off = 0;
  while (true) {
    std::span<const uint8_t> rest = data.subspan(off);
    if (rest.empty()) return need_more(data);
    if (rest[0] != kContentHandshake) return status(HelloStatus::Malformed);
    if (rest.size() >= 2 && rest[1] != 3) return status(HelloStatus::Malformed);
    if (rest.size() >= 3 && rest[2] > 4) return status(HelloStatus::Malformed);
    if (rest.size() < kRecordHeader) return need_more(data);
    size_t len = size_t{rest[3]} << 8 | rest[4];
    if (len == 0 || len > kMaxRecordPayload) return status(HelloStatus::Malformed);
    if (off + kRecordHeader + len > kClientHelloMaxBytes) return status(HelloStatus::Malformed);

    // Check the handshake header as soon as its bytes are in, so junk is refused without waiting.
    size_t have = std::min(len, rest.size() - kRecordHeader);
    auto fragment = rest.subspan(kRecordHeader, have);
    hs.insert(hs.end(), fragment.begin(), fragment.end());
    if (!hs.empty() && hs[0] != kHandshakeClientHello) return status(HelloStatus::Malformed);
    if (hs.size() >= 4) {
      size_t body_len = size_t{hs[1]} << 16 | size_t{hs[2]} << 8 | hs[3];
      if (body_len > kMaxHelloBody) return status(HelloStatus::Malformed);
      if (hs.size() >= 4 + body_len) {
        // The whole message is in, even if its record promised more (the bytes after a ClientHello
        // are not ours to judge).
        return parse_body(std::span<const uint8_t>(hs).subspan(4, body_len));
      }
    }
    if (have < len) return need_more(data);
    off += kRecordHeader + len;
  }
}

const char* hello_status_name(HelloStatus s) {
  switch (s) {
    case HelloStatus::NeedMore: return "need-more";
    case HelloStatus::Tls: return "tls";
    case HelloStatus::NotTls: return "not-tls";
    case HelloStatus::Malformed: return "malformed";
  }
  return "unknown";
}

}  // namespace moat::egress

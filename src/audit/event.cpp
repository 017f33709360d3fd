#include "audit/event.h"

#include <openssl/evp.h>

#include <charconv>

#include "audit/civil_time.h"

namespace moat {

std::string canonical_json(const Json& data) {
  // nlohmann::json keeps objects in a std::map, so keys come out sorted by their UTF-8 bytes.
  return data.dump(-1, ' ', false, Json::error_handler_t::replace);
}

namespace {

void append_netstring(std::string& out, std::string_view field) {
  char len[24];
  auto [end, ec] = std::to_chars(len, len + sizeof len, field.size());
  out.append(len, end);
  out.push_back(':');
  out.append(field);
  out.push_back(',');
}

void append_netstring(std::string& out, int64_t value) {
  char num[24];
  auto [end, ec] = std::to_chars(num, num + sizeof num, value);
  append_netstring(out, std::string_view(num, end));
}

}  // namespace

void append_canonical_record(std::string& out, int64_t seq, int64_t time_ns, std::string_view kind,
                             std::string_view actor, std::string_view subject, std::string_view data_json,
                             std::string_view prev_hash) {
  out.append("moat-audit-v1\n");
  append_netstring(out, seq);
  append_netstring(out, time_ns);
  append_netstring(out, kind);
  append_netstring(out, actor);
  append_netstring(out, subject);
  append_netstring(out, data_json);
  append_netstring(out, prev_hash);
}

namespace {
// Fetched once: an implicit fetch on every digest init is a measurable cost over a million records.
const EVP_MD* sha256_md() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}
}  // namespace

RecordHasher::RecordHasher() : ctx_(EVP_MD_CTX_new()) { buf_.reserve(1024); }
RecordHasher::~RecordHasher() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

std::string_view RecordHasher::hash(int64_t seq, int64_t time_ns, std::string_view kind, std::string_view actor,
                                    std::string_view subject, std::string_view data_json,
                                    std::string_view prev_hash) {
  buf_.clear();
  append_canonical_record(buf_, seq, time_ns, kind, actor, subject, data_json, prev_hash);
  auto* ctx = static_cast<EVP_MD_CTX*>(ctx_);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestInit_ex2(ctx, sha256_md(), nullptr);
  EVP_DigestUpdate(ctx, buf_.data(), buf_.size());
  EVP_DigestFinal_ex(ctx, md, &len);
  static constexpr char hex[] = "0123456789abcdef";
  for (unsigned i = 0; i < 32; ++i) {
    hex_[2 * i] = hex[md[i] >> 4];
    hex_[2 * i + 1] = hex[md[i] & 15];
  }
  return std::string_view(hex_, 64);
}

std::string record_hash(int64_t seq, int64_t time_ns, std::string_view kind, std::string_view actor,
                        std::string_view subject, std::string_view data_json, std::string_view prev_hash) {
  RecordHasher h;
  return std::string(h.hash(seq, time_ns, kind, actor, subject, data_json, prev_hash));
}

std::string format_time_rfc3339(int64_t time_ns, bool nanos) {
  constexpr int64_t kNsPerSec = 1'000'000'000;
  int64_t secs = time_ns / kNsPerSec, frac = time_ns % kNsPerSec;
  if (frac < 0) {
    frac += kNsPerSec;
    --secs;
  }
  int64_t days = secs / 86400, rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    --days;
  }
  auto d = civil_from_days(days);
  if (nanos)
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z", d.year, d.month, d.day, rem / 3600,
                       rem / 60 % 60, rem % 60, frac);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", d.year, d.month, d.day, rem / 3600, rem / 60 % 60,
                     rem % 60);
}

Json to_json(const AuditEvent& ev) {
  return Json{{"seq", ev.seq},
              {"time", format_time_rfc3339(ev.time_ns)},
              {"time_ns", ev.time_ns},
              {"kind", ev.kind},
              {"actor", ev.actor},
              {"subject", ev.subject},
              {"data", ev.data},
              {"prev_hash", ev.prev_hash},
              {"hash", ev.hash}};
}

Result<AuditEvent> audit_event_from_json(const Json& j) {
  if (!j.is_object()) return fail(ErrorKind::InvalidInput, "an audit record must be a JSON object");
  AuditEvent ev;
  auto str = [&](const char* key, std::string& out) -> Status {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string())
      return fail(ErrorKind::InvalidInput, "audit record lacks the string field '{}'", key);
    out = it->get<std::string>();
    return {};
  };
  auto seq = j.find("seq");
  if (seq == j.end() || !seq->is_number_integer())
    return fail(ErrorKind::InvalidInput, "audit record lacks the integer field 'seq'");
  ev.seq = seq->get<int64_t>();
  auto tns = j.find("time_ns");
  if (tns == j.end() || !tns->is_number_integer())
    return fail(ErrorKind::InvalidInput, "audit record lacks the integer field 'time_ns'");
  ev.time_ns = tns->get<int64_t>();
  for (auto [key, field] : {std::pair{"kind", &ev.kind}, {"actor", &ev.actor}, {"subject", &ev.subject},
                            {"prev_hash", &ev.prev_hash}, {"hash", &ev.hash}}) {
    if (auto s = str(key, *field); !s) return std::unexpected(s.error());
  }
  auto data = j.find("data");
  ev.data = data == j.end() ? Json::object() : *data;
  return ev;
}

}  // namespace moat

#include "channels/attachment_fetch.h"

#include <optional>

#include "base/log.h"

namespace moat::channels {

namespace {

std::string size_text(uint64_t bytes) {
  if (bytes >= (1ull << 20)) return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
  if (bytes >= 1024) return fmt::format("{:.1f} KiB", static_cast<double>(bytes) / 1024);
  return fmt::format("{} bytes", bytes);
}

}  // namespace

router::Attachment fetch_attachment(net::HttpClient& client, AttachmentStage* stage, std::string_view channel,
                                    router::Attachment meta, const AttachmentSource& source,
                                    std::chrono::milliseconds timeout) {
  if (stage == nullptr) {
    meta.unavailable = "this moatd keeps no attachments";
    return meta;
  }
  if (meta.size > stage->limits().max_file) {
    meta.unavailable = fmt::format("it is {}, over the {} limit ([attachments] max_file)", size_text(meta.size),
                                   size_text(stage->limits().max_file));
    return meta;
  }
  auto writer = stage->begin(channel, meta.name, meta.size);
  if (!writer) {
    meta.unavailable = writer.error().message;
    return meta;
  }
  int status = 0;
  std::optional<Error> write_error;
  net::HttpRequest req{.method = "GET", .target = source.target, .headers = source.headers, .body = {}};
  auto r = client.send(
      source.url, req, net::CallOptions{.timeout = timeout},
      [&](const net::HttpResponseHead& head) { status = head.status; },
      [&](std::string_view piece) {
        if (status != 200) return true;  // an error page: read and dropped
        if (auto s = writer->write(piece); !s) {
          write_error = s.error();
          return false;
        }
        return true;
      });
  if (write_error) {
    meta.unavailable = write_error->kind == ErrorKind::ResourceLimit
                           ? fmt::format("it is over the {} limit ([attachments] max_file) or the staging area is full",
                                         size_text(stage->limits().max_file))
                           : write_error->message;
    return meta;
  }
  if (!r) {
    // The failure's words name the host at most, never the target (which may carry a token).
    meta.unavailable = fmt::format("the download failed ({})", r.error().error.message);
    log::warn("{}: downloading attachment '{}' failed: {}", channel, meta.name, r.error().error.message);
    return meta;
  }
  if (status != 200) {
    meta.unavailable = fmt::format("the platform answered {} to the download", status);
    return meta;
  }
  auto rel = writer->commit();
  if (!rel) {
    meta.unavailable = rel.error().message;
    return meta;
  }
  meta.size = writer->size();
  meta.staged = std::move(*rel);
  return meta;
}

}  // namespace moat::channels

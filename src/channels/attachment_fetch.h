#pragma once
// The one way a channel downloads an attachment: at once when its message arrives (platform links
// expire), streamed into the staging area (store/attachment_stage.h) within its caps, and never
// failing the message: what could not be staged is returned with `unavailable` saying why, for the
// agent to tell the person. The reasons never quote the download URL (Telegram's carries the bot
// token in its path).
#include <chrono>
#include <string>
#include <string_view>

#include "net/http_client.h"
#include "router/envelope.h"
#include "store/attachment_stage.h"

namespace moat::channels {

struct AttachmentSource {
  net::Url url;            // where to GET it (scheme, host, port)
  std::string target;      // origin-form path and query; may carry a secret: never logged or returned
  net::HeaderList headers; // e.g. an Authorization header (Slack); may be empty
};

// `meta` is what the platform said (name, mime, size as declared, a display url without secrets);
// returns it with `staged` set, or with `unavailable` set. `stage` may be null (moatd without a
// staging area): every attachment is then unavailable.
router::Attachment fetch_attachment(net::HttpClient& client, AttachmentStage* stage, std::string_view channel,
                                    router::Attachment meta, const AttachmentSource& source,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(60));

}  // namespace moat::channels

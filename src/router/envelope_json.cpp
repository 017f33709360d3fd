#include "router/envelope_codec.h"
#include "router/router.h"

namespace moat::router {

namespace {
Json attachments_json(const std::vector<Attachment>& as) {
  Json arr = Json::array();
  for (const auto& a : as) {
    Json j{{"name", a.name}, {"mime", a.mime}, {"url", a.url}, {"size", a.size}};
    if (!a.staged.empty()) j["staged"] = a.staged;
    if (!a.unavailable.empty()) j["unavailable"] = a.unavailable;
    arr.push_back(std::move(j));
  }
  return arr;
}
}  // namespace

Json envelope_to_json(const Envelope& e) {
  return Json{{"id", e.id},
              {"channel", e.channel},
              {"chat", e.chat},
              {"sender", e.sender},
              {"sender_name", e.sender_name},
              {"message_id", e.message_id},
              {"text", e.text},
              {"attachments", attachments_json(e.attachments)},
              {"received_ms", e.received_ms},
              {"mentioned", e.mentioned},
              {"direct", e.direct},
              {"agent", e.agent},
              {"reply_to", e.reply_to}};
}

Json outbound_to_json(const Outbound& o) {
  return Json{{"id", o.id},         {"key", o.key},   {"channel", o.channel},         {"chat", o.chat},
              {"agent", o.agent},   {"text", o.text}, {"in_reply_to", o.in_reply_to}, {"is_error", o.is_error},
              {"reply_to", o.reply_to}};
}

std::string envelope_body_json(const Envelope& e) {
  Json j = Json::object();
  j["text"] = e.text;
  // Optional fields are left out when empty: most envelopes are plain text and the body is written
  // once per accepted message on the hot path.
  if (!e.sender_name.empty()) j["sender_name"] = e.sender_name;
  if (!e.attachments.empty()) j["attachments"] = attachments_json(e.attachments);
  if (e.mentioned) j["mentioned"] = true;
  if (e.direct) j["direct"] = true;
  if (!e.reply_to.empty()) j["reply_to"] = e.reply_to;
  // Replace, not throw: a channel may hand over text that is not valid UTF-8.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Status envelope_body_from_json(std::string_view body, Envelope& e) {
  Json j = Json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return fail(ErrorKind::Internal, "envelope {} has a body in the store that is not JSON", e.id);
  e.text = j.value("text", "");
  e.sender_name = j.value("sender_name", "");
  e.mentioned = j.value("mentioned", false);
  e.direct = j.value("direct", false);
  e.reply_to = j.value("reply_to", "");
  e.attachments.clear();
  if (auto it = j.find("attachments"); it != j.end() && it->is_array()) {
    for (const auto& a : *it) {
      if (!a.is_object()) continue;
      e.attachments.push_back(Attachment{a.value("name", ""), a.value("mime", ""), a.value("url", ""),
                                         a.value("size", uint64_t{0}), a.value("staged", ""),
                                         a.value("unavailable", "")});
    }
  }
  return {};
}

std::string_view outcome_name(Acceptance::Outcome o) {
  switch (o) {
    case Acceptance::Outcome::Queued: return "queued";
    case Acceptance::Outcome::Duplicate: return "duplicate";
    case Acceptance::Outcome::Held: return "held";
    case Acceptance::Outcome::Dropped: return "dropped";
  }
  return "unknown";
}

}  // namespace moat::router

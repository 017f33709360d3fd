#include "api/protocol.h"

namespace moat::api {

Json ok_response(Json result) { return Json{{"ok", true}, {"result", std::move(result)}}; }

Json error_response(const Error& e) {
  return Json{{"ok", false}, {"error", {{"kind", error_kind_name(e.kind)}, {"message", e.message}}}};
}

Result<Json> parse_response(std::string_view payload) {
  Json j = Json::parse(payload, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("ok"))
    return fail(ErrorKind::Internal, "moatd sent a malformed response");
  if (j["ok"].get<bool>()) return j.value("result", Json());
  auto& e = j["error"];
  return std::unexpected(Error{error_kind_from_name(e.value("kind", "internal")), e.value("message", "unknown error")});
}

}  // namespace moat::api

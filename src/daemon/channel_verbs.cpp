#include "daemon/channel_verbs.h"

#include "store/clock.h"

namespace moat {

namespace {

int64_t start_of_utc_day_ms(int64_t now_ms) {
  constexpr int64_t kDay = 24LL * 3600 * 1000;
  return now_ms - now_ms % kDay;
}

// The channel's own status with today's traffic from the store.
Result<Json> with_traffic(router::Router& router, channels::ChannelStatus s) {
  auto t = router.channel_traffic(s.name, start_of_utc_day_ms(clock::now_ms()));
  if (!t) return wrap(t.error(), fmt::format("counting channel {}'s messages", s.name));
  s.in_today = t->in;
  s.out_today = t->out;
  return channels::channel_status_to_json(s);
}

}  // namespace

void register_channel_verbs(api::Server& server, router::Router& router, ChannelStatusesFn statuses,
                            ChannelAdmin admin) {
  server.handle("channel.add", [&router, admin](const Json& a, api::Session&) -> Result<Json> {
    if (!a.contains("name") || !a["name"].is_string())
      return fail(ErrorKind::InvalidInput, "channel.add needs the channel's 'name' as a string (telegram, discord)");
    Json settings = a.value("settings", Json::object());
    auto s = admin.add(a["name"].get<std::string>(), settings, a.value("actor", std::string("cli")));
    if (!s) return std::unexpected(s.error());
    return with_traffic(router, std::move(*s));
  });
  server.handle("channel.rm", [admin](const Json& a, api::Session&) -> Result<Json> {
    if (!a.contains("name") || !a["name"].is_string())
      return fail(ErrorKind::InvalidInput, "channel.rm needs the channel's 'name' as a string");
    const auto& name = a["name"].get_ref<const std::string&>();
    if (auto s = admin.remove(name, a.value("actor", std::string("cli"))); !s) return std::unexpected(s.error());
    return Json{{"name", name}, {"removed", true}};
  });
  server.handle("channel.ls", [&router, statuses](const Json&, api::Session&) -> Result<Json> {
    Json out = Json::array();
    for (auto& s : statuses()) {
      auto j = with_traffic(router, std::move(s));
      if (!j) return std::unexpected(j.error());
      out.push_back(std::move(*j));
    }
    return out;
  });
  server.handle("channel.status", [&router, statuses](const Json& a, api::Session&) -> Result<Json> {
    if (!a.contains("name") || !a["name"].is_string())
      return fail(ErrorKind::InvalidInput, "channel.status needs the channel's 'name' as a string");
    const auto& name = a["name"].get_ref<const std::string&>();
    std::string known;
    for (auto& s : statuses()) {
      if (s.name == name) return with_traffic(router, std::move(s));
      known += (known.empty() ? "" : ", ") + s.name;
    }
    return fail(ErrorKind::NotFound, "no channel named '{}'; moatd runs {} (see 'moat channel ls'; Telegram and Discord "
                "are set up with [channels.telegram] and [channels.discord] in moat.toml)", name, known);
  });
}

}  // namespace moat

#pragma once
// Test hook: stop moatd dead (SIGKILL, no cleanup, as a power cut or the OOM killer would) at a named
// point, so a test can prove what survives a crash exactly there — between a platform fetch and its
// cursor commit, between a send and the outbox's delivered mark — instead of hoping a random kill
// lands in the window. Armed only by the environment moatd was started with (only root can set it):
//   MOAT_CRASH_AT=<point>      the first time <point> is passed
//   MOAT_CRASH_AT=<point>:<n>  the n-th time (1-based)
// Unset (always, outside tests), crash_point() is one relaxed load. Points are named
// "<component>.<where>", and the names are listed in docs/architecture.md ("crash points").
#include <string_view>

namespace moat {

void crash_point(std::string_view point);

}  // namespace moat

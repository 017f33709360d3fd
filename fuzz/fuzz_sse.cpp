// The server-sent events parser under the providers' streams. The first byte picks a chunk size;
// the stream cut into chunks of that size must give exactly the events the whole stream gives.
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "agent/providers/sse.h"

using namespace moat::agent;

namespace {
std::vector<SseEvent> events_of(std::string_view in, size_t chunk) {
  std::vector<SseEvent> out;
  SseParser p([&](const SseEvent& e) { out.push_back(e); });
  for (size_t i = 0; i < in.size(); i += chunk) p.feed(in.substr(i, chunk));
  (void)p.finish();
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  auto whole = events_of(in, in.empty() ? 1 : in.size());
  auto split = events_of(in, data[0] % 7 + 1);
  if (whole.size() != split.size()) std::abort();
  for (size_t i = 0; i < whole.size(); ++i)
    if (whole[i].event != split[i].event || whole[i].data != split[i].data || whole[i].id != split[i].id) std::abort();
  return 0;
}

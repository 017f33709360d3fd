// The host <-> moat-init protocol, both sides: bytes from the other end go through FrameDecoder, and
// each frame's payload through every message decoder (moat-init decodes Hello, ExecStart, Resize,
// Signal, FilePut, FileGet; the host decodes HelloOk, ExecExit, FileInfo, Error, HealthInfo).
//
// Input: the first byte picks how many bytes arrive at a time and whether the copying (feed/next)
// or the zero-copy (prepare/commit/next_view) path is used; the rest is the stream. Checked besides
// crashes, leaks and undefined behaviour: the decoder buffers a bounded amount, a failure sticks,
// decoded frames re-encode to exactly the bytes consumed, and a message that decodes re-encodes to
// bytes that decode and re-encode to themselves.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "wire/frame.h"
#include "wire/messages.h"

using namespace moat::wire;

namespace {

template <class T>
void round_trip(std::string_view payload) {
  auto m = decode<T>(payload);
  if (!m) return;
  std::string once = encode(*m);
  auto again = decode<T>(once);
  if (!again || encode(*again) != once) std::abort();
}

void decode_every_message(std::string_view payload) {
  round_trip<HelloMsg>(payload);
  round_trip<ExecStart>(payload);
  round_trip<ExecExit>(payload);
  round_trip<Resize>(payload);
  round_trip<SignalMsg>(payload);
  round_trip<FilePut>(payload);
  round_trip<FileGet>(payload);
  round_trip<FileInfo>(payload);
  round_trip<ErrorMsg>(payload);
  round_trip<HealthInfo>(payload);
  (void)is_valid_utf8(payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t chunk = (data[0] & 0x7f) + 1;
  const bool zero_copy = data[0] & 0x80;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);

  FrameDecoder d;
  std::string reencoded;
  size_t fed = 0;
  bool failed = false;
  auto take = [&](FrameType type, std::string_view payload) {
    if (payload.size() > kMaxPayload) std::abort();
    (void)frame_type_name(type);
    append_frame(reencoded, type, payload);
    decode_every_message(payload);
  };
  while (fed < in.size() && !failed) {
    size_t n = std::min(chunk, in.size() - fed);
    if (zero_copy) {
      std::memcpy(d.prepare(n), in.data() + fed, n);
      d.commit(n);
    } else {
      d.feed(in.substr(fed, n));
    }
    fed += n;
    for (;;) {
      if (zero_copy) {
        auto f = d.next_view();
        if (!f) { failed = true; break; }
        if (!*f) break;
        take((*f)->type, (*f)->payload);
      } else {
        auto f = d.next();
        if (!f) { failed = true; break; }
        if (!*f) break;
        take((*f)->type, (*f)->payload);
      }
    }
    if (!failed && d.buffered() > kMaxFrame + kFrameHeader + chunk) std::abort();
  }
  if (failed) {
    if (!d.failed()) std::abort();
  } else {
    // Everything fed is either a re-encoded frame or still buffered, byte for byte.
    if (reencoded.size() + d.buffered() != fed) std::abort();
    if (std::string_view(reencoded) != in.substr(0, reencoded.size())) std::abort();
  }
  return 0;
}

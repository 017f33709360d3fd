#pragma once
// The one framed protocol spoken between the host (moatd, through InitClient) and moat-init, PID 1 in
// every sandbox. moatd and the moat CLI reuse the same framing for streamed exec. Compiled into the static
// moat-init and into the host library moat_wire: standard library, nlohmann json and base/ headers only.
//
// ===================================== PROTOCOL, version 1 =====================================
//
// Frame layout (all integers big-endian):
//
//   +----------------+-----------+---------------------------+
//   | length N (u32) | type (u8) | payload (N - 1 bytes)     |
//   +----------------+-----------+---------------------------+
//
//   1 <= N <= kMaxFrame (1 MiB). N == 0, N > kMaxFrame, type 0 or an unknown type is a protocol error:
//   the receiver answers Error (when it can) and closes the connection. Control payloads are JSON objects
//   (see messages.h); Stdin/Stdout/Stderr/FileData payloads are raw bytes (binary-safe), at most
//   kMaxChunk (64 KiB) each. Unknown JSON fields are ignored (forward compatible); missing required fields
//   or wrong types are an Error.
//
// Conversation: ONE request per connection. The host connects to the sandbox's socket and sends
//
//   host  -> Hello {"version":1,"agent":"moatd"}
//   guest -> HelloOk {"version":1,"agent":"moat-init"}     or Error {"message":...} (version mismatch,
//                                                          peer refused by --host-peers-only) and close.
// then exactly one of:
//
//   exec:    host  -> ExecStart {argv, env, cwd, uid, gid, tty, rows, cols, timeout_ms}
//            guest -> Stdout / Stderr (raw chunks, any number, interleaved; with tty everything is Stdout)
//            host  -> Stdin (raw) / StdinEof / Resize {rows, cols} / Signal {signal}   at any time
//            guest -> Exit {exit_code, signal, timed_out, duration_ms}                 then closes.
//            A program that cannot be started yields Stderr "moat-init: cannot execute 'x': <reason>" and
//            Exit{exit_code=127} (not found) or Exit{exit_code=126} (other failures: permission, cwd, user).
//            Signal is delivered to the command's process group; Signal{9} kills the command's whole tree.
//            On timeout the whole tree is killed and Exit{timed_out=true, signal=9} is sent.
//            When the main process exits, its pipes are drained for ~100 ms (background children keep
//            running, they belong to the sandbox), then Exit is sent.
//            If the host disconnects (or half-closes) before Exit, the whole tree is killed. The host ends
//            its stdin with StdinEof, never by shutting its side of the socket.
//
//   put:     host  -> FilePut {path, mode, uid, gid, size}, FileData* (raw), FileEnd
//            guest -> Ok  or  Error. The path must be absolute and its parent must exist; the file is written
//            to a temp file in the same directory, chowned/chmodded, fsynced and renamed over the target.
//            The bytes received must total `size`. The guest may answer Error early (e.g. missing parent);
//            it then discards the host's remaining frames up to FileEnd before closing.
//
//   get:     host  -> FileGet {path}
//            guest -> FileInfo {size, mode}, FileData* (raw), FileEnd     or Error (missing, not a regular file).
//
//   health:  host  -> Health
//            guest -> HealthOk {uptime_ms, processes}
//
// Any frame that does not fit the conversation is answered with Error and the connection is closed.
// ===============================================================================================
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace moat::wire {

constexpr uint32_t kProtocolVersion = 1;
// Largest N (type byte + payload) a frame may announce.
constexpr size_t kMaxFrame = 1 << 20;
constexpr size_t kMaxPayload = kMaxFrame - 1;
// Largest raw data chunk (stdio, file data) a sender puts in one frame.
constexpr size_t kMaxChunk = 64 << 10;
constexpr size_t kFrameHeader = 5;  // length + type

// Numbers are part of the protocol: keep them stable, never reuse one.
enum class FrameType : uint8_t {
  Hello = 1,
  HelloOk = 2,
  Error = 3,
  ExecStart = 4,
  Stdin = 5,
  StdinEof = 6,
  Stdout = 7,
  Stderr = 8,
  Resize = 9,
  Signal = 10,
  Exit = 11,
  FilePut = 12,
  FileData = 13,
  FileEnd = 14,
  FileGet = 15,
  FileInfo = 16,
  Ok = 17,
  Health = 18,
  HealthOk = 19,
  // The control API between the moat CLI and moatd (api/protocol.h); never sent to moat-init.
  ApiRequest = 20,
  ApiProgress = 21,
  ApiResponse = 22,
};
constexpr uint8_t kLastFrameType = 22;

bool is_known_frame_type(uint8_t t);
// "ExecStart", "Stdout"...; "unknown(42)" for numbers outside the enum.
std::string frame_type_name(FrameType t);

struct Frame {
  FrameType type;
  std::string payload;
};

// Encodes one frame. The payload must be at most kMaxPayload bytes (write_frame checks; this does not).
std::string encode_frame(FrameType type, std::string_view payload = {});
// Appends the encoding of one frame to `out` (avoids a copy when batching frames).
void append_frame(std::string& out, FrameType type, std::string_view payload = {});

// A frame whose payload points into a FrameDecoder's buffer: valid until the decoder's next call.
struct FrameView {
  FrameType type;
  std::string_view payload;
};

// Incremental decoder: feed() any bytes as they arrive, then call next() until it yields nullopt (needs more
// bytes). Hostile input yields an InvalidInput error, never a crash or unbounded buffering (at most one
// frame, kMaxFrame + header, plus one feed); after an error the decoder stays failed.
//
// Zero-copy use for bulk streams: read(fd, prepare(n)) then commit(got), and take frames with next_view().
class FrameDecoder {
 public:
  void feed(std::string_view bytes);
  // Room for at least `n` more bytes at the end of the buffer; fill it, then commit() what was written.
  char* prepare(size_t n);
  void commit(size_t n) { end_ += n; }

  Result<std::optional<Frame>> next();
  Result<std::optional<FrameView>> next_view();

  // Bytes received but not yet returned as frames.
  size_t buffered() const { return end_ - pos_; }
  bool failed() const { return failed_; }

 private:
  std::string buf_;  // bytes [pos_, end_) are received and not yet consumed; the rest is spare room
  size_t pos_ = 0, end_ = 0;
  bool failed_ = false;
  std::string error_;
};

// Writes all of `data`, retrying on EINTR and partial writes (blocking fd). Uses send(MSG_NOSIGNAL) on
// sockets so a vanished peer is an error, not SIGPIPE.
Status write_all(int fd, std::string_view data);
// Writes one frame; payloads over kMaxPayload are refused with InvalidInput.
Status write_frame(int fd, FrameType type, std::string_view payload = {});
// Reads exactly one frame from a blocking fd. EOF before a whole frame -> Unavailable "connection closed";
// a receive timeout (SO_RCVTIMEO) -> Unavailable "timed out"; bad framing -> InvalidInput.
Result<Frame> read_frame(int fd);

}  // namespace moat::wire

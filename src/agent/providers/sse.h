#pragma once
// An incremental parser for server-sent events (the WHATWG EventSource stream format), fed with
// whatever pieces the network delivers: events may be split anywhere, even between the CR and LF
// of a line ending. Handles "event:", "data:" (several lines join with "\n"), "id:", comments
// (":..."), CRLF / LF / CR line endings and a leading byte-order mark. "retry:" is ignored.
#include <functional>
#include <string>
#include <string_view>

namespace moat::agent {

struct SseEvent {
  std::string event;  // "message" when the stream named none
  std::string data;   // data lines joined with "\n", without a trailing newline
  std::string id;
};

class SseParser {
 public:
  using Sink = std::function<void(const SseEvent&)>;
  explicit SseParser(Sink sink) : sink_(std::move(sink)) {}

  void feed(std::string_view bytes);
  // End of stream: a complete line left without its blank line is dropped, as EventSource does;
  // returns true when the stream ended cleanly (nothing half-received).
  bool finish();

 private:
  void line(std::string_view l);

  Sink sink_;
  std::string partial_;   // an unterminated line from the previous feed
  bool after_cr_ = false;  // the last byte fed was CR: a following LF belongs to it
  bool started_ = false;   // past the optional BOM
  std::string event_, data_, id_;
  bool has_data_ = false;
  bool pending_ = false;   // fields seen since the last dispatch
};

}  // namespace moat::agent

#include "agent/providers/sse.h"

namespace moat::agent {

void SseParser::feed(std::string_view bytes) {
  if (!started_) {
    // The BOM may itself arrive in pieces; wait until three bytes are there to decide.
    partial_.append(bytes);
    if (partial_.size() < 3 && std::string_view("\xEF\xBB\xBF").starts_with(partial_)) return;
    started_ = true;
    std::string first = std::move(partial_);
    partial_.clear();
    std::string_view f = first;
    if (f.starts_with("\xEF\xBB\xBF")) f.remove_prefix(3);
    feed(f);
    return;
  }
  size_t start = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    char c = bytes[i];
    if (c == '\n' && after_cr_ && i == start && partial_.empty()) {
      // the LF of a CRLF whose CR ended the previous line
      after_cr_ = false;
      start = i + 1;
      continue;
    }
    after_cr_ = false;
    if (c == '\r' || c == '\n') {
      std::string_view piece = bytes.substr(start, i - start);
      if (partial_.empty()) {
        line(piece);
      } else {
        partial_.append(piece);
        std::string l = std::move(partial_);
        partial_.clear();
        line(l);
      }
      after_cr_ = c == '\r';
      start = i + 1;
    }
  }
  partial_.append(bytes.substr(start));
}

bool SseParser::finish() {
  bool clean = partial_.empty() && !pending_;
  partial_.clear();
  event_.clear();
  data_.clear();
  has_data_ = pending_ = false;
  return clean;
}

void SseParser::line(std::string_view l) {
  if (l.empty()) {  // dispatch
    if (has_data_) {
      SseEvent e{event_.empty() ? "message" : std::move(event_), std::move(data_), id_};
      if (!e.data.empty() && e.data.back() == '\n') e.data.pop_back();
      if (sink_) sink_(e);
    }
    event_.clear();
    data_.clear();
    has_data_ = pending_ = false;
    return;
  }
  if (l.front() == ':') return;  // comment (keep-alive)
  std::string_view field = l, value;
  if (auto colon = l.find(':'); colon != std::string_view::npos) {
    field = l.substr(0, colon);
    value = l.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  pending_ = true;
  if (field == "event") {
    event_ = value;
  } else if (field == "data") {
    data_.append(value);
    data_.push_back('\n');
    has_data_ = true;
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) id_ = value;
  }
  // "retry" and unknown fields are ignored, as the standard says
}

}  // namespace moat::agent

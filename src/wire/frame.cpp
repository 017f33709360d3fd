#include "wire/frame.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace moat::wire {
namespace {

void put_header(char* h, uint32_t n, FrameType type) {
  h[0] = static_cast<char>((n >> 24) & 0xff);
  h[1] = static_cast<char>((n >> 16) & 0xff);
  h[2] = static_cast<char>((n >> 8) & 0xff);
  h[3] = static_cast<char>(n & 0xff);
  h[4] = static_cast<char>(type);
}

uint32_t get_u32(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

// Checks a header; returns the payload length.
Result<size_t> check_header(const char* h) {
  uint32_t n = get_u32(h);
  auto type = static_cast<uint8_t>(h[4]);
  if (n == 0) return fail(ErrorKind::InvalidInput, "protocol error: zero-length frame");
  if (n > kMaxFrame) return fail(ErrorKind::InvalidInput, "protocol error: frame of {} bytes exceeds the {} byte limit", n, kMaxFrame);
  if (!is_known_frame_type(type)) return fail(ErrorKind::InvalidInput, "protocol error: unknown frame type {}", type);
  return size_t{n} - 1;
}

bool is_socket(int fd) {
  struct stat st {};
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

bool is_known_frame_type(uint8_t t) { return t >= 1 && t <= kLastFrameType; }

std::string frame_type_name(FrameType t) {
  static constexpr const char* kNames[] = {nullptr,   "Hello",    "HelloOk", "Error",    "ExecStart", "Stdin",  "StdinEof",
                                           "Stdout",  "Stderr",   "Resize",  "Signal",   "Exit",      "FilePut", "FileData",
                                           "FileEnd", "FileGet",  "FileInfo", "Ok",      "Health",    "HealthOk",
                                           "ApiRequest", "ApiProgress", "ApiResponse"};
  auto n = static_cast<uint8_t>(t);
  if (!is_known_frame_type(n)) return "unknown(" + std::to_string(n) + ")";
  return kNames[n];
}

void append_frame(std::string& out, FrameType type, std::string_view payload) {
  char h[kFrameHeader];
  put_header(h, static_cast<uint32_t>(payload.size() + 1), type);
  out.append(h, sizeof h);
  out.append(payload);
}

std::string encode_frame(FrameType type, std::string_view payload) {
  std::string out;
  out.reserve(kFrameHeader + payload.size());
  append_frame(out, type, payload);
  return out;
}

char* FrameDecoder::prepare(size_t n) {
  if (failed_) {
    // Keep accepting (and dropping) bytes without growing.
    pos_ = end_ = 0;
    if (buf_.size() < n) buf_.resize(n);
    return buf_.data();
  }
  if (pos_ == end_) pos_ = end_ = 0;
  if (buf_.size() - end_ < n && pos_ > 0) {
    // Move the unread tail to the front; it is at most one partial frame.
    std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
  }
  if (buf_.size() - end_ < n) buf_.resize(end_ + n);
  return buf_.data() + end_;
}

void FrameDecoder::feed(std::string_view bytes) {
  if (failed_ || bytes.empty()) return;
  std::memcpy(prepare(bytes.size()), bytes.data(), bytes.size());
  commit(bytes.size());
}

Result<std::optional<FrameView>> FrameDecoder::next_view() {
  if (failed_) return std::unexpected(Error{ErrorKind::InvalidInput, error_});
  size_t avail = end_ - pos_;
  if (avail < kFrameHeader) return std::optional<FrameView>{};
  auto len = check_header(buf_.data() + pos_);
  if (!len) {
    failed_ = true;
    error_ = len.error().message;
    buf_.clear();
    buf_.shrink_to_fit();
    pos_ = end_ = 0;
    return std::unexpected(len.error());
  }
  if (avail < kFrameHeader + *len) return std::optional<FrameView>{};
  FrameView f{static_cast<FrameType>(static_cast<uint8_t>(buf_[pos_ + 4])),
              std::string_view(buf_.data() + pos_ + kFrameHeader, *len)};
  pos_ += kFrameHeader + *len;
  return std::optional<FrameView>(f);
}

Result<std::optional<Frame>> FrameDecoder::next() {
  auto v = next_view();
  if (!v) return std::unexpected(v.error());
  if (!*v) return std::optional<Frame>{};
  return std::optional<Frame>(Frame{(*v)->type, std::string((*v)->payload)});
}

Status write_all(int fd, std::string_view data) {
  bool sock = is_socket(fd);
  while (!data.empty()) {
    ssize_t n = sock ? ::send(fd, data.data(), data.size(), MSG_NOSIGNAL) : ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        // A non-blocking fd (or SO_SNDTIMEO): wait until writable, up to a minute.
        pollfd p{fd, POLLOUT, 0};
        int r = ::poll(&p, 1, 60000);
        if (r == 0) return fail(ErrorKind::Unavailable, "timed out writing to the connection");
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET)
        return fail(ErrorKind::Unavailable, "connection closed by the peer");
      return fail(ErrorKind::Internal, "write failed: {}", strerror(errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Status write_frame(int fd, FrameType type, std::string_view payload) {
  if (payload.size() > kMaxPayload)
    return fail(ErrorKind::InvalidInput, "frame payload of {} bytes exceeds the {} byte limit", payload.size(), kMaxPayload);
  if (payload.size() <= 4096) return write_all(fd, encode_frame(type, payload));
  char h[kFrameHeader];
  put_header(h, static_cast<uint32_t>(payload.size() + 1), type);
  if (auto s = write_all(fd, std::string_view(h, sizeof h)); !s) return s;
  return write_all(fd, payload);
}

namespace {
Status read_exact(int fd, char* p, size_t n, bool at_frame_start) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, p + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return fail(ErrorKind::Unavailable, "timed out waiting for the peer");
      if (errno == ECONNRESET) return fail(ErrorKind::Unavailable, "connection closed");
      return fail(ErrorKind::Internal, "read failed: {}", strerror(errno));
    }
    if (r == 0) {
      if (at_frame_start && got == 0) return fail(ErrorKind::Unavailable, "connection closed");
      return fail(ErrorKind::Unavailable, "connection closed in the middle of a frame");
    }
    got += static_cast<size_t>(r);
  }
  return {};
}
}  // namespace

Result<Frame> read_frame(int fd) {
  char h[kFrameHeader];
  if (auto s = read_exact(fd, h, sizeof h, true); !s) return std::unexpected(s.error());
  auto len = check_header(h);
  if (!len) return std::unexpected(len.error());
  Frame f{static_cast<FrameType>(static_cast<uint8_t>(h[4])), std::string(*len, '\0')};
  if (*len > 0) {
    if (auto s = read_exact(fd, f.payload.data(), *len, false); !s) return std::unexpected(s.error());
  }
  return f;
}

}  // namespace moat::wire

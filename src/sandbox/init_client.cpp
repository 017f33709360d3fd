#include "sandbox/init_client.h"

#include "base/fs.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "wire/frame.h"

namespace moat {
namespace {

using wire::FrameType;

void set_timeouts(int fd, std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// An Error frame from moat-init becomes an error value carrying its message.
std::unexpected<Error> guest_error(const wire::Frame& f, ErrorKind kind = ErrorKind::Internal) {
  auto m = wire::decode<wire::ErrorMsg>(f.payload);
  return std::unexpected(Error{kind, m ? "moat-init: " + m->message : "moat-init sent a malformed Error frame"});
}

std::unexpected<Error> unexpected_frame(const wire::Frame& f, std::string_view expected) {
  if (f.type == FrameType::Error) return guest_error(f);
  return fail(ErrorKind::Internal, "protocol error: expected {} from moat-init, got {}", expected, wire::frame_type_name(f.type));
}

Status check_request_strings(const wire::ExecStart& req) {
  if (req.argv.empty() || req.argv[0].empty()) return fail(ErrorKind::InvalidInput, "exec needs a command");
  for (const auto& a : req.argv)
    if (!wire::is_valid_utf8(a) || a.find('\0') != std::string::npos)
      return fail(ErrorKind::InvalidInput, "command arguments must be valid UTF-8 without NUL bytes");
  for (const auto& e : req.env)
    if (!wire::is_valid_utf8(e) || e.find('\0') != std::string::npos || e.find('=') == std::string::npos ||
        e.front() == '=')
      return fail(ErrorKind::InvalidInput, "environment entries must be K=V, valid UTF-8, without NUL bytes");
  if (!wire::is_valid_utf8(req.cwd)) return fail(ErrorKind::InvalidInput, "cwd must be valid UTF-8");
  return {};
}

Status check_guest_path(const std::string& path) {
  if (path.empty() || path[0] != '/') return fail(ErrorKind::InvalidInput, "path '{}' must be absolute", path);
  if (!wire::is_valid_utf8(path) || path.find('\0') != std::string::npos)
    return fail(ErrorKind::InvalidInput, "path must be valid UTF-8 without NUL bytes");
  return {};
}

}  // namespace

Result<UniqueFd> connect_init_socket(const std::filesystem::path& dir, std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos)
    return fail(ErrorKind::InvalidInput, "socket name '{}' must be a single path component", name);
  UniqueFd dir_fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd) {
    return fail(errno == ENOENT ? ErrorKind::Unavailable : ErrorKind::Internal, "cannot open socket directory {}: {}",
                dir.string(), strerror(errno));
  }
  std::string n(name);
  // The directory is writable by the sandbox: follow no link, `..` or mount the agent may have planted.
  auto opened = open_beneath(dir_fd.get(), n, O_PATH);
  if (!opened) {
    if (opened.error().kind == ErrorKind::NotFound)
      return fail(ErrorKind::Unavailable, "moat-init socket {} does not exist (is the sandbox running?)", (dir / n).string());
    return fail(ErrorKind::InvalidInput, "refusing moat-init socket {}: {}", (dir / n).string(), opened.error().message);
  }
  UniqueFd path_fd = std::move(*opened);
  struct stat st {};
  if (fstat(path_fd.get(), &st) != 0)
    return fail(ErrorKind::Internal, "cannot stat moat-init socket {}: {}", (dir / n).string(), strerror(errno));
  if (!S_ISSOCK(st.st_mode))
    return fail(ErrorKind::InvalidInput, "refusing moat-init socket {}: it is not a socket", (dir / n).string());

  UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock) return fail(ErrorKind::Internal, "socket: {}", strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d", path_fd.get());
  int rc;
  do rc = ::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int e = errno;
    return fail(e == ECONNREFUSED ? ErrorKind::Unavailable : ErrorKind::Internal, "cannot connect to moat-init at {}: {}",
                (dir / n).string(), strerror(e));
  }
  return sock;
}

InitClient::InitClient(std::filesystem::path socket_dir, std::string socket_name)
    : dir_(std::move(socket_dir)), name_(std::move(socket_name)) {}

Result<UniqueFd> InitClient::open_session(std::chrono::milliseconds timeout, std::string_view request) const {
  auto sock = connect_init_socket(dir_, name_);
  if (!sock) return std::unexpected(sock.error());
  set_timeouts(sock->get(), timeout);
  // The request goes out with Hello, not after HelloOk: one round trip instead of two. moat-init reads
  // Hello first either way, and if it refuses it, it answers Error and never reads the request.
  std::string out = wire::encode_frame(FrameType::Hello, wire::encode(wire::HelloMsg{wire::kProtocolVersion, "moatd"}));
  out += request;
  auto sent = wire::write_all(sock->get(), out);
  // A refusal may have closed the connection under our write; its Error frame is still there to read.
  auto f = wire::read_frame(sock->get());
  if (!sent && !(f && f->type == FrameType::Error)) return wrap(sent.error(), "moat-init handshake");
  if (!f) return wrap(f.error(), "moat-init handshake");
  if (f->type == FrameType::Error) return guest_error(*f, ErrorKind::Unavailable);
  if (f->type != FrameType::HelloOk) return unexpected_frame(*f, "HelloOk");
  auto h = wire::decode<wire::HelloMsg>(f->payload);
  if (!h) return std::unexpected(h.error());
  if (h->version != wire::kProtocolVersion)
    return fail(ErrorKind::Unavailable, "moat-init speaks protocol version {}, this host speaks {}", h->version,
                wire::kProtocolVersion);
  return sock;
}

Result<wire::HealthInfo> InitClient::health_info(std::chrono::milliseconds timeout) const {
  auto sock = open_session(timeout, wire::encode_frame(FrameType::Health));
  if (!sock) return std::unexpected(sock.error());
  auto f = wire::read_frame(sock->get());
  if (!f) return wrap(f.error(), "moat-init health");
  if (f->type != FrameType::HealthOk) return unexpected_frame(*f, "HealthOk");
  return wire::decode<wire::HealthInfo>(f->payload);
}

Status InitClient::health(std::chrono::milliseconds timeout) const {
  auto h = health_info(timeout);
  if (!h) return std::unexpected(h.error());
  return {};
}

Result<UniqueFd> InitClient::start_exec(const wire::ExecStart& req) const {
  if (auto s = check_request_strings(req); !s) return std::unexpected(s.error());
  auto payload = wire::encode(req);
  if (payload.size() > wire::kMaxPayload)
    return fail(ErrorKind::InvalidInput, "the exec request is {} bytes, over the {} byte limit", payload.size(),
                wire::kMaxPayload);
  auto sock = open_session(io_timeout_, wire::encode_frame(FrameType::ExecStart, payload));
  if (!sock) return std::unexpected(sock.error());
  set_timeouts(sock->get(), std::chrono::milliseconds(0));  // output may take as long as the command does
  return sock;
}

Result<ExecResult> InitClient::exec(const wire::ExecStart& req, std::string_view stdin_data, size_t max_capture) const {
  auto sock = start_exec(req);
  if (!sock) return std::unexpected(sock.error());
  ExecResult res;
  if (auto st = relay_exec(sock->get(), stdin_data, max_capture, res); !st) return std::unexpected(st.error());
  return res;
}

Status relay_exec(int fd, std::string_view stdin_data, size_t max_capture, ExecResult& res,
                  std::chrono::steady_clock::time_point deadline) {
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);

  // Stdin goes out as frames, interleaved with reading output so neither side can stall the other.
  std::string out_q;
  size_t out_off = 0;
  size_t stdin_off = 0;
  bool eof_queued = false;
  auto refill = [&] {
    while (out_q.size() - out_off < wire::kMaxChunk && !eof_queued) {
      if (stdin_off < stdin_data.size()) {
        size_t n = std::min(wire::kMaxChunk, stdin_data.size() - stdin_off);
        wire::append_frame(out_q, FrameType::Stdin, stdin_data.substr(stdin_off, n));
        stdin_off += n;
      } else {
        wire::append_frame(out_q, FrameType::StdinEof);
        eof_queued = true;
      }
    }
  };

  wire::FrameDecoder dec;
  constexpr size_t kReadSize = 256 << 10;
  bool can_write = true;
  const bool bounded = deadline != std::chrono::steady_clock::time_point::max();
  for (;;) {
    refill();
    pollfd p{fd, POLLIN, 0};
    if (can_write && out_off < out_q.size()) p.events |= POLLOUT;
    int wait_ms = -1;
    if (bounded) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) return fail(ErrorKind::Unavailable, "moat-init did not end the command in time");
      wait_ms = static_cast<int>(std::min<int64_t>(left, 1000));
    }
    int r = ::poll(&p, 1, wait_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail(ErrorKind::Internal, "poll: {}", strerror(errno));
    }
    if (r == 0) continue;
    if (p.revents & POLLOUT) {
      ssize_t n = ::send(fd, out_q.data() + out_off, out_q.size() - out_off, MSG_NOSIGNAL);
      if (n > 0) {
        out_off += static_cast<size_t>(n);
        if (out_off == out_q.size()) {
          out_q.clear();
          out_off = 0;
        } else if (out_off > (1 << 20)) {
          out_q.erase(0, out_off);
          out_off = 0;
        }
      } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        // moat-init stopped reading (the command ended); keep reading its answer.
        can_write = false;
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::read(fd, dec.prepare(kReadSize), kReadSize);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        return fail(ErrorKind::Unavailable, "moat-init connection failed during exec: {}", strerror(errno));
      }
      if (n == 0) return fail(ErrorKind::Unavailable, "moat-init closed the connection before the command finished");
      dec.commit(static_cast<size_t>(n));
      for (;;) {
        auto f = dec.next_view();
        if (!f) return wrap(f.error(), "reading from moat-init");
        if (!*f) break;
        auto& fr = **f;
        switch (fr.type) {
          case FrameType::Stdout:
          case FrameType::Stderr: {
            bool is_out = fr.type == FrameType::Stdout;
            std::string& dst = is_out ? res.out : res.err;
            (is_out ? res.out_bytes : res.err_bytes) += fr.payload.size();
            if (dst.size() < max_capture) dst.append(fr.payload.substr(0, std::min(fr.payload.size(), max_capture - dst.size())));
            break;
          }
          case FrameType::Exit: {
            auto x = wire::decode<wire::ExecExit>(fr.payload);
            if (!x) return std::unexpected(x.error());
            res.exit_code = x->exit_code;
            res.signal = x->signal;
            res.timed_out = x->timed_out;
            res.duration_ms = x->duration_ms;
            return {};
          }
          case FrameType::Error: {
            auto m = wire::decode<wire::ErrorMsg>(fr.payload);
            return fail(ErrorKind::Internal, "moat-init: {}", m ? m->message : "malformed error");
          }
          default:
            return unexpected_frame(wire::Frame{fr.type, std::string(fr.payload)}, "Stdout, Stderr or Exit");
        }
      }
    }
  }
}

Status InitClient::put_file(const std::string& path, std::string_view data, uint32_t mode, uint32_t uid,
                            uint32_t gid) const {
  if (auto s = check_guest_path(path); !s) return s;
  if (mode > 07777) return fail(ErrorKind::InvalidInput, "mode {:o} is not a permission mode", mode);
  auto sock = open_session(io_timeout_);
  if (!sock) return std::unexpected(sock.error());
  int fd = sock->get();
  wire::FilePut put{path, mode, uid, gid, data.size()};
  // If moat-init refuses early it discards our data up to FileEnd, so a write failure here is only a
  // dropped connection; the answer below says why.
  Status sent = wire::write_frame(fd, FrameType::FilePut, wire::encode(put));
  for (size_t off = 0; sent && off < data.size(); off += wire::kMaxChunk)
    sent = wire::write_frame(fd, FrameType::FileData, data.substr(off, wire::kMaxChunk));
  if (sent) sent = wire::write_frame(fd, FrameType::FileEnd);
  auto f = wire::read_frame(fd);
  if (!f) return wrap(sent ? f.error() : sent.error(), fmt::format("writing {} in the sandbox", path));
  if (f->type == FrameType::Ok) return {};
  if (f->type == FrameType::Error) return guest_error(*f, ErrorKind::InvalidInput);
  return unexpected_frame(*f, "Ok");
}

Result<std::string> InitClient::get_file(const std::string& path, size_t max_size) const {
  if (auto s = check_guest_path(path); !s) return std::unexpected(s.error());
  auto sock = open_session(io_timeout_, wire::encode_frame(FrameType::FileGet, wire::encode(wire::FileGet{path})));
  if (!sock) return std::unexpected(sock.error());
  int fd = sock->get();
  auto f = wire::read_frame(fd);
  if (!f) return wrap(f.error(), fmt::format("reading {} in the sandbox", path));
  if (f->type == FrameType::Error) {
    auto m = wire::decode<wire::ErrorMsg>(f->payload);
    bool missing = m && m->message.starts_with("no such file");
    return guest_error(*f, missing ? ErrorKind::NotFound : ErrorKind::InvalidInput);
  }
  if (f->type != FrameType::FileInfo) return unexpected_frame(*f, "FileInfo");
  auto info = wire::decode<wire::FileInfo>(f->payload);
  if (!info) return std::unexpected(info.error());
  if (info->size > max_size)
    return fail(ErrorKind::ResourceLimit, "{} is {} bytes, over the {} byte limit", path, info->size, max_size);
  std::string data;
  data.reserve(info->size);
  for (;;) {
    auto d = wire::read_frame(fd);
    if (!d) return wrap(d.error(), fmt::format("reading {} in the sandbox", path));
    if (d->type == FrameType::FileEnd) return data;
    if (d->type != FrameType::FileData) return unexpected_frame(*d, "FileData or FileEnd");
    if (data.size() + d->payload.size() > max_size)
      return fail(ErrorKind::ResourceLimit, "{} grew past the {} byte limit while being read", path, max_size);
    data += d->payload;
  }
}

}  // namespace moat

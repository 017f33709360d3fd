#include "api/server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"
#include "wire/frame.h"

namespace moat::api {

void Session::progress(const Json& j) { (void)wire::write_frame(fd_, wire::FrameType::ApiProgress, j.dump()); }

Status Session::respond_ok(Json result) {
  responded_ = true;
  return wire::write_frame(fd_, wire::FrameType::ApiResponse, ok_response(std::move(result)).dump());
}

std::string peer_actor(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return "unknown peer";
  char exe[4096];
  auto link = fmt::format("/proc/{}/exe", cred.pid);
  ssize_t n = ::readlink(link.c_str(), exe, sizeof exe - 1);
  if (n <= 0) return fmt::format("uid {} pid {} (exe unknown)", cred.uid, cred.pid);
  return fmt::format("uid {} pid {} {}", cred.uid, cred.pid, std::string_view(exe, static_cast<size_t>(n)));
}

Server::~Server() {
  stop();
  if (!socket_path_.empty() && listen_fd_) unlink(socket_path_.c_str());
  // Idle threads hold `this`: let them leave before it goes (busy ones are waited for by the daemon).
  std::unique_lock g(pool_mu_);
  pool_cv_.notify_all();
  for (int i = 0; i < 200 && idle_ > 0; ++i) {
    g.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    g.lock();
  }
}

Status Server::listen(const std::filesystem::path& socket_path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  auto path = socket_path.string();
  if (path.size() >= sizeof addr.sun_path) return fail(ErrorKind::InvalidInput, "socket path too long: {}", path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

  // A socket file may be left by a moatd that was killed; only replace it if nobody answers.
  {
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
      return fail(ErrorKind::Conflict, "another moatd is already running on {}; stop it first ('moat daemon stop')", path);
  }
  unlink(path.c_str());

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail(ErrorKind::Internal, "socket: {}", strerror(errno));
  // Create the socket with 0600 from the start: no window in which another user could connect.
  mode_t old = umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  umask(old);
  if (rc != 0) return fail(ErrorKind::Unavailable, "cannot listen on {}: {}", path, strerror(errno));
  if (::listen(fd.get(), 256) != 0) return fail(ErrorKind::Internal, "listen: {}", strerror(errno));
  listen_fd_ = std::move(fd);
  socket_path_ = socket_path;
  return {};
}

void Server::serve() {
  while (!stopping_) {
    pollfd p{listen_fd_.get(), POLLIN, 0};
    int r = poll(&p, 1, 200);
    if (r <= 0) continue;
    int c = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    UniqueFd conn(c);
    // Only root (or moatd's own user) may drive moatd, whatever the socket's mode says.
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || (cred.uid != 0 && cred.uid != geteuid())) {
      continue;
    }
    ++active_;
    dispatch(std::move(conn));
  }
}

void Server::dispatch(UniqueFd conn) {
  {
    std::lock_guard g(pool_mu_);
    if (idle_ > queue_.size()) {
      queue_.push_back(std::move(conn));
      pool_cv_.notify_one();
      return;
    }
  }
  std::thread([this, conn = std::move(conn)]() mutable { run_thread(std::move(conn)); }).detach();
}

void Server::run_thread(UniqueFd first) {
  UniqueFd conn = std::move(first);
  for (;;) {
    serve_connection(std::move(conn));
    std::unique_lock g(pool_mu_);
    --active_;
    if (stopping_ || idle_ >= kMaxIdleThreads) return;
    ++idle_;
    pool_cv_.wait(g, [this] { return !queue_.empty() || stopping_; });
    --idle_;
    if (queue_.empty()) return;  // stopping
    conn = std::move(queue_.front());
    queue_.pop_front();
  }
}

void Server::stop() {
  stopping_ = true;
  std::lock_guard g(pool_mu_);
  pool_cv_.notify_all();
}

void Server::serve_connection(UniqueFd fd) {
  auto frame = wire::read_frame(fd.get());
  if (!frame) return;
  Session session(fd.get());
  auto reply_error = [&](const Error& e) {
    (void)wire::write_frame(fd.get(), wire::FrameType::ApiResponse, error_response(e).dump());
  };
  if (frame->type != wire::FrameType::ApiRequest) {
    reply_error(Error{ErrorKind::InvalidInput, "expected an API request"});
    return;
  }
  Json req = Json::parse(frame->payload, nullptr, false);
  if (req.is_discarded() || !req.is_object() || !req.contains("verb") || !req["verb"].is_string()) {
    reply_error(Error{ErrorKind::InvalidInput, "malformed API request"});
    return;
  }
  std::string verb = req["verb"];
  auto it = handlers_.find(verb);
  if (it == handlers_.end()) {
    reply_error(Error{ErrorKind::InvalidInput, fmt::format("unknown API verb '{}'; is the moat CLI newer than moatd?", verb)});
    return;
  }
  Json args = req.value("args", Json::object());
  // Who asked is what the kernel says about the peer, never what the request claims.
  if (args.is_object()) args["actor"] = peer_actor(fd.get());
  Result<Json> result = [&]() -> Result<Json> {
    try {
      return it->second(args, session);
    } catch (const Json::exception& e) {
      return fail(ErrorKind::InvalidInput, "bad arguments for '{}': {}", verb, e.what());
    } catch (const std::exception& e) {
      log::error("handler {} threw: {}", verb, e.what());
      return fail(ErrorKind::Internal, "internal error in '{}': {}", verb, e.what());
    }
  }();
  if (session.responded()) return;
  if (!result) {
    reply_error(result.error());
    return;
  }
  (void)wire::write_frame(fd.get(), wire::FrameType::ApiResponse, ok_response(std::move(*result)).dump());
}

}  // namespace moat::api

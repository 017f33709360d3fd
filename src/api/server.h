#pragma once
// moatd's side of the control API: a unix socket (mode 0600, root only) served one thread per
// connection. Handlers are registered by verb; the daemon decides what each verb does.
#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "api/protocol.h"
#include "base/unique_fd.h"

namespace moat::api {

// What a handler sees of its connection.
class Session {
 public:
  explicit Session(int fd) : fd_(fd) {}
  // Sends one progress frame (a line of text for humans, or any JSON object).
  void progress(const Json& j);
  void progress_line(std::string_view line) { progress(Json{{"line", line}}); }
  // For streaming verbs: send the success response now; the handler then owns the connection.
  Status respond_ok(Json result);
  bool responded() const { return responded_; }
  int fd() const { return fd_; }

 private:
  int fd_;
  bool responded_ = false;
};

using Handler = std::function<Result<Json>(const Json& args, Session&)>;

class Server {
 public:
  ~Server();
  void handle(std::string verb, Handler h) { handlers_[std::move(verb)] = std::move(h); }
  // Binds the socket (replacing a stale one; refusing when another moatd answers on it).
  Status listen(const std::filesystem::path& socket);
  // Accepts until stop() is called from another thread or a signal handler thread.
  void serve();
  void stop();
  size_t active_connections() const { return active_; }

 private:
  void serve_connection(UniqueFd fd);

  std::map<std::string, Handler, std::less<>> handlers_;
  UniqueFd listen_fd_;
  std::filesystem::path socket_path_;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> active_{0};
};

}  // namespace moat::api

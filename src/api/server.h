#pragma once
// moatd's side of the control API: a unix socket (mode 0600, root only) served one thread per
// connection. Handlers are registered by verb; the daemon decides what each verb does.
//
// A thread that has served its connection waits for the next one (up to kMaxIdleThreads wait), so a
// connection usually finds a thread ready: creating a thread, and tearing its stack down when it ends
// (glibc gives an exiting thread's stack back to the kernel page by page), is dear next to a request
// as small as an exec of `true`, most of all where page tables are costly.
#include <atomic>
#include <condition_variable>
#include <deque>
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

// A handler's args always carry "actor": the peer's credentials as the kernel reports them
// (SO_PEERCRED), "uid 0 pid 1234 /usr/bin/moat"; an "actor" the client sent is replaced, so a client
// cannot claim to be someone else in the audit trail. (The pid is the connecting process's at
// connect time; exe is read from /proc when the request is served.)
using Handler = std::function<Result<Json>(const Json& args, Session&)>;

// The actor string for the peer of a connected unix socket (see above).
std::string peer_actor(int fd);

class Server {
 public:
  static constexpr size_t kMaxIdleThreads = 4;

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
  // Hands a connection to an idle thread, or starts a thread for it.
  void dispatch(UniqueFd conn);
  // A pool thread: serves `first`, then connections handed to it while it is idle.
  void run_thread(UniqueFd first);

  std::map<std::string, Handler, std::less<>> handlers_;
  UniqueFd listen_fd_;
  std::filesystem::path socket_path_;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> active_{0};

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::deque<UniqueFd> queue_;  // accepted, waiting for an idle thread (never more than are idle)
  size_t idle_ = 0;             // threads waiting on pool_cv_
};

}  // namespace moat::api

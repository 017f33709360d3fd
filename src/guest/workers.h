#pragma once
// moat-init's connection workers: processes forked ahead of time that accept connections on the
// listening socket and serve them (guest/connection.h), so a connection never waits for a fork.
//
// A fork, the copy-on-write faults after it and the exit are the dearest part of serving a request
// where page tables are costly (several milliseconds on some virtual machines). So a worker that
// served a connection and has nothing left behind (no descendant: it is the subreaper of everything
// its exec started) goes back to accepting, up to kMaxIdle idle workers; one with descendants exits,
// and they pass to PID 1 as before. That keeps the kill-the-whole-tree rule of an exec exact: a
// worker's descendants only ever belong to the session it is serving.
//
// PID 1 knows which workers are idle from the notes they write on a pipe (taken / idle again), forks a
// new one when none is, and accepts connections itself (a fork per connection) while it cannot.
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <vector>

#include "base/unique_fd.h"
#include "guest/connection.h"

namespace moat::guest {

class Workers {
 public:
  static constexpr int kMaxIdle = 2;

  Workers(const ConnContext& ctx, int listen_fd) : ctx_(ctx), listen_fd_(listen_fd) {}
  ~Workers();
  Workers(const Workers&) = delete;
  Workers& operator=(const Workers&) = delete;

  // Sets up the notes pipe and the shared counters; false (and PID 1 accepts by itself) on failure.
  bool open();
  // The read end PID 1 polls for notes; -1 when closed.
  int notes_fd() const { return notes_r_.get(); }
  bool any_idle() const { return !idle_.empty(); }
  // How long PID 1 may sleep before it should try start() again after a failure; -1 = no limit.
  int retry_in_ms() const;

  // PID 1: forks a worker unless one is idle (or forking failed less than a second ago).
  // `in_child` runs first in the new worker: it closes what of PID 1's the worker must not hold.
  void start(const std::function<void()>& in_child);
  // PID 1: reads the workers' notes; call before reaping, so a worker that was taken and finished
  // has been seen taken.
  void read_notes();
  // PID 1: for every reaped child; true when it was a worker.
  bool on_reaped(pid_t pid, int status);
  // PID 1, shutting down: idle workers are killed (they hold the listener) and busy ones exit when done.
  void stop();
  // In any other process PID 1 forks: drops the workers' pipe and shared page.
  void close_in_child();

 private:
  struct Shared;
  struct Note {
    pid_t pid;
    int idle;  // 1: waiting for a connection again; 0: took one
  };

  [[noreturn]] void run_worker();
  int accept_one();
  bool can_serve_again();
  void tell(bool idle);

  ConnContext ctx_;
  int listen_fd_;
  UniqueFd notes_r_, notes_w_;
  Shared* shared_ = nullptr;
  std::vector<pid_t> idle_, all_;  // PID 1's view: idle workers; every worker not yet reaped
  bool stopping_ = false;
  pid_t self_ = 0;  // in a worker: its own pid
  std::chrono::steady_clock::time_point retry_at_{};
};

}  // namespace moat::guest

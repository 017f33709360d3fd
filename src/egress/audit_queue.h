#pragma once
// Egress audit records are produced on the gateway's event loop, which must never wait for a disk
// flush. They go through this queue to a writer thread that appends them in batches (one durable
// transaction per batch). Destruction drains the queue first, so nothing pushed is lost on a clean stop.
// The queue is bounded in effect: refusals reach it coalesced and capped (RefusalLedger), and an
// allowed connection is opened only while the queue is not saturated (fail closed: a connection that
// could not be recorded is refused, so a flood can never hide an exfiltration).
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "audit/audit_log.h"

namespace moat::egress {

class AuditQueue {
 public:
  explicit AuditQueue(AuditLog& log);
  ~AuditQueue();
  AuditQueue(const AuditQueue&) = delete;
  AuditQueue& operator=(const AuditQueue&) = delete;

  // Records waiting past which the gateway opens no new upstream connection.
  static constexpr size_t kSaturated = 50000;

  void push(AuditEntry entry);
  bool saturated() const { return waiting_.load(std::memory_order_relaxed) >= kSaturated; }
  // Blocks until everything pushed so far is durable (tests, shutdown).
  void flush();

 private:
  void run();

  AuditLog& log_;
  std::mutex mu_;
  std::condition_variable cv_, drained_;
  std::deque<AuditEntry> pending_;
  std::atomic<size_t> waiting_{0};  // pushed and not yet appended
  bool writing_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace moat::egress

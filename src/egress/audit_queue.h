#pragma once
// Egress audit records are produced on the gateway's event loop, which must never wait for a disk
// flush. They go through this queue to a writer thread that appends them in batches (one durable
// transaction per batch). Destruction drains the queue first, so nothing pushed is lost on a clean stop.
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

  void push(AuditEntry entry);
  // Blocks until everything pushed so far is durable (tests, shutdown).
  void flush();

 private:
  void run();

  AuditLog& log_;
  std::mutex mu_;
  std::condition_variable cv_, drained_;
  std::deque<AuditEntry> pending_;
  bool writing_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace moat::egress

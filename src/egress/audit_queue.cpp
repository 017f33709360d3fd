#include "egress/audit_queue.h"

#include <vector>

#include "base/log.h"

namespace moat::egress {

AuditQueue::AuditQueue(AuditLog& log) : log_(log), thread_([this] { run(); }) {}

AuditQueue::~AuditQueue() {
  {
    std::lock_guard g(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void AuditQueue::push(AuditEntry entry) {
  {
    std::lock_guard g(mu_);
    pending_.push_back(std::move(entry));
    waiting_.fetch_add(1, std::memory_order_relaxed);
  }
  cv_.notify_one();
}

void AuditQueue::flush() {
  std::unique_lock l(mu_);
  drained_.wait(l, [this] { return pending_.empty() && !writing_; });
}

void AuditQueue::run() {
  std::unique_lock l(mu_);
  for (;;) {
    cv_.wait(l, [this] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) {
      if (stopping_) return;
      continue;
    }
    std::vector<AuditEntry> batch(std::make_move_iterator(pending_.begin()), std::make_move_iterator(pending_.end()));
    pending_.clear();
    writing_ = true;
    l.unlock();
    size_t count = batch.size();
    if (auto r = log_.append_batch(std::move(batch)); !r) {
      // The records are lost only if the store itself fails; say so loudly rather than retry forever.
      log::error("egress audit: cannot append {} record(s): {}", count, r.error().message);
    }
    l.lock();
    waiting_.fetch_sub(count, std::memory_order_relaxed);
    writing_ = false;
    drained_.notify_all();
  }
}

}  // namespace moat::egress

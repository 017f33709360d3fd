#include "audit/checkpointer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"
#include "base/unique_fd.h"
#include "store/clock.h"

namespace moat {

namespace {

Result<UniqueFd> open_sink(const std::filesystem::path& path) {
  // O_NONBLOCK: a FIFO planted at the path must not hang moatd.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
  if (!fd) {
    int err = errno;
    if (err == ELOOP)
      return fail(ErrorKind::InvalidInput,
                  "[audit] sink {} is a symbolic link; moatd does not follow it (name the file itself)", path.string());
    return fail(ErrorKind::Unavailable,
                "cannot open the audit checkpoint sink {} for appending: {} (create its directory, or fix [audit] "
                "sink in moat.toml)",
                path.string(), strerror(err));
  }
  return fd;
}

}  // namespace

Checkpointer::Checkpointer(Database& db, AuditLog& log, CheckpointKey key, CheckpointerOptions options, Clock clock)
    : db_(db),
      log_(log),
      key_(std::move(key)),
      options_(std::move(options)),
      clock_(clock ? std::move(clock) : Clock(&clock::now_ns)) {
  if (options_.every_records < 1) options_.every_records = 1;
}

Checkpointer::~Checkpointer() {
  if (auto st = stop(); !st) log::warn("audit checkpoint at stop: {}", st.error().message);
}

Status Checkpointer::start() {
  if (!options_.sink_file.empty()) {
    auto fd = open_sink(options_.sink_file);
    if (!fd) return std::unexpected(fd.error());
  }
  auto last = db_.query_int64("SELECT coalesce(max(seq), 0) FROM audit_checkpoints");
  if (!last) return wrap(last.error(), "reading the last audit checkpoint");
  signed_seq_ = *last;
  auto head = log_.head();
  if (!head) return wrap(head.error(), "reading the end of the audit log");
  latest_seq_ = head->first;
  log_.set_tail_watcher([this](int64_t seq) {
    latest_seq_.store(seq, std::memory_order_relaxed);
    if (seq - signed_seq_.load(std::memory_order_relaxed) >= options_.every_records) {
      std::lock_guard g(mu_);
      cv_.notify_one();
    }
  });
  {
    std::lock_guard g(mu_);
    started_ = true;
  }
  thread_ = std::thread([this] { run(); });
  return {};
}

void Checkpointer::run() {
  auto next_due = std::chrono::steady_clock::now() + options_.interval;
  std::unique_lock g(mu_);
  while (!stopping_) {
    cv_.wait_until(g, next_due, [&] {
      return stopping_ || latest_seq_.load() - signed_seq_.load() >= options_.every_records;
    });
    if (stopping_) break;
    bool due = std::chrono::steady_clock::now() >= next_due;
    bool full = latest_seq_.load() - signed_seq_.load() >= options_.every_records;
    if (!due && !full) continue;
    g.unlock();
    if (auto cp = checkpoint_now(); !cp) log::error("audit checkpoint: {}", cp.error().message);
    g.lock();
    next_due = std::chrono::steady_clock::now() + options_.interval;
  }
}

Result<std::optional<Checkpoint>> Checkpointer::checkpoint_now() {
  std::lock_guard s(sign_mu_);
  auto head = log_.head();
  if (!head) return wrap(head.error(), "reading the end of the audit log");
  // Records the router committed without waiting for the disk (up to the head just read) become
  // durable first: a checkpoint must never cover a record a crash could still take away.
  if (auto st = db_.sync_wal(); !st) return wrap(st.error(), "flushing the store before an audit checkpoint");
  auto [seq, hash] = std::move(*head);
  if (seq == 0 || seq <= signed_seq_.load()) return std::optional<Checkpoint>{};
  Checkpoint cp = key_.sign(seq, std::move(hash), clock_());
  // The sink first: it is the copy that outlives tampering with the state directory.
  auto shipped = ship(cp);
  {
    auto l = db_.lock();
    auto st = db_.prepare(
        "INSERT INTO audit_checkpoints (seq, head_hash, time_ns, public_key, signature) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st) return wrap(st.error(), "storing an audit checkpoint");
    st->bind(1, cp.seq).bind(2, cp.head_hash).bind(3, cp.time_ns).bind(4, cp.public_key).bind(5, cp.signature);
    if (auto r = st->step(); !r) return wrap(r.error(), fmt::format("storing the audit checkpoint of record {}", cp.seq));
  }
  signed_seq_ = cp.seq;
  if (!shipped) return std::unexpected(shipped.error());
  return std::optional<Checkpoint>(std::move(cp));
}

Status Checkpointer::ship(const Checkpoint& cp) {
  if (options_.sink_file.empty()) return {};
  auto fd = open_sink(options_.sink_file);
  if (!fd) return std::unexpected(fd.error());
  std::string line = checkpoint_line(cp) + "\n";
  std::string_view rest = line;
  while (!rest.empty()) {
    ssize_t n = ::write(fd->get(), rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return fail(ErrorKind::Unavailable, "cannot append the checkpoint of record {} to the audit sink {}: {}", cp.seq,
                  options_.sink_file.string(), strerror(errno));
    rest.remove_prefix(static_cast<size_t>(n));
  }
  if (::fsync(fd->get()) != 0 && errno != EINVAL)  // EINVAL: a pipe or character device, nothing to sync
    return fail(ErrorKind::Unavailable, "cannot sync the audit sink {}: {}", options_.sink_file.string(),
                strerror(errno));
  return {};
}

Status Checkpointer::stop() {
  {
    std::lock_guard g(mu_);
    if (!started_) return {};
    started_ = false;
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  log_.set_tail_watcher({});
  auto cp = checkpoint_now();
  if (!cp) return std::unexpected(cp.error());
  return {};
}

}  // namespace moat

#pragma once
// moatd's composition root: builds every part from the config and wires the API verbs to them.
// This is the only place that knows all the parts.
#include <atomic>
#include <memory>
#include <thread>

#include "api/server.h"
#include "audit/audit_log.h"
#include "config/config.h"
#include "image/image_store.h"
#include "sandbox/manager.h"
#include "store/database.h"

namespace moat {

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> create(const Config& config, std::filesystem::path init_binary);
  ~Daemon();

  // Reconciles, then serves the API until stop() (from a signal or the daemon.stop verb).
  Status run();
  void stop();

  SandboxManager& sandboxes() { return *manager_; }

 private:
  Daemon(const Config& config) : config_(config) {}
  void register_handlers();
  void idle_loop();

  Config config_;
  std::optional<Database> db_;
  std::unique_ptr<AuditLog> audit_;
  std::optional<image::ImageStore> images_;
  std::unique_ptr<SandboxManager> manager_;
  api::Server server_;
  std::atomic<bool> stopping_{false};
  std::thread idle_thread_;
};

}  // namespace moat

#pragma once
// The host-side staging area for message attachments (<state>/attachments). A channel downloads an
// attachment the moment its message arrives (platform links expire: Telegram's file paths after an
// hour, Discord's CDN links after a day) and streams it here, within a size cap per file and one for
// the whole area; the envelope names the staged file by its path relative to the area. The agent's
// turn reads it back and copies it into the sandbox through moat-init: channels never touch
// sandboxes, and no host path is written inside a sandbox from the host.
//
// The area is host-owned (0700, root): nothing from a sandbox can plant a link in it; reads refuse
// any relative path that could leave it (absolute, "..", a symlink on the way). Files are kept for
// `keep` (a retried or recovered turn copies them again), then pruned.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/unique_fd.h"

namespace moat {

struct AttachmentLimits {
  uint64_t max_file = 20ull << 20;    // Telegram's bots may download at most 20 MB; Discord's default upload is 10 MiB
  uint64_t max_total = 1ull << 30;    // the whole area
  std::chrono::milliseconds keep{7LL * 24 * 3600 * 1000};
};

class AttachmentStage {
 public:
  // Creates the directory (0700) when missing.
  static Result<std::unique_ptr<AttachmentStage>> open(std::filesystem::path root, AttachmentLimits limits = {});

  // One file being written. Abandoned (removed) unless commit() succeeds.
  class Writer {
   public:
    Writer(Writer&&) noexcept;
    ~Writer();
    // ResourceLimit once the file would pass the per-file cap or the area's total.
    Status write(std::string_view bytes);
    // Flushed to disk and named: the path relative to the area, for the envelope.
    Result<std::string> commit();
    uint64_t size() const { return size_; }

   private:
    friend class AttachmentStage;
    Writer(AttachmentStage& stage, std::filesystem::path tmp, std::string rel, UniqueFd fd);
    AttachmentStage* stage_;
    std::filesystem::path tmp_;
    std::string rel_;
    UniqueFd fd_;
    uint64_t size_ = 0;
    bool done_ = false;
  };

  // A writer for an attachment called `name` (any text from the platform: only a safe base name of it
  // is kept in the file's name) that arrived on `channel`. `declared_size` when the platform said it:
  // ResourceLimit at once when it is over a cap.
  Result<Writer> begin(std::string_view channel, std::string_view name, uint64_t declared_size = 0);

  // The staged file's bytes. NotFound when it is gone (pruned), InvalidInput for a path that is not a
  // staged file's.
  Result<std::string> read(std::string_view rel) const;

  // Removes files older than `keep`; returns how many.
  size_t prune();
  uint64_t used_bytes() const;
  const AttachmentLimits& limits() const { return limits_; }
  const std::filesystem::path& root() const { return root_; }

  // `name` as a file name safe in any file system and shell: letters, digits, '.', '-', '_' (others
  // become '_'), no leading dot, at most 80 bytes, "file" when nothing is left.
  static std::string safe_name(std::string_view name);

 private:
  AttachmentStage(std::filesystem::path root, AttachmentLimits limits, uint64_t used);
  bool reserve(uint64_t bytes);
  void release(uint64_t bytes);

  std::filesystem::path root_;
  AttachmentLimits limits_;
  mutable std::mutex mu_;
  uint64_t used_ = 0;  // bytes of committed files and of writers in progress
};

}  // namespace moat

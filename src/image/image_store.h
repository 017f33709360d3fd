#pragma once
// Immutable, content-addressed root file systems.
//
// Layout under the store root (moatd passes <state>/images):
//   blobs/sha256/<digest>/rootfs/     the extracted root, read-only by convention, 0755 all the way down
//   blobs/sha256/<digest>/meta.json   {digest, size_bytes, source, created_at}
//   refs/<name>                       the digest a name points at (replaced atomically)
//   tmp/<pid>-<id>/                   work in progress; removed on failure, stale ones (dead pid) at open()
//   lock                              flock'd around every change of refs/ and blobs/
// The digest is the SHA-256 of the uncompressed tar stream the root was extracted from, so the same
// content imported twice (under any names, in any compression) shares one blob.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace moat::image {

// One progress line per step ("downloading packages", "hashing and unpacking", ...). May be empty.
using ProgressFn = std::function<void(std::string_view)>;
// Answers whether any sandbox still uses the image with this digest.
using InUseFn = std::function<bool(const std::string& digest)>;

struct ImageInfo {
  std::string name;        // the ref this was looked up through; empty for a blob reached by digest with no ref
  std::string digest;      // 64 lowercase hex characters (shown as "sha256:<digest>")
  uint64_t size_bytes = 0; // bytes of the uncompressed tar stream
  std::string source;      // "mmdebstrap bookworm minbase (...)" or "import <path>"
  std::string created_at;  // RFC 3339, UTC
  // Set by build_default when it moved an existing name to a new digest: the digest it pointed at before.
  // That blob stays until gc() finds it unreferenced and unused.
  std::string replaced_digest;
};

// The packages and suite build_default() installs (minbase + these; apt stays usable).
inline constexpr std::string_view kDefaultSuite = "bookworm";
inline constexpr std::string_view kDefaultMirror = "http://deb.debian.org/debian";
inline constexpr std::string_view kDefaultPackages = "ca-certificates,bash,coreutils,curl,git,python3";

class ImageStore {
 public:
  // Creates the layout if missing and removes work directories left by dead processes.
  static Result<ImageStore> open(const std::filesystem::path& root);

  // Builds minimal Debian bookworm with mmdebstrap (needs root and the network) and stores it under `name`.
  // An existing `name` is moved to the new image (reported through progress and replaced_digest).
  Result<ImageInfo> build_default(std::string name, const ProgressFn& progress = {});

  // Returns the image called `name` if the store has it, else builds it with build_default(). Concurrent
  // callers (other processes too: parallel tests sharing one cache store) wait for one build.
  Result<ImageInfo> ensure_default(std::string name, const ProgressFn& progress = {});

  // Imports a root file system tarball: plain tar, gzip, zstd, xz or bzip2 (detected by magic bytes).
  // Refuses members with absolute paths or '..', archives without /bin or /usr, and an existing `name`
  // that points at different content (Conflict); the same content under the same name is a no-op.
  Result<ImageInfo> import_tarball(std::string name, const std::filesystem::path& tarball,
                                   const ProgressFn& progress = {});

  // One entry per name, sorted by name.
  Result<std::vector<ImageInfo>> list() const;
  // A name, or a digest prefix of at least 4 hex digits (optionally "sha256:"-prefixed) that is unique.
  Result<ImageInfo> get(std::string_view name_or_digest_prefix) const;
  // Removes the name. When no other name points at its digest the blob goes too, unless in_use(digest)
  // says a sandbox still uses it: then nothing changes (Conflict).
  Status remove(std::string_view name, const InUseFn& in_use);
  // Removes blobs that no name points at and no sandbox uses (e.g. the old image after a rebuild).
  // Returns the digests removed.
  Result<std::vector<std::string>> gc(const InUseFn& in_use);

  std::filesystem::path rootfs_path(const ImageInfo& info) const;
  std::filesystem::path rootfs_path(std::string_view digest) const;
  const std::filesystem::path& root() const { return root_; }

 private:
  explicit ImageStore(std::filesystem::path root) : root_(std::move(root)) {}
  // Hashes, checks and extracts a tar stream from `tarball` into a new blob and points `name` at it.
  Result<ImageInfo> ingest(const std::string& name, const std::filesystem::path& tarball, const std::string& source,
                           bool replace_existing, const ProgressFn& progress);
  Result<ImageInfo> read_blob(const std::string& digest) const;
  Result<std::string> read_ref(const std::string& name) const;
  Status write_ref(const std::string& name, const std::string& digest);
  std::filesystem::path blob_dir(std::string_view digest) const;

  std::filesystem::path root_;
};

}  // namespace moat::image

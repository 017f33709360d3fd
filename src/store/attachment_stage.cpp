#include "store/attachment_stage.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "base/ids.h"
#include "base/log.h"

namespace moat {

namespace fs = std::filesystem;

namespace {

bool safe_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
         c == '_';
}

// A path component this area could have made: safe characters only, no leading dot, not empty.
bool valid_component(std::string_view s) {
  if (s.empty() || s.size() > 200 || s.front() == '.') return false;
  for (char c : s)
    if (!safe_char(c)) return false;
  return true;
}

constexpr size_t kMaxName = 80;
constexpr size_t kChunk = 1 << 16;

}  // namespace

std::string AttachmentStage::safe_name(std::string_view name) {
  // Only the last path component the platform gave.
  if (auto slash = name.find_last_of("/\\"); slash != std::string_view::npos) name = name.substr(slash + 1);
  std::string out;
  for (char c : name) {
    if (out.size() >= kMaxName) break;
    out.push_back(safe_char(c) ? c : '_');
  }
  while (!out.empty() && out.front() == '.') out.erase(0, 1);
  if (out.empty()) out = "file";
  return out;
}

Result<std::unique_ptr<AttachmentStage>> AttachmentStage::open(fs::path root, AttachmentLimits limits) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return fail(ErrorKind::Internal, "creating the attachment staging area {}: {}", root.string(), ec.message());
  if (::chmod(root.c_str(), 0700) != 0)
    return fail(ErrorKind::Internal, "making {} private: {}", root.string(), std::strerror(errno));
  struct stat st{};
  if (::lstat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid())
    return fail(ErrorKind::Internal, "the attachment staging area {} is not a directory owned by moatd's user",
                root.string());
  // What is there already counts against the total; half-written files of a crash go.
  uint64_t used = 0;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_symlink(ec)) continue;
    if (it->path().filename().string().starts_with(".tmp-")) {
      fs::remove(it->path(), ec);
      continue;
    }
    if (it->is_regular_file(ec)) used += it->file_size(ec);
  }
  return std::unique_ptr<AttachmentStage>(new AttachmentStage(std::move(root), limits, used));
}

AttachmentStage::AttachmentStage(fs::path root, AttachmentLimits limits, uint64_t used)
    : root_(std::move(root)), limits_(limits), used_(used) {}

bool AttachmentStage::reserve(uint64_t bytes) {
  std::lock_guard g(mu_);
  if (used_ + bytes > limits_.max_total) return false;
  used_ += bytes;
  return true;
}

void AttachmentStage::release(uint64_t bytes) {
  std::lock_guard g(mu_);
  used_ -= std::min(used_, bytes);
}

uint64_t AttachmentStage::used_bytes() const {
  std::lock_guard g(mu_);
  return used_;
}

Result<AttachmentStage::Writer> AttachmentStage::begin(std::string_view channel, std::string_view name,
                                                       uint64_t declared_size) {
  if (declared_size > limits_.max_file)
    return fail(ErrorKind::ResourceLimit, "the file is {} bytes, over the {} bytes an attachment may have",
                declared_size, limits_.max_file);
  std::string dir = safe_name(channel);
  std::error_code ec;
  fs::create_directory(root_ / dir, ec);
  if (ec) return fail(ErrorKind::Internal, "creating {}: {}", (root_ / dir).string(), ec.message());
  std::string id = random_hex_id(8);
  std::string rel = fmt::format("{}/{}-{}", dir, id, safe_name(name));
  fs::path tmp = root_ / dir / fmt::format(".tmp-{}", id);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return fail(ErrorKind::Internal, "creating {}: {}", tmp.string(), std::strerror(errno));
  return Writer(*this, std::move(tmp), std::move(rel), UniqueFd(fd));
}

AttachmentStage::Writer::Writer(AttachmentStage& stage, fs::path tmp, std::string rel, UniqueFd fd)
    : stage_(&stage), tmp_(std::move(tmp)), rel_(std::move(rel)), fd_(std::move(fd)) {}

AttachmentStage::Writer::Writer(Writer&& o) noexcept
    : stage_(o.stage_), tmp_(std::move(o.tmp_)), rel_(std::move(o.rel_)), fd_(std::move(o.fd_)), size_(o.size_),
      done_(std::exchange(o.done_, true)) {}

AttachmentStage::Writer::~Writer() {
  if (done_) return;
  fd_.reset();
  std::error_code ec;
  fs::remove(tmp_, ec);
  stage_->release(size_);
}

Status AttachmentStage::Writer::write(std::string_view bytes) {
  if (done_) return fail(ErrorKind::Internal, "writing a staged attachment that is already closed");
  if (size_ + bytes.size() > stage_->limits_.max_file)
    return fail(ErrorKind::ResourceLimit, "the file is over the {} bytes an attachment may have",
                stage_->limits_.max_file);
  // Full: make room from files past their keep time first.
  if (!stage_->reserve(bytes.size()) && (stage_->prune() == 0 || !stage_->reserve(bytes.size())))
    return fail(ErrorKind::ResourceLimit, "the attachment staging area is full ({} bytes, [attachments] max_total); "
                "staged files are pruned after [attachments] keep", stage_->limits_.max_total);
  size_ += bytes.size();
  while (!bytes.empty()) {
    ssize_t n = ::write(fd_.get(), bytes.data(), std::min(bytes.size(), kChunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail(ErrorKind::ResourceLimit, "writing a staged attachment: {}", std::strerror(errno));
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Result<std::string> AttachmentStage::Writer::commit() {
  if (done_) return fail(ErrorKind::Internal, "committing a staged attachment twice");
  if (::fsync(fd_.get()) != 0) return fail(ErrorKind::ResourceLimit, "flushing a staged attachment: {}", std::strerror(errno));
  fd_.reset();
  std::error_code ec;
  fs::rename(tmp_, stage_->root_ / rel_, ec);
  if (ec) return fail(ErrorKind::Internal, "naming a staged attachment: {}", ec.message());
  done_ = true;
  return rel_;
}

Result<std::string> AttachmentStage::read(std::string_view rel) const {
  auto slash = rel.find('/');
  if (slash == std::string_view::npos || !valid_component(rel.substr(0, slash)) ||
      !valid_component(rel.substr(slash + 1)))
    return fail(ErrorKind::InvalidInput, "'{}' is not a staged attachment", rel);
  // Component by component without following links: the area is moatd's, but a path is data.
  UniqueFd root(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  if (!root) return fail(ErrorKind::Internal, "opening {}: {}", root_.string(), std::strerror(errno));
  UniqueFd dir(::openat(root.get(), std::string(rel.substr(0, slash)).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  if (!dir) return fail(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::InvalidInput, "no staged attachment '{}'", rel);
  UniqueFd f(::openat(dir.get(), std::string(rel.substr(slash + 1)).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!f)
    return fail(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::InvalidInput,
                "no staged attachment '{}' (pruned after [attachments] keep?)", rel);
  struct stat st{};
  if (::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return fail(ErrorKind::InvalidInput, "'{}' is not a staged attachment", rel);
  if (static_cast<uint64_t>(st.st_size) > limits_.max_file)
    return fail(ErrorKind::ResourceLimit, "staged attachment '{}' is over the size limit", rel);
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(f.get(), out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail(ErrorKind::Internal, "reading staged attachment '{}': {}", rel, std::strerror(errno));
    got += static_cast<size_t>(n);
  }
  return out;
}

size_t AttachmentStage::prune() {
  const auto cutoff = fs::file_time_type::clock::now() - limits_.keep;
  size_t removed = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root_, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    std::error_code e2;
    if (it->is_symlink(e2) || !it->is_regular_file(e2)) continue;
    if (it->last_write_time(e2) >= cutoff || e2) continue;
    uint64_t size = it->file_size(e2);
    if (fs::remove(it->path(), e2)) {
      release(size);
      ++removed;
    }
  }
  if (removed > 0)
    log::info("attachments: pruned {} staged file(s) older than {} s", removed,
              std::chrono::duration_cast<std::chrono::seconds>(limits_.keep).count());
  return removed;
}

}  // namespace moat

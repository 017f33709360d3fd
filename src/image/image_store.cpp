#include "image/image_store.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>

#include "base/fs.h"
#include "base/ids.h"
#include "base/json.h"
#include "base/log.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "image/tar_check.h"

namespace fs = std::filesystem;

namespace moat::image {
namespace {

// Fixed so that two builds from the same mirror state produce the same tarball (and so the same digest).
constexpr std::string_view kSourceDateEpoch = "1700000000";

bool is_hex_digest(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string now_rfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string human_bytes(uint64_t n) {
  if (n >= (1ull << 30)) return fmt::format("{:.1f} GiB", n / double(1ull << 30));
  if (n >= (1ull << 20)) return fmt::format("{:.1f} MiB", n / double(1ull << 20));
  return fmt::format("{} KiB", (n + 1023) / 1024);
}

void say(const ProgressFn& progress, std::string_view line) {
  log::debug("image: {}", line);
  if (progress) progress(line);
}

// Mount points at or beneath `dir` (deepest first), from /proc/self/mountinfo.
std::vector<std::string> mounts_beneath(const fs::path& dir) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::string base = dir.string();
  while (std::getline(in, line)) {
    // Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
    size_t pos = 0;
    for (int i = 0; i < 4 && pos != std::string::npos; ++i) pos = line.find(' ', pos + 1);
    if (pos == std::string::npos) continue;
    auto end = line.find(' ', pos + 1);
    std::string raw = line.substr(pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
    std::string mp;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\' && i + 3 < raw.size()) {
        mp.push_back(static_cast<char>((raw[i + 1] - '0') * 64 + (raw[i + 2] - '0') * 8 + (raw[i + 3] - '0')));
        i += 3;
      } else {
        mp.push_back(raw[i]);
      }
    }
    if (mp == base || mp.starts_with(base + "/")) out.push_back(mp);
  }
  std::sort(out.begin(), out.end(), std::greater<>());
  return out;
}

// Removes a work directory. A tool killed half-way (mmdebstrap in root mode mounts proc, sys and dev
// files in its chroot) can leave mounts beneath it: those are detached first, so removal never deletes
// anything outside the directory.
void remove_work_dir(const fs::path& dir) {
  for (const auto& mp : mounts_beneath(dir)) {
    if (umount2(mp.c_str(), MNT_DETACH) != 0) log::warn("image: cannot detach {}: {}", mp, strerror(errno));
  }
  if (!mounts_beneath(dir).empty()) {
    log::error("image: {} still has mounts beneath it; leaving it in place", dir.string());
    return;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) log::warn("image: cannot remove {}: {}", dir.string(), ec.message());
}

// A directory under <store>/tmp that is removed when dropped, unless released.
class WorkDir {
 public:
  static Result<WorkDir> create(const fs::path& store_root) {
    fs::path p = store_root / "tmp" / fmt::format("{}-{}", getpid(), random_hex_id(6));
    if (mkdir(p.c_str(), 0711) != 0) {
      return fail(ErrorKind::Internal, "cannot create work directory {}: {}", p.string(), strerror(errno));
    }
    return WorkDir(p);
  }
  WorkDir(WorkDir&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  WorkDir& operator=(WorkDir&&) = delete;
  ~WorkDir() {
    if (!path_.empty()) remove_work_dir(path_);
  }
  const fs::path& path() const { return path_; }

 private:
  explicit WorkDir(fs::path p) : path_(std::move(p)) {}
  fs::path path_;
};

// An exclusive flock on <store>/lock, held while refs/ or blobs/ change (or on another lock file).
class StoreLock {
 public:
  static Result<StoreLock> acquire(const fs::path& store_root, std::string_view file = "lock") {
    fs::path p = store_root / file;
    UniqueFd fd(open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) return fail(ErrorKind::Internal, "cannot open {}: {}", p.string(), strerror(errno));
    while (flock(fd.get(), LOCK_EX) != 0) {
      if (errno != EINTR) return fail(ErrorKind::Internal, "cannot lock {}: {}", p.string(), strerror(errno));
    }
    return StoreLock(std::move(fd));
  }

 private:
  explicit StoreLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // closing it releases the lock
};

// Reads whatever a child wrote to its stderr file, trimmed and shortened for an error message.
std::string tail_of(const fs::path& p) {
  auto s = read_file(p);
  if (!s) return {};
  std::string t = *s;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  if (t.size() > 1500) t = "..." + t.substr(t.size() - 1500);
  return t;
}

struct StreamResult {
  std::string digest;
  uint64_t size = 0;
  Compression compression = Compression::None;
};

// Decompresses `tarball` (by its magic bytes), hashes the tar stream, checks each member's name and
// extracts it with `tar --numeric-owner -xp` into `dest`, all in one pass.
Result<StreamResult> hash_check_extract(const fs::path& tarball, const fs::path& dest, const fs::path& scratch) {
  UniqueFd file(open(tarball.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file) {
    return fail(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::InvalidInput, "cannot open {}: {}",
                tarball.string(), strerror(errno));
  }
  struct stat st {};
  if (fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return fail(ErrorKind::InvalidInput, "{} is not a regular file", tarball.string());
  }
  char head[8] = {};
  ssize_t got = pread(file.get(), head, sizeof head, 0);
  StreamResult res;
  res.compression = detect_compression(std::string_view(head, got > 0 ? static_cast<size_t>(got) : 0));

  fs::path decomp_err = scratch / "decompress.err", tar_err = scratch / "tar.err";
  UniqueFd source;
  ChildProcess decompressor;
  if (res.compression != Compression::None) {
    std::string tool(compression_name(res.compression));
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return fail(ErrorKind::Internal, "pipe: {}", strerror(errno));
    UniqueFd r(p[0]), w(p[1]);
    UniqueFd err(open(decomp_err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    SpawnOptions so;
    so.stdout_fd = w.get();
    so.stderr_fd = err.get();
    auto child = spawn_process({tool, "-dc", "--", tarball.string()}, so);
    if (!child) {
      return fail(ErrorKind::Unavailable, "{} is {}-compressed but '{}' is not installed: {}", tarball.string(), tool,
                  tool, child.error().message);
    }
    decompressor = std::move(*child);
    source = std::move(r);
  } else {
    source = std::move(file);
  }

  // tar reads from a socket, not a pipe, so that writing after tar has exited is EPIPE, never SIGPIPE.
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return fail(ErrorKind::Internal, "socketpair: {}", strerror(errno));
  }
  UniqueFd to_tar(sv[0]), tar_in(sv[1]);
  shutdown(to_tar.get(), SHUT_RD);
  UniqueFd terr(open(tar_err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  SpawnOptions so;
  so.stdin_fd = tar_in.get();
  so.stderr_fd = terr.get();
  auto tar = spawn_process({"tar", "--numeric-owner", "--same-owner", "-xpf", "-", "-C", dest.string()}, so);
  if (!tar) return std::unexpected(tar.error());
  tar_in.reset();
  terr.reset();

  Sha256 hash;
  TarChecker checker;
  bool tar_gone = false;
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = read(source.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(ErrorKind::Internal, "cannot read {}: {}", tarball.string(), strerror(errno));
    if (n == 0) break;
    std::string_view chunk(buf.data(), static_cast<size_t>(n));
    hash.update(chunk);
    res.size += chunk.size();
    if (auto c = checker.feed(chunk); !c) {
      return fail(c.error().kind, "{}: {}", tarball.string(), c.error().message);
    }
    while (!tar_gone && !chunk.empty()) {
      ssize_t w = send(to_tar.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        tar_gone = true;  // tar stopped reading (end of archive, or an error it reports below)
        break;
      }
      chunk.remove_prefix(static_cast<size_t>(w));
    }
  }
  to_tar.reset();
  if (decompressor.pid() > 0) {
    int ds = decompressor.wait();
    if (!(WIFEXITED(ds) && WEXITSTATUS(ds) == 0)) {
      return fail(ErrorKind::InvalidInput, "cannot decompress {} ({}): {}", tarball.string(),
                  compression_name(res.compression), tail_of(decomp_err));
    }
  }
  if (auto c = checker.finish(); !c) return fail(c.error().kind, "{}: {}", tarball.string(), c.error().message);
  int ts = tar->wait();
  if (!(WIFEXITED(ts) && WEXITSTATUS(ts) == 0)) {
    return fail(ErrorKind::InvalidInput, "cannot extract {}: tar {}: {}", tarball.string(), describe_wait_status(ts),
                tail_of(tar_err));
  }
  res.digest = hash.hex_digest();
  return res;
}

std::string_view strip_sha256(std::string_view s) {
  if (s.starts_with("sha256:")) s.remove_prefix(7);
  return s;
}

// mmdebstrap's "I: ..." lines, mapped to the steps a user cares about.
std::string_view build_step(std::string_view line) {
  struct M {
    std::string_view needle, step;
  };
  static constexpr M map[] = {
      {"running apt-get update", "resolving packages (apt-get update)"},
      {"downloading packages", "downloading packages"},
      {"extracting archives", "extracting packages"},
      {"installing essential packages", "installing essential packages"},
      {"installing remaining packages", "installing packages"},
      {"cleaning package lists", "cleaning apt caches"},
      {"creating tarball", "packing root file system"},
  };
  for (const auto& m : map) {
    if (line.find(m.needle) != std::string_view::npos) return m.step;
  }
  return {};
}

}  // namespace

Result<ImageStore> ImageStore::open(const fs::path& root) {
  for (const auto& d : {root, root / "blobs", root / "blobs" / "sha256", root / "refs"}) {
    if (auto st = make_dirs(d, 0755); !st) return std::unexpected(st.error());
  }
  // 0711: mmdebstrap's _apt download sandbox must traverse to its chroot; nobody may list work in progress.
  if (auto st = make_dirs(root / "tmp", 0711); !st) return std::unexpected(st.error());
  // Work directories of processes that died mid-build or mid-import.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root / "tmp", ec)) {
    std::string n = e.path().filename().string();
    auto dash = n.find('-');
    pid_t pid = 0;
    try {
      pid = static_cast<pid_t>(std::stoi(n.substr(0, dash)));
    } catch (...) {
      continue;
    }
    if (pid > 0 && (kill(pid, 0) == 0 || errno == EPERM)) continue;
    log::info("image: removing stale work directory {}", e.path().string());
    remove_work_dir(e.path());
  }
  return ImageStore(root);
}

fs::path ImageStore::blob_dir(std::string_view digest) const { return root_ / "blobs" / "sha256" / digest; }
fs::path ImageStore::rootfs_path(std::string_view digest) const { return blob_dir(digest) / "rootfs"; }
fs::path ImageStore::rootfs_path(const ImageInfo& info) const { return rootfs_path(info.digest); }

Result<ImageInfo> ImageStore::read_blob(const std::string& digest) const {
  auto text = read_file(blob_dir(digest) / "meta.json");
  if (!text) return fail(ErrorKind::NotFound, "image blob sha256:{} is missing from {}", digest, root_.string());
  try {
    auto j = Json::parse(*text);
    ImageInfo info;
    info.digest = j.at("digest").get<std::string>();
    info.size_bytes = j.value("size_bytes", uint64_t{0});
    info.source = j.value("source", std::string{});
    info.created_at = j.value("created_at", std::string{});
    return info;
  } catch (const std::exception& e) {
    return fail(ErrorKind::Internal, "corrupt {}: {}", (blob_dir(digest) / "meta.json").string(), e.what());
  }
}

Result<std::string> ImageStore::read_ref(const std::string& name) const {
  auto text = read_file(root_ / "refs" / name);
  if (!text) {
    if (text.error().kind == ErrorKind::NotFound) {
      return fail(ErrorKind::NotFound,
                  "no image named '{}'; see 'moat image ls' or build it with 'moat image build default'", name);
    }
    return std::unexpected(text.error());
  }
  std::string d = *text;
  while (!d.empty() && (d.back() == '\n' || d.back() == ' ')) d.pop_back();
  if (!is_hex_digest(d)) return fail(ErrorKind::Internal, "corrupt image ref {}", (root_ / "refs" / name).string());
  return d;
}

Status ImageStore::write_ref(const std::string& name, const std::string& digest) {
  // Written in tmp/ and renamed into refs/, so refs/ only ever holds complete refs.
  fs::path tmp = root_ / "tmp" / fmt::format("{}-ref-{}", getpid(), random_hex_id(6));
  if (auto st = write_file_atomic(tmp, digest + "\n", 0644); !st) return st;
  if (rename(tmp.c_str(), (root_ / "refs" / name).c_str()) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    return fail(ErrorKind::Internal, "cannot write image ref '{}': {}", name, strerror(e));
  }
  return {};
}

Result<ImageInfo> ImageStore::ingest(const std::string& name, const fs::path& tarball, const std::string& source,
                                     bool replace_existing, const ProgressFn& progress) {
  auto work = WorkDir::create(root_);
  if (!work) return std::unexpected(work.error());
  fs::path blob = work->path() / "blob";
  fs::path rootfs = blob / "rootfs";
  if (mkdir(blob.c_str(), 0755) != 0 || mkdir(rootfs.c_str(), 0755) != 0) {
    return fail(ErrorKind::Internal, "cannot create {}: {}", rootfs.string(), strerror(errno));
  }
  say(progress, "hashing and unpacking");
  auto started = std::chrono::steady_clock::now();
  auto sr = hash_check_extract(tarball, rootfs, work->path());
  if (!sr) return std::unexpected(sr.error());
  // The image root is "/" inside every sandbox; keep it world-traversable whatever the archive said,
  // so a sandbox's mapped root can read it through the idmapped mount.
  chmod(rootfs.c_str(), 0755);
  chmod(blob.c_str(), 0755);
  std::error_code ec;
  bool looks_like_root = fs::is_directory(rootfs / "usr", ec) || fs::exists(fs::symlink_status(rootfs / "bin", ec));
  if (!looks_like_root) {
    return fail(ErrorKind::InvalidInput,
                "{} does not look like a root file system (no /bin or /usr at the top of the archive); "
                "pack it from inside the root, e.g. 'tar -C rootdir -cf image.tar .'",
                tarball.string());
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  say(progress, fmt::format("unpacked {} ({}, {} in {:.1f} s) as sha256:{}", tarball.filename().string(),
                            compression_name(sr->compression), human_bytes(sr->size), ms.count() / 1000.0,
                            sr->digest.substr(0, 12)));

  Json meta = {{"digest", sr->digest},
               {"size_bytes", sr->size},
               {"source", source},
               {"created_at", now_rfc3339()}};
  if (auto st = write_file_atomic(blob / "meta.json", meta.dump(2) + "\n", 0644); !st) return std::unexpected(st.error());

  auto lock = StoreLock::acquire(root_);
  if (!lock) return std::unexpected(lock.error());
  std::string previous;
  if (auto prev = read_ref(name)) {
    previous = *prev;
    if (previous != sr->digest && !replace_existing) {
      return fail(ErrorKind::Conflict,
                  "image '{}' already exists with different content (sha256:{}); remove it with 'moat image rm {}' "
                  "or import under another name",
                  name, previous.substr(0, 12), name);
    }
  } else if (prev.error().kind != ErrorKind::NotFound) {
    return std::unexpected(prev.error());
  }
  fs::path target = blob_dir(sr->digest);
  if (fs::exists(target / "meta.json", ec)) {
    say(progress, fmt::format("content already stored as sha256:{}; sharing it", sr->digest.substr(0, 12)));
  } else {
    if (fs::exists(target, ec)) remove_work_dir(target);  // a half-removed blob (no meta.json): replace it
    if (rename(blob.c_str(), target.c_str()) != 0) {
      return fail(ErrorKind::Internal, "cannot store image blob {}: {}", target.string(), strerror(errno));
    }
  }
  if (previous != sr->digest) {
    if (auto st = write_ref(name, sr->digest); !st) return std::unexpected(st.error());
  }
  auto info = read_blob(sr->digest);
  if (!info) return info;
  info->name = name;
  if (!previous.empty() && previous != sr->digest) {
    info->replaced_digest = previous;
    say(progress, fmt::format("image '{}' now points at sha256:{} (was sha256:{})", name, sr->digest.substr(0, 12),
                              previous.substr(0, 12)));
  }
  say(progress, fmt::format("stored image '{}' sha256:{}", name, sr->digest));
  return info;
}

Result<ImageInfo> ImageStore::import_tarball(std::string name, const fs::path& tarball, const ProgressFn& progress) {
  if (auto st = validate_name("image", name); !st) return std::unexpected(st.error());
  std::error_code ec;
  fs::path abs = fs::absolute(tarball, ec);
  if (!fs::exists(abs, ec)) return fail(ErrorKind::NotFound, "no such file: {}", tarball.string());
  return ingest(name, abs, fmt::format("import {}", abs.string()), /*replace_existing=*/false, progress);
}

Result<ImageInfo> ImageStore::build_default(std::string name, const ProgressFn& progress) {
  if (auto st = validate_name("image", name); !st) return std::unexpected(st.error());
  if (geteuid() != 0) {
    return fail(ErrorKind::Unavailable, "building the default image needs root (mmdebstrap creates device nodes and "
                                        "chroots); run moatd as root");
  }
  if (auto p = find_program("mmdebstrap"); !p) {
    return fail(ErrorKind::Unavailable, "mmdebstrap is not installed; install it with 'apt-get install mmdebstrap' "
                                        "(scripts/install-deps does)");
  }
  auto work = WorkDir::create(root_);
  if (!work) return std::unexpected(work.error());
  fs::path out = work->path() / "debian.tar";
  say(progress, fmt::format("building Debian {} (minbase + {}) from {}", kDefaultSuite, kDefaultPackages,
                            kDefaultMirror));
  auto started = std::chrono::steady_clock::now();
  RunOptions ro;
  // mmdebstrap's chroot lives under our work dir, so a build killed half-way is cleaned up with it.
  ro.env_extra = {{"SOURCE_DATE_EPOCH", std::string(kSourceDateEpoch)}, {"TMPDIR", work->path().string()}};
  ro.timeout = std::chrono::minutes(20);
  std::string last_step;
  ro.on_stderr_line = [&](std::string_view line) {
    if (!line.starts_with("I: ")) {
      if (line.starts_with("W: ") || line.starts_with("E: ")) log::warn("mmdebstrap: {}", line);
      return;
    }
    auto step = build_step(line);
    if (!step.empty() && step != last_step) {
      last_step = std::string(step);
      say(progress, step);
    }
  };
  std::vector<std::string> argv = {"mmdebstrap",
                                   "--mode=root",
                                   "--format=tar",
                                   "--variant=minbase",
                                   fmt::format("--include={}", kDefaultPackages),
                                   std::string(kDefaultSuite),
                                   out.string(),
                                   std::string(kDefaultMirror)};
  auto r = run_process(argv, ro);
  if (!r) return std::unexpected(r.error());
  if (r->timed_out) return fail(ErrorKind::Unavailable, "mmdebstrap did not finish within 20 minutes");
  if (!r->ok()) {
    std::string err = r->err;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    if (err.size() > 1500) err = "..." + err.substr(err.size() - 1500);
    return fail(ErrorKind::Unavailable,
                "mmdebstrap failed ({}); check that {} is reachable: {}",
                r->signal ? fmt::format("signal {}", r->signal) : fmt::format("exit status {}", r->exit_code),
                kDefaultMirror, err);
  }
  auto secs = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  say(progress, fmt::format("mmdebstrap finished in {:.1f} s", secs.count() / 1000.0));
  return ingest(name, out,
                fmt::format("mmdebstrap {} --variant=minbase --include={} {}", kDefaultSuite, kDefaultPackages,
                            kDefaultMirror),
                /*replace_existing=*/true, progress);
}

Result<ImageInfo> ImageStore::ensure_default(std::string name, const ProgressFn& progress) {
  if (auto st = validate_name("image", name); !st) return std::unexpected(st.error());
  auto building = StoreLock::acquire(root_, "build.lock");
  if (!building) return std::unexpected(building.error());
  if (auto have = get(name)) {
    say(progress, fmt::format("image '{}' is already built (sha256:{})", name, have->digest.substr(0, 12)));
    return have;
  } else if (have.error().kind != ErrorKind::NotFound) {
    return have;
  }
  return build_default(std::move(name), progress);
}

Result<std::vector<ImageInfo>> ImageStore::list() const {
  std::vector<ImageInfo> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_ / "refs", ec)) {
    std::string name = e.path().filename().string();
    if (!validate_name("image", name)) continue;
    auto digest = read_ref(name);
    if (!digest) {
      if (digest.error().kind == ErrorKind::NotFound) continue;  // removed meanwhile
      return std::unexpected(digest.error());
    }
    auto info = read_blob(*digest);
    if (!info) return std::unexpected(info.error());
    info->name = name;
    out.push_back(std::move(*info));
  }
  if (ec) return fail(ErrorKind::Internal, "cannot list {}: {}", (root_ / "refs").string(), ec.message());
  std::sort(out.begin(), out.end(), [](const ImageInfo& a, const ImageInfo& b) { return a.name < b.name; });
  return out;
}

Result<ImageInfo> ImageStore::get(std::string_view query) const {
  std::string q(query);
  if (validate_name("image", q)) {
    auto digest = read_ref(q);
    if (digest) {
      auto info = read_blob(*digest);
      if (info) info->name = q;
      return info;
    }
    if (digest.error().kind != ErrorKind::NotFound) return std::unexpected(digest.error());
  }
  auto prefix = strip_sha256(query);
  bool hex = prefix.size() >= 4 && prefix.size() <= 64 && std::all_of(prefix.begin(), prefix.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
             });
  if (hex) {
    std::vector<std::string> matches;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root_ / "blobs" / "sha256", ec)) {
      std::string d = e.path().filename().string();
      if (is_hex_digest(d) && d.starts_with(prefix)) matches.push_back(d);
    }
    if (matches.size() > 1) {
      return fail(ErrorKind::InvalidInput, "digest prefix '{}' matches {} images; give more digits", query,
                  matches.size());
    }
    if (matches.size() == 1) {
      auto info = read_blob(matches[0]);
      if (!info) return info;
      // Name it after a ref that points at it, if any.
      if (auto all = list()) {
        for (const auto& i : *all) {
          if (i.digest == matches[0]) {
            info->name = i.name;
            break;
          }
        }
      }
      return info;
    }
  }
  return fail(ErrorKind::NotFound, "no image named '{}'; see 'moat image ls' or build it with 'moat image build default'",
              query);
}

Status ImageStore::remove(std::string_view name_in, const InUseFn& in_use) {
  std::string name(name_in);
  if (auto st = validate_name("image", name); !st) return st;
  auto lock = StoreLock::acquire(root_);
  if (!lock) return std::unexpected(lock.error());
  auto digest = read_ref(name);
  if (!digest) return std::unexpected(digest.error());
  bool other_ref = false;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_ / "refs", ec)) {
    std::string other = e.path().filename().string();
    if (other == name || !validate_name("image", other)) continue;
    if (auto d = read_ref(other); d && *d == *digest) other_ref = true;
  }
  // Another name keeps the blob alive, so dropping this one cannot pull an image from under a sandbox.
  if (!other_ref && in_use && in_use(*digest)) {
    return fail(ErrorKind::Conflict, "image '{}' is used by sandbox(es); remove them first", name);
  }
  if (unlink((root_ / "refs" / name).c_str()) != 0) {
    return fail(ErrorKind::Internal, "cannot remove image ref '{}': {}", name, strerror(errno));
  }
  if (!other_ref) {
    // Renamed away first so the blob disappears at once; the slow removal happens out of sight.
    fs::path doomed = root_ / "tmp" / fmt::format("{}-rm-{}", getpid(), random_hex_id(6));
    if (rename(blob_dir(*digest).c_str(), doomed.c_str()) != 0) {
      return fail(ErrorKind::Internal, "cannot remove image blob sha256:{}: {}", *digest, strerror(errno));
    }
    remove_work_dir(doomed);
  }
  return {};
}

Result<std::vector<std::string>> ImageStore::gc(const InUseFn& in_use) {
  auto lock = StoreLock::acquire(root_);
  if (!lock) return std::unexpected(lock.error());
  std::set<std::string> referenced;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_ / "refs", ec)) {
    std::string n = e.path().filename().string();
    if (!validate_name("image", n)) continue;
    if (auto d = read_ref(n)) referenced.insert(*d);
  }
  std::vector<std::string> candidates, removed;
  for (const auto& e : fs::directory_iterator(root_ / "blobs" / "sha256", ec)) {
    std::string d = e.path().filename().string();
    if (is_hex_digest(d) && !referenced.contains(d)) candidates.push_back(d);
  }
  for (const auto& d : candidates) {
    if (in_use && in_use(d)) continue;
    fs::path doomed = root_ / "tmp" / fmt::format("{}-rm-{}", getpid(), random_hex_id(6));
    if (rename(blob_dir(d).c_str(), doomed.c_str()) != 0) continue;
    remove_work_dir(doomed);
    removed.push_back(d);
  }
  return removed;
}

}  // namespace moat::image

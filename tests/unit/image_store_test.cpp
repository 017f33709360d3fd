// ImageStore against real tarballs, real tar and real compressors; the Debian build is opt-in
// (MOAT_TEST_DEBIAN=1) because it needs the network and about a minute.
#include "image/image_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "image/tar_check.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;
using moat::ErrorKind;
using moat::image::ImageInfo;
using moat::image::ImageStore;
using moat::testing::TempDir;

namespace {

// A ustar archive built by hand, so tests can hold members no well-behaved tar would write.
struct Member {
  std::string name;
  std::string data;
  char type = '0';
  std::string link;
};

std::string octal(uint64_t v, size_t width) {
  std::string s = fmt::format("{:0{}o}", v, width - 1);
  s.push_back('\0');
  return s;
}

std::string ustar(const std::vector<Member>& members) {
  std::string out;
  for (const auto& m : members) {
    std::string h(512, '\0');
    h.replace(0, std::min<size_t>(m.name.size(), 100), m.name.substr(0, 100));
    h.replace(100, 8, octal(m.type == '5' ? 0755 : 0644, 8));
    h.replace(108, 8, octal(0, 8));
    h.replace(116, 8, octal(0, 8));
    h.replace(124, 12, octal(m.data.size(), 12));
    h.replace(136, 12, octal(1700000000, 12));
    h[156] = m.type;
    h.replace(157, std::min<size_t>(m.link.size(), 100), m.link.substr(0, 100));
    h.replace(257, 6, std::string("ustar\0", 6));
    h.replace(263, 2, "00");
    h.replace(148, 8, "        ");
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    h.replace(148, 8, octal(sum, 7) + " ");
    out += h;
    out += m.data;
    out.append((512 - m.data.size() % 512) % 512, '\0');
  }
  out.append(1024, '\0');
  return out;
}

void write(const fs::path& p, std::string_view data) {
  std::ofstream f(p, std::ios::binary);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

size_t entries(const fs::path& dir) {
  size_t n = 0;
  std::error_code ec;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir, ec)) ++n;
  return n;
}

// Nothing half-created: no blob, no ref, no work directory.
void expect_store_empty(const fs::path& store) {
  EXPECT_EQ(entries(store / "blobs" / "sha256"), 0u);
  EXPECT_EQ(entries(store / "refs"), 0u);
  EXPECT_EQ(entries(store / "tmp"), 0u);
}

class ImageStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MOAT_REQUIRE_ROOT();
    gz_ = dir_ / "busybox.tar.gz";
    moat::testing::make_busybox_tarball(gz_);
    auto store = ImageStore::open(dir_ / "images");
    ASSERT_TRUE(store) << store.error().message;
    store_.emplace(std::move(*store));
  }
  ImageStore& store() { return *store_; }

  TempDir dir_{"moat-image"};
  fs::path gz_;
  std::optional<ImageStore> store_;
};

TEST_F(ImageStoreTest, PlainGzipAndZstdOfTheSameContentShareOneBlob) {
  fs::path plain = dir_ / "busybox.tar", zst = dir_ / "busybox.tar.zst", disguised = dir_ / "busybox.img";
  ASSERT_TRUE(moat::run_checked({"sh", "-c", fmt::format("gzip -dc {} > {}", gz_.string(), plain.string())}));
  ASSERT_TRUE(moat::run_checked({"zstd", "-q", "-f", plain.string(), "-o", zst.string()}));
  fs::copy_file(zst, disguised);  // detected by magic bytes, not by the name

  auto a = store().import_tarball("bb-gz", gz_);
  ASSERT_TRUE(a) << a.error().message;
  std::vector<std::string> lines;
  auto b = store().import_tarball("bb-tar", plain, [&](std::string_view l) { lines.emplace_back(l); });
  ASSERT_TRUE(b) << b.error().message;
  auto c = store().import_tarball("bb-zst", disguised);
  ASSERT_TRUE(c) << c.error().message;

  EXPECT_EQ(a->digest.size(), 64u);
  EXPECT_EQ(a->digest, b->digest);
  EXPECT_EQ(a->digest, c->digest);
  auto sha = moat::sha256_file_hex(plain);
  ASSERT_TRUE(sha);
  EXPECT_EQ(a->digest, *sha) << "digest is the SHA-256 of the uncompressed tar stream";
  EXPECT_EQ(a->size_bytes, fs::file_size(plain));
  EXPECT_EQ(entries(dir_ / "images" / "blobs" / "sha256"), 1u);
  EXPECT_FALSE(lines.empty());

  fs::path rootfs = store().rootfs_path(*a);
  EXPECT_TRUE(fs::is_regular_file(rootfs / "bin" / "busybox"));
  EXPECT_TRUE(fs::is_symlink(rootfs / "bin" / "sh"));
  struct stat st {};
  ASSERT_EQ(stat(rootfs.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(stat(rootfs.parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(stat((rootfs / "tmp").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u) << "tar -p keeps modes";
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(entries(dir_ / "images" / "tmp"), 0u);
}

TEST_F(ImageStoreTest, ListGetAndRemove) {
  auto a = store().import_tarball("one", gz_);
  ASSERT_TRUE(a) << a.error().message;
  ASSERT_TRUE(store().import_tarball("two", gz_));

  auto all = store().list();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "one");
  EXPECT_EQ((*all)[1].name, "two");
  EXPECT_EQ((*all)[0].digest, (*all)[1].digest);
  EXPECT_FALSE((*all)[0].created_at.empty());
  EXPECT_NE((*all)[0].source.find("busybox.tar.gz"), std::string::npos);

  auto by_name = store().get("two");
  ASSERT_TRUE(by_name);
  EXPECT_EQ(by_name->name, "two");
  auto by_prefix = store().get(a->digest.substr(0, 10));
  ASSERT_TRUE(by_prefix) << by_prefix.error().message;
  EXPECT_EQ(by_prefix->digest, a->digest);
  ASSERT_TRUE(store().get("sha256:" + a->digest));

  auto missing = store().get("nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().kind, ErrorKind::NotFound);
  EXPECT_EQ(missing.error().message,
            "no image named 'nope'; see 'moat image ls' or build it with 'moat image build default'");
  EXPECT_EQ(store().get("Bad/Name").error().kind, ErrorKind::NotFound);

  auto used = [](const std::string&) { return true; };
  auto unused = [](const std::string&) { return false; };
  // Another name still holds the blob, so dropping "one" is harmless even while a sandbox uses it.
  ASSERT_TRUE(store().remove("one", used));
  EXPECT_TRUE(fs::exists(store().rootfs_path(*a) / "bin" / "busybox"));
  // The last name: refused while in use, and nothing changes.
  auto refused = store().remove("two", used);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind, ErrorKind::Conflict);
  EXPECT_EQ(refused.error().message, "image 'two' is used by sandbox(es); remove them first");
  EXPECT_TRUE(store().get("two"));
  ASSERT_TRUE(store().remove("two", unused));
  EXPECT_FALSE(fs::exists(store().rootfs_path(*a)));
  expect_store_empty(dir_ / "images");
  EXPECT_EQ(store().remove("two", unused).error().kind, ErrorKind::NotFound);
  EXPECT_EQ(store().list()->size(), 0u);
}

TEST_F(ImageStoreTest, ImportIntoAnExistingNameNeedsTheSameContent) {
  ASSERT_TRUE(store().import_tarball("img", gz_));
  auto again = store().import_tarball("img", gz_);
  ASSERT_TRUE(again) << again.error().message;

  TempDir other("moat-image-other");
  moat::testing::make_busybox_rootfs(other.path());
  write(other / "etc/extra", "different\n");
  fs::path other_tar = dir_ / "other.tar";
  ASSERT_TRUE(moat::run_checked({"tar", "-C", other.path().string(), "-cf", other_tar.string(), "."}));
  auto conflict = store().import_tarball("img", other_tar);
  ASSERT_FALSE(conflict);
  EXPECT_EQ(conflict.error().kind, ErrorKind::Conflict);
  EXPECT_EQ(store().get("img")->digest, again->digest);
  EXPECT_EQ(entries(dir_ / "images" / "blobs" / "sha256"), 1u);
  EXPECT_EQ(entries(dir_ / "images" / "tmp"), 0u);

  auto gced = store().gc([](const std::string&) { return false; });
  ASSERT_TRUE(gced);
  EXPECT_TRUE(gced->empty()) << "a referenced blob is never collected";
}

TEST_F(ImageStoreTest, BadTarballsLeaveNothingBehind) {
  fs::path store_dir = dir_ / "images";
  auto expect_rejected = [&](const fs::path& p, std::string_view needle) {
    auto r = store().import_tarball("bad", p);
    ASSERT_FALSE(r) << p;
    EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput) << r.error().message;
    EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
    expect_store_empty(store_dir);
  };

  write(dir_ / "text.tar", "this is not a tar archive, just some text that is long enough to fill a header. " +
                               std::string(600, 'x'));
  expect_rejected(dir_ / "text.tar", "not a tar archive");
  ASSERT_TRUE(moat::run_checked({"sh", "-c", fmt::format("gzip -c {0}/text.tar > {0}/text.tar.gz", dir_.path().string())}));
  expect_rejected(dir_ / "text.tar.gz", "not a tar archive");
  write(dir_ / "empty.tar", "");
  expect_rejected(dir_ / "empty.tar", "not a tar archive");
  write(dir_ / "corrupt.tar.gz", "\x1f\x8b garbage");
  expect_rejected(dir_ / "corrupt.tar.gz", "decompress");

  write(dir_ / "noroot.tar", ustar({{"etc/", "", '5'}, {"etc/hosts", "127.0.0.1 localhost\n"}}));
  expect_rejected(dir_ / "noroot.tar", "does not look like a root file system");

  // Path traversal, absolute names and hard links out of the tree; none may touch anything outside.
  fs::path victim = dir_ / "images" / "tmp" / "escaped";
  write(dir_ / "dotdot.tar", ustar({{"bin/", "", '5'}, {"../escaped", "pwned\n"}}));
  expect_rejected(dir_ / "dotdot.tar", "contains '..'");
  write(dir_ / "dotdot2.tar", ustar({{"usr/", "", '5'}, {"usr/../../../escaped", "pwned\n"}}));
  expect_rejected(dir_ / "dotdot2.tar", "contains '..'");
  write(dir_ / "abs.tar", ustar({{"bin/", "", '5'}, {"/tmp/moat-escaped-abs", "pwned\n"}}));
  expect_rejected(dir_ / "abs.tar", "absolute path");
  write(dir_ / "hardlink.tar", ustar({{"bin/", "", '5'}, {"bin/passwd", "", '1', "../../../../etc/passwd"}}));
  expect_rejected(dir_ / "hardlink.tar", "hard link");
  // A pax header may rename the next member; the check must follow it.
  std::string rec = "path=../pax-escaped\n";
  std::string pax = fmt::format("{} {}", rec.size() + 3, rec);
  write(dir_ / "pax.tar", ustar({{"bin/", "", '5'}, {"PaxHeader", pax, 'x'}, {"harmless", "pwned\n"}}));
  expect_rejected(dir_ / "pax.tar", "contains '..'");
  EXPECT_FALSE(fs::exists(victim));
  EXPECT_FALSE(fs::exists(dir_ / "images" / "escaped"));
  EXPECT_FALSE(fs::exists("/tmp/moat-escaped-abs"));

  auto missing = store().import_tarball("bad", dir_ / "does-not-exist.tar");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().kind, ErrorKind::NotFound);
  auto bad_name = store().import_tarball("Bad Name", gz_);
  ASSERT_FALSE(bad_name);
  EXPECT_EQ(bad_name.error().kind, ErrorKind::InvalidInput);
  expect_store_empty(store_dir);
}

TEST_F(ImageStoreTest, HandBuiltTarWithRootIsAccepted) {
  // The same hand-built writer with a harmless archive passes, so the rejections above are about content.
  write(dir_ / "tiny.tar", ustar({{"bin/", "", '5'}, {"bin/hello", "#!/bin/sh\necho hi\n"}, {"usr/", "", '5'},
                                  {"bin/hi", "", '1', "bin/hello"}, {"bin/link", "", '2', "/bin/hello"}}));
  auto r = store().import_tarball("tiny", dir_ / "tiny.tar");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(fs::is_regular_file(store().rootfs_path(*r) / "bin" / "hi"));
  EXPECT_EQ(fs::read_symlink(store().rootfs_path(*r) / "bin" / "link"), "/bin/hello");
}

TEST_F(ImageStoreTest, OpenRemovesWorkLeftByDeadProcesses) {
  fs::path stale = dir_ / "images" / "tmp" / "999999999-deadbeef";
  fs::create_directories(stale / "blob" / "rootfs");
  fs::path live = dir_ / "images" / "tmp" / fmt::format("{}-alive", getpid());
  fs::create_directories(live);
  auto again = ImageStore::open(dir_ / "images");
  ASSERT_TRUE(again);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
}

TEST(TarChecker, DetectsCompressionByMagic) {
  using moat::image::Compression;
  using moat::image::detect_compression;
  EXPECT_EQ(detect_compression("\x1f\x8b\x08"), Compression::Gzip);
  EXPECT_EQ(detect_compression("\x28\xb5\x2f\xfd"), Compression::Zstd);
  EXPECT_EQ(detect_compression(std::string_view("\xfd" "7zXZ\0", 6)), Compression::Xz);
  EXPECT_EQ(detect_compression("BZh9"), Compression::Bzip2);
  EXPECT_EQ(detect_compression("./bin"), Compression::None);
}

TEST(TarChecker, FedByteByByte) {
  std::string tar = ustar({{"bin/", "", '5'}, {"bin/x", std::string(1000, 'a')}, {"usr/../../x", "b"}});
  moat::image::TarChecker c;
  moat::Status st;
  for (char ch : tar) {
    st = c.feed(std::string_view(&ch, 1));
    if (!st) break;
  }
  ASSERT_FALSE(st);
  EXPECT_EQ(c.members(), 3u);
}

// The real default image. Opt-in: needs the network and about a minute.
//   MOAT_TEST_DEBIAN=1 ctest -R Debian
// It builds into a fresh store (timing build_default), then makes sure the shared test cache
// (/var/cache/moat-test/images, or $MOAT_TEST_IMAGE_CACHE) holds "default" so later tests can reuse it with
// ImageStore::open(cache)->ensure_default("default").
TEST(ImageStoreDebian, BuildsTheDefaultImage) {
  MOAT_REQUIRE_ROOT();
  const char* opt = getenv("MOAT_TEST_DEBIAN");
  if (!opt || std::string_view(opt) != "1") GTEST_SKIP() << "set MOAT_TEST_DEBIAN=1 to build the Debian image (~70 s)";
  TempDir dir("moat-image-debian");
  auto store = ImageStore::open(dir / "images");
  ASSERT_TRUE(store);
  std::vector<std::string> lines;
  auto t0 = std::chrono::steady_clock::now();
  auto info = store->build_default("default", [&](std::string_view l) {
    lines.emplace_back(l);
    fmt::print("  progress: {}\n", l);
  });
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(info) << info.error().message;
  fmt::print("  built sha256:{} ({} bytes) in {:.1f} s\n", info->digest, info->size_bytes, secs);
  RecordProperty("build_seconds", static_cast<int>(secs));
  EXPECT_GE(lines.size(), 5u);

  fs::path root = store->rootfs_path(*info);
  for (auto p : {"usr/bin/bash", "usr/bin/python3", "usr/bin/curl", "usr/bin/git", "usr/bin/apt-get",
                 "etc/ssl/certs/ca-certificates.crt", "etc/apt/sources.list"}) {
    EXPECT_TRUE(fs::exists(root / p)) << p;
  }
  auto sources = moat::read_file(root / "etc/apt/sources.list");
  ASSERT_TRUE(sources);
  EXPECT_NE(sources->find("deb.debian.org"), std::string::npos) << *sources;

  // Rebuilding moves the name and reports what it pointed at before (possibly the same digest).
  const char* cache_env = getenv("MOAT_TEST_IMAGE_CACHE");
  fs::path cache = cache_env ? cache_env : "/var/cache/moat-test/images";
  auto shared = ImageStore::open(cache);
  ASSERT_TRUE(shared) << shared.error().message;
  auto cached = shared->ensure_default("default");
  ASSERT_TRUE(cached) << cached.error().message;
  EXPECT_TRUE(fs::exists(shared->rootfs_path(*cached) / "usr/bin/python3"));
}

}  // namespace

// The attachment staging area (store/attachment_stage.h): files stream in within the per-file and
// total caps, nothing half-written survives, reads cannot leave the area, and old files are pruned.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "store/attachment_stage.h"
#include "support/temp_dir.h"

using namespace moat;
namespace fs = std::filesystem;

namespace {

std::unique_ptr<AttachmentStage> open_stage(const fs::path& root, AttachmentLimits limits = {}) {
  auto s = AttachmentStage::open(root, limits);
  EXPECT_TRUE(s) << (s ? "" : s.error().message);
  return s ? std::move(*s) : nullptr;
}

Result<std::string> stage_bytes(AttachmentStage& st, std::string_view name, std::string_view data) {
  auto w = st.begin("telegram", name);
  if (!w) return std::unexpected(w.error());
  for (size_t i = 0; i < data.size(); i += 1000)
    if (auto s = w->write(data.substr(i, 1000)); !s) return std::unexpected(s.error());
  return w->commit();
}

size_t files_under(const fs::path& root) {
  size_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) ++n;
  return n;
}

}  // namespace

TEST(AttachmentStage, AFileStreamsInAndReadsBackUnderAPrivateArea) {
  moat::testing::TempDir dir("moat-stage");
  auto st = open_stage(dir / "attachments");
  std::string data(5000, 'x');
  auto rel = stage_bytes(*st, "../../etc/My Report (final).pdf", data);
  ASSERT_TRUE(rel) << rel.error().message;
  EXPECT_TRUE(rel->starts_with("telegram/")) << *rel;
  EXPECT_TRUE(rel->ends_with("-My_Report__final_.pdf")) << *rel;
  EXPECT_EQ(st->read(*rel).value(), data);
  EXPECT_EQ(st->used_bytes(), 5000u);
  struct stat s {};
  ASSERT_EQ(::stat((dir / "attachments").c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir / "attachments" / *rel).c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 0777, 0600u);
}

TEST(AttachmentStage, OverThePerFileCapIsRefusedAndLeavesNothing) {
  moat::testing::TempDir dir("moat-stage");
  auto st = open_stage(dir / "attachments", {.max_file = 4096});
  auto declared = st->begin("discord", "big.bin", 5000);
  ASSERT_FALSE(declared);
  EXPECT_EQ(declared.error().kind, ErrorKind::ResourceLimit);
  auto streamed = stage_bytes(*st, "big.bin", std::string(5000, 'y'));
  ASSERT_FALSE(streamed);
  EXPECT_EQ(streamed.error().kind, ErrorKind::ResourceLimit);
  EXPECT_EQ(files_under(dir / "attachments"), 0u);
  EXPECT_EQ(st->used_bytes(), 0u);
  {
    auto w = st->begin("discord", "abandoned.txt");
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->write("half"));
  }  // never committed
  EXPECT_EQ(files_under(dir / "attachments"), 0u);
  EXPECT_EQ(st->used_bytes(), 0u);
}

TEST(AttachmentStage, TheAreaIsCappedAndPruningOldFilesMakesRoom) {
  moat::testing::TempDir dir("moat-stage");
  auto st = open_stage(dir / "attachments", {.max_file = 1 << 20, .max_total = 2 << 20, .keep = std::chrono::hours(1)});
  auto a = stage_bytes(*st, "a", std::string(1 << 20, 'a'));
  auto b = stage_bytes(*st, "b", std::string(1 << 20, 'b'));
  ASSERT_TRUE(a && b);
  auto c = stage_bytes(*st, "c", std::string(1000, 'c'));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().kind, ErrorKind::ResourceLimit);
  EXPECT_NE(c.error().message.find("full"), std::string::npos) << c.error().message;
  // `a` is two hours old: the next write prunes it and fits.
  struct timeval old[2] = {{::time(nullptr) - 7200, 0}, {::time(nullptr) - 7200, 0}};
  ASSERT_EQ(::utimes((dir / "attachments" / *a).c_str(), old), 0);
  auto d = stage_bytes(*st, "d", std::string(1000, 'd'));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(st->read(*a).error().kind, ErrorKind::NotFound);
  EXPECT_TRUE(st->read(*b));
  // Reopened, the area counts what it holds and drops what a crash left half-written.
  std::ofstream(dir / "attachments" / "telegram" / ".tmp-deadbeef") << "half";
  st.reset();
  st = open_stage(dir / "attachments", {.max_file = 1 << 20, .max_total = 2 << 20});
  EXPECT_EQ(st->used_bytes(), (1u << 20) + 1000u);
  EXPECT_FALSE(fs::exists(dir / "attachments" / "telegram" / ".tmp-deadbeef"));
}

TEST(AttachmentStage, ReadsCannotLeaveTheArea) {
  moat::testing::TempDir dir("moat-stage");
  auto st = open_stage(dir / "attachments");
  std::ofstream(dir / "secret.txt") << "host secret";
  fs::create_directory(dir / "attachments" / "telegram");
  fs::create_symlink(dir / "secret.txt", dir / "attachments" / "telegram" / "abc-link.txt");
  fs::create_directory_symlink(dir.path(), dir / "attachments" / "linkdir");
  for (std::string_view bad : {"../secret.txt", "/etc/passwd", "telegram/../../secret.txt", "telegram/abc-link.txt",
                               "linkdir/secret.txt", "telegram/.tmp-x", "telegram", "", "a/b/c"}) {
    auto r = st->read(bad);
    ASSERT_FALSE(r) << bad << " was read";
    EXPECT_NE(r.error().kind, ErrorKind::Internal) << bad << ": " << r.error().message;
  }
}

TEST(AttachmentStage, SafeNamesAreSafe) {
  EXPECT_EQ(AttachmentStage::safe_name("photo.jpg"), "photo.jpg");
  EXPECT_EQ(AttachmentStage::safe_name("..."), "file");
  EXPECT_EQ(AttachmentStage::safe_name(".bashrc"), "bashrc");
  EXPECT_EQ(AttachmentStage::safe_name("a/b\\c d$(x)"), "c_d__x_");
  EXPECT_EQ(AttachmentStage::safe_name(""), "file");
  EXPECT_EQ(AttachmentStage::safe_name(std::string(300, 'z')).size(), 80u);
}

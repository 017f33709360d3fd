// The vault key file: made 0600 with O_EXCL, and refused — with the path and the fix — when anything
// about it could mean someone else can read or replace it.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "base/fs.h"
#include "support/temp_dir.h"
#include "vault/private_file.h"
#include "vault/secret_box.h"

using namespace moat;
using namespace moat::vault;
using moat::testing::TempDir;

namespace {

mode_t mode_of(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(lstat(p.c_str(), &st), 0);
  return st.st_mode & 07777;
}

}  // namespace

TEST(VaultKeyFile, CreatedWith0600And32RandomBytes) {
  TempDir dir("moat-vault-key");
  auto path = dir / "vault.key";
  mode_t old = umask(0);  // a permissive umask must not widen the key's mode
  auto k = create_key_file(path);
  umask(old);
  ASSERT_TRUE(k) << k.error().message;
  EXPECT_EQ(mode_of(path), 0600);
  auto bytes = read_file(path);
  ASSERT_TRUE(bytes);
  EXPECT_EQ(bytes->size(), 32u);
  EXPECT_EQ(std::memcmp(bytes->data(), k->data(), 32), 0);
  EXPECT_NE(*bytes, std::string(32, '\0'));
  // No temporary left behind.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);

  auto again = load_key_file(path);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(std::memcmp(again->data(), k->data(), 32), 0);
}

TEST(VaultKeyFile, NeverOverwritesAnExistingKey) {
  TempDir dir("moat-vault-key");
  auto path = dir / "vault.key";
  ASSERT_TRUE(create_key_file(path));
  auto before = read_file(path).value();
  auto second = create_key_file(path);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().kind, ErrorKind::Conflict);
  EXPECT_EQ(read_file(path).value(), before);
}

TEST(VaultKeyFile, ReadableByOthersIsRefusedNamingPathAndFix) {
  TempDir dir("moat-vault-key");
  auto path = dir / "vault.key";
  ASSERT_TRUE(create_key_file(path));
  for (mode_t m : {0644, 0640, 0604, 0620, 0602}) {
    ASSERT_EQ(chmod(path.c_str(), m), 0);
    auto k = load_key_file(path);
    ASSERT_FALSE(k) << std::oct << m;
    EXPECT_EQ(k.error().kind, ErrorKind::InvalidInput);
    EXPECT_NE(k.error().message.find(path.string()), std::string::npos) << k.error().message;
    EXPECT_NE(k.error().message.find("chmod 600"), std::string::npos) << k.error().message;
  }
  ASSERT_EQ(chmod(path.c_str(), 0400), 0);
  EXPECT_TRUE(load_key_file(path));
}

TEST(VaultKeyFile, SymlinkDirectoryFifoWrongOwnerAndWrongSizeAreRefused) {
  TempDir dir("moat-vault-key");
  auto real = dir / "real.key";
  ASSERT_TRUE(create_key_file(real));

  auto link = dir / "link.key";
  std::filesystem::create_symlink(real, link);
  auto k = load_key_file(link);
  ASSERT_FALSE(k);
  EXPECT_NE(k.error().message.find("symbolic link"), std::string::npos) << k.error().message;

  auto d = dir / "dir.key";
  ASSERT_EQ(mkdir(d.c_str(), 0700), 0);
  k = load_key_file(d);
  ASSERT_FALSE(k);
  EXPECT_NE(k.error().message.find("directory"), std::string::npos) << k.error().message;

  auto fifo = dir / "fifo.key";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  k = load_key_file(fifo);  // must not hang
  ASSERT_FALSE(k);
  EXPECT_NE(k.error().message.find("FIFO"), std::string::npos) << k.error().message;

  if (geteuid() == 0) {
    ASSERT_EQ(chown(real.c_str(), 65534, 65534), 0);
    k = load_key_file(real);
    ASSERT_FALSE(k);
    EXPECT_NE(k.error().message.find("owned by uid 65534"), std::string::npos) << k.error().message;
    EXPECT_NE(k.error().message.find("chown"), std::string::npos) << k.error().message;
  }

  for (size_t size : {0, 16, 33}) {
    auto p = dir / fmt::format("size{}.key", size);
    ASSERT_TRUE(create_private_file(p, std::string(size, 'k'), "test key"));
    k = load_key_file(p);
    ASSERT_FALSE(k) << size;
    EXPECT_NE(k.error().message.find("not a moat vault key"), std::string::npos) << k.error().message;
  }

  k = load_key_file(dir / "absent.key");
  ASSERT_FALSE(k);
  EXPECT_EQ(k.error().kind, ErrorKind::NotFound);
}

TEST(VaultSecretBox, SealOpenAndTamper) {
  auto key = SecretKey::generate().value();
  auto other = SecretKey::generate().value();
  auto a = seal(key, "hello");
  auto b = seal(key, "hello");
  EXPECT_NE(a.nonce, b.nonce);  // a fresh nonce every time
  EXPECT_NE(a.ciphertext, b.ciphertext);
  EXPECT_EQ(a.ciphertext.find("hello"), std::string::npos);
  auto opened = open_sealed(key, a.nonce, a.ciphertext);
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->view(), "hello");

  EXPECT_FALSE(open_sealed(other, a.nonce, a.ciphertext));
  for (size_t i = 0; i < a.ciphertext.size(); ++i) {
    auto c = a.ciphertext;
    c[i] ^= 1;
    EXPECT_FALSE(open_sealed(key, a.nonce, c)) << i;
  }
  auto n = a.nonce;
  n[0] ^= 1;
  EXPECT_FALSE(open_sealed(key, n, a.ciphertext));
  EXPECT_FALSE(open_sealed(key, a.nonce, a.ciphertext.substr(0, 10)));
  EXPECT_FALSE(open_sealed(key, "", a.ciphertext));
}

TEST(VaultSecretValue, MovesAndClones) {
  SecretValue v("abc");
  SecretValue w = std::move(v);
  EXPECT_TRUE(v.empty());
  EXPECT_EQ(w.view(), "abc");
  auto c = w.clone();
  EXPECT_EQ(c.view(), "abc");
  w = SecretValue("xy");
  EXPECT_EQ(w.view(), "xy");
}

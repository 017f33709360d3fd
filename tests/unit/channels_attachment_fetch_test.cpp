// channels/attachment_fetch: an attachment is streamed from a real local HTTP server into a real
// staging area; one over the cap, a 404, or an unreachable server becomes "unavailable" with a
// reason that never quotes the download path (Telegram's carries the bot token), and leaves no file.
#include "channels/attachment_fetch.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "net/http_server.h"
#include "support/temp_dir.h"

using namespace moat;
using namespace moat::channels;
namespace fs = std::filesystem;

namespace {

constexpr const char* kSecretPath = "/file/bot123456:SECRET-TOKEN/documents/file_7.pdf";

struct Fixture {
  moat::testing::TempDir dir{"moat-fetch"};
  std::unique_ptr<AttachmentStage> stage;
  net::HttpServer server{net::ServerOptions{.port = 0}};
  net::HttpClient client;
  std::string body = std::string(300'000, 'p');
  Fixture() {
    stage = std::move(*AttachmentStage::open(dir / "attachments", {.max_file = 512 << 10}));
    server.add_route("/", [this](const net::ServerRequest& r) {
      if (r.path == kSecretPath) return net::ServerResponse::text(200, "application/pdf", body);
      if (r.path == "/big") return net::ServerResponse::text(200, "application/octet-stream", std::string(600 << 10, 'b'));
      return net::ServerResponse::error(404, "not found");
    });
    EXPECT_TRUE(server.start());
  }
  AttachmentSource source(std::string target) { return {*net::parse_url(server.base_url()), std::move(target), {}}; }
  size_t files() {
    size_t n = 0;
    for (auto& e : fs::recursive_directory_iterator(dir / "attachments"))
      if (e.is_regular_file()) ++n;
    return n;
  }
};

router::Attachment meta(std::string name, uint64_t size = 0) {
  return router::Attachment{.name = std::move(name), .mime = "application/pdf", .url = "telegram:file_7", .size = size};
}

}  // namespace

TEST(AttachmentFetch, AFileIsStreamedIntoTheStagingArea) {
  Fixture f;
  auto a = fetch_attachment(f.client, f.stage.get(), "telegram", meta("report.pdf"), f.source(kSecretPath));
  ASSERT_TRUE(a.unavailable.empty()) << a.unavailable;
  ASSERT_FALSE(a.staged.empty());
  EXPECT_EQ(a.size, f.body.size());
  EXPECT_EQ(f.stage->read(a.staged).value(), f.body);
  EXPECT_EQ(a.url, "telegram:file_7");
}

TEST(AttachmentFetch, WhatCannotBeStagedIsUnavailableWithAReasonAndNoTrace) {
  Fixture f;
  // Declared too large: not even requested.
  auto declared = fetch_attachment(f.client, f.stage.get(), "telegram", meta("huge.pdf", 10 << 20), f.source(kSecretPath));
  EXPECT_NE(declared.unavailable.find("over the 512.0 KiB limit"), std::string::npos) << declared.unavailable;
  // Larger than declared (or undeclared): stopped at the cap.
  auto big = fetch_attachment(f.client, f.stage.get(), "telegram", meta("big.bin"), f.source("/big"));
  EXPECT_NE(big.unavailable.find("limit"), std::string::npos) << big.unavailable;
  auto missing = fetch_attachment(f.client, f.stage.get(), "telegram", meta("gone.pdf"),
                                  f.source("/file/bot123456:SECRET-TOKEN/gone"));
  EXPECT_NE(missing.unavailable.find("answered 404"), std::string::npos) << missing.unavailable;
  auto port = f.server.port();
  f.server.stop();
  auto down = fetch_attachment(f.client, f.stage.get(), "telegram", meta("x.pdf"),
                               {*net::parse_url(fmt::format("http://127.0.0.1:{}", port)), kSecretPath, {}},
                               std::chrono::seconds(5));
  EXPECT_NE(down.unavailable.find("download failed"), std::string::npos) << down.unavailable;
  auto none = fetch_attachment(f.client, nullptr, "telegram", meta("x.pdf"), f.source(kSecretPath));
  EXPECT_FALSE(none.unavailable.empty());
  for (const auto* a : {&declared, &big, &missing, &down, &none}) {
    EXPECT_TRUE(a->staged.empty());
    EXPECT_EQ(a->unavailable.find("SECRET-TOKEN"), std::string::npos) << a->unavailable;
  }
  EXPECT_EQ(f.files(), 0u);
  EXPECT_EQ(f.stage->used_bytes(), 0u);
}

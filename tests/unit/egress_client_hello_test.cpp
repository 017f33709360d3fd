#include "egress/client_hello.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>

#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "base/unique_fd.h"

using namespace moat;
using namespace moat::egress;

namespace {

using Bytes = std::vector<uint8_t>;

HelloInfo parse(const Bytes& b) { return parse_client_hello(std::span<const uint8_t>(b)); }
HelloInfo parse(std::string_view s) {
  return parse_client_hello(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

// A real ClientHello: OpenSSL's client writes it into one end of a socketpair; we read it off the other.
Bytes capture_hello(const char* sni, std::function<void(SSL_CTX*, SSL*)> tweak = {}) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!ctx) return {};
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return {};
  UniqueFd client(fds[0]), server(fds[1]);
  fcntl(client.get(), F_SETFL, O_NONBLOCK);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  SSL_set_fd(ssl.get(), client.get());
  if (sni) SSL_set_tlsext_host_name(ssl.get(), sni);
  if (tweak) tweak(ctx.get(), ssl.get());
  int r = SSL_connect(ssl.get());  // writes the hello, then wants the server's answer
  EXPECT_EQ(r, -1);
  EXPECT_EQ(SSL_get_error(ssl.get(), r), SSL_ERROR_WANT_READ);
  Bytes out;
  uint8_t buf[4096];
  pollfd p{server.get(), POLLIN, 0};
  while (poll(&p, 1, 100) == 1) {
    ssize_t n = read(server.get(), buf, sizeof buf);
    if (n <= 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  return out;
}

void put16(Bytes& b, size_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}
void put24(Bytes& b, size_t v) {
  b.push_back(static_cast<uint8_t>(v >> 16));
  put16(b, v);
}

Bytes sni_ext(std::vector<std::pair<uint8_t, std::string>> names) {
  Bytes list;
  for (auto& [type, name] : names) {
    list.push_back(type);
    put16(list, name.size());
    list.insert(list.end(), name.begin(), name.end());
  }
  Bytes ext;
  put16(ext, list.size());
  ext.insert(ext.end(), list.begin(), list.end());
  return ext;
}

struct HelloSpec {
  uint16_t version = 0x0303;
  size_t session_id = 32;
  size_t suites = 4;
  size_t compression = 1;
  bool extensions = true;
  std::vector<std::pair<uint16_t, Bytes>> exts;
  Bytes after_extensions;  // junk inside the message
};

// The handshake message (type + length + body).
Bytes hello_message(const HelloSpec& s) {
  Bytes body;
  put16(body, s.version);
  body.insert(body.end(), 32, 0xab);
  body.push_back(static_cast<uint8_t>(s.session_id));
  body.insert(body.end(), s.session_id, 0x11);
  put16(body, s.suites);
  for (size_t i = 0; i < s.suites; ++i) body.push_back(static_cast<uint8_t>(0x13 + i));
  body.push_back(static_cast<uint8_t>(s.compression));
  body.insert(body.end(), s.compression, 0);
  if (s.extensions) {
    Bytes exts;
    for (auto& [type, data] : s.exts) {
      put16(exts, type);
      put16(exts, data.size());
      exts.insert(exts.end(), data.begin(), data.end());
    }
    put16(body, exts.size());
    body.insert(body.end(), exts.begin(), exts.end());
  }
  body.insert(body.end(), s.after_extensions.begin(), s.after_extensions.end());
  Bytes msg = {1};
  put24(msg, body.size());
  msg.insert(msg.end(), body.begin(), body.end());
  return msg;
}

// Frames a handshake byte stream into records of the given sizes (the last one takes the rest).
Bytes records(const Bytes& hs, std::vector<size_t> sizes = {}, uint16_t version = 0x0301) {
  Bytes out;
  size_t off = 0, i = 0;
  while (off < hs.size()) {
    size_t n = i < sizes.size() ? std::min(sizes[i], hs.size() - off) : hs.size() - off;
    ++i;
    out.push_back(22);
    put16(out, version);
    put16(out, n);
    out.insert(out.end(), hs.begin() + off, hs.begin() + off + n);
    off += n;
  }
  return out;
}

Bytes with_sni(std::string name) {
  HelloSpec s;
  s.exts = {{0x000a, {0, 2, 0, 0x1d}}, {0, sni_ext({{0, name}})}, {0x002b, {2, 3, 4}}};
  return records(hello_message(s));
}

// The handshake bytes inside a single-record hello as OpenSSL sends it.
Bytes handshake_of(const Bytes& one_record) { return Bytes(one_record.begin() + 5, one_record.end()); }

}  // namespace

TEST(ClientHello, RealOpenSslHelloCarriesTheSni) {
  auto hello = capture_hello("API.Example.COM");
  ASSERT_GT(hello.size(), 100u);
  auto info = parse(hello);
  EXPECT_EQ(info.status, HelloStatus::Tls) << hello_status_name(info.status);
  EXPECT_EQ(info.sni, "api.example.com");
}

TEST(ClientHello, RealTls12HelloAndHelloWithoutSni) {
  auto tls12 = capture_hello("legacy.example.org", [](SSL_CTX*, SSL* ssl) { SSL_set_max_proto_version(ssl, TLS1_2_VERSION); });
  auto a = parse(tls12);
  EXPECT_EQ(a.status, HelloStatus::Tls);
  EXPECT_EQ(a.sni, "legacy.example.org");
  auto none = capture_hello(nullptr);
  auto b = parse(none);
  EXPECT_EQ(b.status, HelloStatus::Tls);
  EXPECT_EQ(b.sni, "");
  // A big hello: padding and many ALPN protocols, still one record.
  auto big = capture_hello("big.example.net", [](SSL_CTX*, SSL* ssl) {
    std::string alpn;
    for (int i = 0; i < 100; ++i) {
      std::string p = "proto-" + std::to_string(i);
      alpn.push_back(static_cast<char>(p.size()));
      alpn += p;
    }
    SSL_set_alpn_protos(ssl, reinterpret_cast<const unsigned char*>(alpn.data()), alpn.size());
  });
  auto c = parse(big);
  EXPECT_EQ(c.status, HelloStatus::Tls);
  EXPECT_EQ(c.sni, "big.example.net");
}

TEST(ClientHello, EveryPrefixOfARealHelloNeedsMore) {
  auto hello = capture_hello("prefix.example.com");
  ASSERT_FALSE(hello.empty());
  for (size_t n = 0; n < hello.size(); ++n) {
    auto info = parse_client_hello(std::span<const uint8_t>(hello.data(), n));
    ASSERT_EQ(info.status, HelloStatus::NeedMore) << "prefix " << n << " of " << hello.size();
  }
  Bytes more = hello;
  more.insert(more.end(), {23, 3, 3, 0, 5, 1, 2, 3, 4, 5});  // whatever follows is not judged
  EXPECT_EQ(parse(more).status, HelloStatus::Tls);
}

TEST(ClientHello, HelloSplitAcrossRecordsIsReassembled) {
  auto real = capture_hello("split.example.com");
  ASSERT_FALSE(real.empty());
  auto hs = handshake_of(real);
  for (std::vector<size_t> sizes : std::vector<std::vector<size_t>>{{1}, {3}, {4}, {40}, {100, 1, 1, 7}, {hs.size() - 1}}) {
    auto split = records(hs, sizes);
    auto info = parse(split);
    EXPECT_EQ(info.status, HelloStatus::Tls) << sizes[0];
    EXPECT_EQ(info.sni, "split.example.com");
    for (size_t n = 0; n < split.size(); ++n)
      ASSERT_EQ(parse_client_hello(std::span<const uint8_t>(split.data(), n)).status, HelloStatus::NeedMore) << n;
  }
  // Record by record, one byte each: 6x the size, still within the cap for a real hello.
  std::vector<size_t> ones(hs.size(), 1);
  auto tiny = records(hs, ones);
  if (tiny.size() <= kClientHelloMaxBytes) {
    EXPECT_EQ(parse(tiny).sni, "split.example.com");
  }
}

TEST(ClientHello, NotTls) {
  EXPECT_EQ(parse("GET / HTTP/1.1\r\n").status, HelloStatus::NotTls);
  EXPECT_EQ(parse("SSH-2.0-OpenSSH_9.2\r\n").status, HelloStatus::NotTls);
  EXPECT_EQ(parse(Bytes{0x80, 0x2e, 0x01}).status, HelloStatus::NotTls);  // SSLv2-style hello
  EXPECT_EQ(parse(Bytes{23, 3, 3, 0, 1, 0}).status, HelloStatus::NotTls);  // application data first
  EXPECT_EQ(parse(Bytes{}).status, HelloStatus::NeedMore);
  EXPECT_EQ(parse(Bytes{22}).status, HelloStatus::NeedMore);
  EXPECT_EQ(parse(Bytes{22, 3}).status, HelloStatus::NeedMore);
}

TEST(ClientHello, RecordLayerErrorsAreMalformed) {
  EXPECT_EQ(parse(Bytes{22, 2}).status, HelloStatus::Malformed);
  EXPECT_EQ(parse(Bytes{22, 3, 5}).status, HelloStatus::Malformed);
  EXPECT_EQ(parse(Bytes{22, 3, 1, 0, 0}).status, HelloStatus::Malformed);        // empty record
  EXPECT_EQ(parse(Bytes{22, 3, 1, 0x40, 0x01}).status, HelloStatus::Malformed);  // > 2^14
  EXPECT_EQ(parse(Bytes{22, 3, 1, 0x40, 0x00}).status, HelloStatus::NeedMore);   // exactly 2^14: wait
  EXPECT_EQ(parse(Bytes{22, 3, 1, 0, 4, 2}).status, HelloStatus::Malformed);     // ServerHello, seen early
  EXPECT_EQ(parse(Bytes{22, 3, 1, 0, 4, 1, 0x01, 0x00, 0x00}).status, HelloStatus::Malformed);  // > 16 KiB body
  EXPECT_EQ(parse(records(hello_message({}), {}, 0x0300)).status, HelloStatus::Tls);  // SSL 3.0 record version
  // A non-handshake record in the middle of a split hello.
  auto hs = hello_message({});
  auto first = records(Bytes(hs.begin(), hs.begin() + 10));
  Bytes mixed = first;
  mixed.insert(mixed.end(), {21, 3, 3, 0, 2, 2, 40});
  EXPECT_EQ(parse(mixed).status, HelloStatus::Malformed);
}

TEST(ClientHello, TooManyTinyRecordsAreMalformedBeforeTheCap) {
  HelloSpec s;
  s.exts = {{0x0015, Bytes(8000, 0)}, {0, sni_ext({{0, "pad.example.com"}})}};  // padding
  auto hs = hello_message(s);
  std::vector<size_t> ones(hs.size(), 1);
  auto tiny = records(hs, ones);
  ASSERT_GT(tiny.size(), kClientHelloMaxBytes);
  EXPECT_EQ(parse(tiny).status, HelloStatus::Malformed);
  EXPECT_EQ(parse_client_hello(std::span<const uint8_t>(tiny.data(), kClientHelloMaxBytes)).status, HelloStatus::Malformed);
  EXPECT_EQ(parse(records(hs)).sni, "pad.example.com");
}

TEST(ClientHello, HandcraftedHellos) {
  EXPECT_EQ(parse(with_sni("Mixed.Case.Example")).sni, "mixed.case.example");
  EXPECT_EQ(parse(with_sni("trailing.dot.")).sni, "trailing.dot");
  EXPECT_EQ(parse(with_sni("under_score-1.example")).status, HelloStatus::Tls);
  HelloSpec no_ext;
  no_ext.extensions = false;
  auto a = parse(records(hello_message(no_ext)));
  EXPECT_EQ(a.status, HelloStatus::Tls);
  EXPECT_EQ(a.sni, "");
  HelloSpec empty_ext;  // an empty extension block
  EXPECT_EQ(parse(records(hello_message(empty_ext))).status, HelloStatus::Tls);
  HelloSpec no_session;
  no_session.session_id = 0;
  EXPECT_EQ(parse(records(hello_message(no_session))).status, HelloStatus::Tls);
}

TEST(ClientHello, MalformedHellos) {
  auto malformed = [](const HelloSpec& s) { return parse(records(hello_message(s))).status == HelloStatus::Malformed; };
  HelloSpec s;
  s.session_id = 33;
  EXPECT_TRUE(malformed(s));
  s = {};
  s.suites = 3;
  EXPECT_TRUE(malformed(s));
  s = {};
  s.suites = 0;
  EXPECT_TRUE(malformed(s));
  s = {};
  s.compression = 0;
  EXPECT_TRUE(malformed(s));
  s = {};
  s.version = 0x0203;
  EXPECT_TRUE(malformed(s));
  s = {};
  s.exts = {{0, sni_ext({{0, "a.example"}})}, {0, sni_ext({{0, "b.example"}})}};  // two server_name extensions
  EXPECT_TRUE(malformed(s));
  s = {};
  s.exts = {{0x000a, {0, 0}}, {0x000a, {0, 0}}};  // any duplicate extension
  EXPECT_TRUE(malformed(s));
  s = {};
  s.exts = {{0, sni_ext({{0, "a.example"}, {0, "b.example"}})}};  // two names in one list
  EXPECT_TRUE(malformed(s));
  s = {};
  s.exts = {{0, sni_ext({{1, "a.example"}})}};  // not a host_name
  EXPECT_TRUE(malformed(s));
  s = {};
  s.exts = {{0, sni_ext({{0, ""}})}};
  EXPECT_TRUE(malformed(s));
  s = {};
  s.exts = {{0, sni_ext({{0, std::string("good.example\0evil.example", 25)}})}};
  EXPECT_TRUE(malformed(s));
  s = {};
  s.exts = {{0, sni_ext({{0, "sp ace.example"}})}};
  EXPECT_TRUE(malformed(s));
  s = {};
  s.exts = {{0, sni_ext({{0, std::string(256, 'a')}})}};
  EXPECT_TRUE(malformed(s));
  s = {};
  s.exts = {{0, sni_ext({{0, "\xc3\xa4.example"}})}};
  EXPECT_TRUE(malformed(s));
  s = {};
  s.exts = {{0, {}}};  // empty server_name (what a server echoes, never a client)
  EXPECT_TRUE(malformed(s));
  s = {};
  s.exts = {{0, {0, 5, 0, 0, 9, 'a', 'b'}}};  // name length beyond the extension
  EXPECT_TRUE(malformed(s));
  s = {};
  s.after_extensions = {0, 0};  // junk after the extension block
  EXPECT_TRUE(malformed(s));
  // Extension length running past the message.
  HelloSpec ok;
  ok.exts = {{0x0010, {0, 3, 2, 'h', '2'}}};
  auto hs = hello_message(ok);
  hs[hs.size() - 6] = 0x7f;  // the ALPN extension's length
  EXPECT_EQ(parse(records(hs)).status, HelloStatus::Malformed);
  // Message length shorter than what its fields claim.
  auto short_msg = hello_message(HelloSpec{});
  short_msg[3] = 20;
  EXPECT_EQ(parse(records(short_msg)).status, HelloStatus::Malformed);
}

TEST(ClientHello, RandomCorruptionNeverCrashes) {
  auto real = capture_hello("fuzz.example.com");
  ASSERT_FALSE(real.empty());
  std::mt19937 rng(1234);
  int counts[4] = {};
  for (int i = 0; i < 20000; ++i) {
    Bytes b = real;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    if (rng() % 4 == 0) b.resize(rng() % b.size());
    auto info = parse(b);
    ++counts[static_cast<int>(info.status)];
    if (info.status == HelloStatus::Tls) {
      for (char c : info.sni)
        ASSERT_TRUE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.') << info.sni;
    }
  }
  EXPECT_GT(counts[static_cast<int>(HelloStatus::Tls)], 0);
  EXPECT_GT(counts[static_cast<int>(HelloStatus::Malformed)], 0);
  // Pure noise behind a plausible record header.
  for (int i = 0; i < 20000; ++i) {
    Bytes b = {22, 3, 1};
    size_t n = rng() % 600;
    put16(b, n);
    b.push_back(1);
    for (size_t j = 1; j < n + rng() % 8; ++j) b.push_back(static_cast<uint8_t>(rng() % 3 == 0 ? 0 : rng()));
    parse(b);
  }
}

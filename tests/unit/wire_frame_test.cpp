#include "wire/frame.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>
#include <random>

#include "base/unique_fd.h"
#include "wire/messages.h"

using namespace moat;
using namespace moat::wire;

namespace {

std::string header(uint32_t n, uint8_t type) {
  std::string h(5, '\0');
  h[0] = static_cast<char>(n >> 24);
  h[1] = static_cast<char>(n >> 16);
  h[2] = static_cast<char>(n >> 8);
  h[3] = static_cast<char>(n);
  h[4] = static_cast<char>(type);
  return h;
}

}  // namespace

TEST(Frame, EncodesLengthTypeAndPayload) {
  auto f = encode_frame(FrameType::Stdout, "abc");
  EXPECT_EQ(f, header(4, 7) + "abc");
  EXPECT_EQ(encode_frame(FrameType::StdinEof), header(1, 6));
}

TEST(Frame, RoundTripsBinaryPayloads) {
  std::string bin;
  for (int i = 0; i < 70000; ++i) bin.push_back(static_cast<char>(i * 7));
  FrameDecoder d;
  d.feed(encode_frame(FrameType::FileData, bin) + encode_frame(FrameType::FileEnd) +
         encode_frame(FrameType::Stderr, std::string("a\0b", 3)));
  auto a = d.next();
  ASSERT_TRUE(a && *a);
  EXPECT_EQ((*a)->type, FrameType::FileData);
  EXPECT_EQ((*a)->payload, bin);
  auto b = d.next();
  ASSERT_TRUE(b && *b);
  EXPECT_EQ((*b)->type, FrameType::FileEnd);
  EXPECT_TRUE((*b)->payload.empty());
  auto c = d.next();
  ASSERT_TRUE(c && *c);
  EXPECT_EQ((*c)->payload, std::string("a\0b", 3));
  auto none = d.next();
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(Frame, DecodesWhenFedOneByteAtATime) {
  std::string stream;
  for (int i = 0; i < 20; ++i) stream += encode_frame(i % 2 ? FrameType::Stdout : FrameType::Stderr, std::string(i * 13, 'x'));
  FrameDecoder d;
  int frames = 0;
  for (char c : stream) {
    d.feed(std::string_view(&c, 1));
    for (;;) {
      auto f = d.next();
      ASSERT_TRUE(f) << f.error().message;
      if (!*f) break;
      EXPECT_EQ((*f)->payload.size(), static_cast<size_t>(frames * 13));
      EXPECT_EQ((*f)->type, frames % 2 ? FrameType::Stdout : FrameType::Stderr);
      ++frames;
    }
  }
  EXPECT_EQ(frames, 20);
}

TEST(Frame, AcceptsTheLargestFrameAndRejectsOneByteMore) {
  FrameDecoder ok;
  ok.feed(encode_frame(FrameType::FileData, std::string(kMaxPayload, 'z')));
  auto f = ok.next();
  ASSERT_TRUE(f && *f);
  EXPECT_EQ((*f)->payload.size(), kMaxPayload);

  FrameDecoder big;
  big.feed(header(kMaxFrame + 1, 7));
  auto e = big.next();
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().kind, ErrorKind::InvalidInput);
  EXPECT_NE(e.error().message.find("exceeds"), std::string::npos);
  // Stays failed; further bytes are not buffered.
  big.feed(std::string(1000, 'x'));
  EXPECT_FALSE(big.next());
  EXPECT_EQ(big.buffered(), 0u);
}

TEST(Frame, RejectsZeroLengthAndUnknownTypes) {
  FrameDecoder zero;
  zero.feed(header(0, 7));
  auto z = zero.next();
  ASSERT_FALSE(z);
  EXPECT_NE(z.error().message.find("zero-length"), std::string::npos);

  for (uint8_t t : {uint8_t{0}, uint8_t{kLastFrameType + 1}, uint8_t{200}, uint8_t{255}}) {
    FrameDecoder d;
    d.feed(header(1, t));
    auto r = d.next();
    ASSERT_FALSE(r) << int(t);
    EXPECT_NE(r.error().message.find("unknown frame type"), std::string::npos);
  }
  EXPECT_FALSE(is_known_frame_type(0));
  EXPECT_TRUE(is_known_frame_type(static_cast<uint8_t>(FrameType::HealthOk)));
  EXPECT_EQ(frame_type_name(FrameType::ExecStart), "ExecStart");
  EXPECT_EQ(frame_type_name(static_cast<FrameType>(99)), "unknown(99)");
}

TEST(Frame, SurvivesRandomGarbage) {
  std::mt19937 rng(42);
  for (int round = 0; round < 2000; ++round) {
    FrameDecoder d;
    std::string junk(rng() % 64, '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    // Small lengths sometimes, so valid-looking frames occur too.
    if (junk.size() >= 4 && round % 3 == 0) junk[0] = junk[1] = junk[2] = 0;
    d.feed(junk);
    for (int i = 0; i < 100; ++i) {
      auto f = d.next();
      if (!f || !*f) break;
    }
  }
}

TEST(Frame, WritesAndReadsOverASocket) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  ASSERT_TRUE(write_frame(a.get(), FrameType::Hello, encode(HelloMsg{kProtocolVersion, "test"})));
  auto f = read_frame(b.get());
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_EQ(f->type, FrameType::Hello);
  auto h = decode<HelloMsg>(f->payload);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->version, kProtocolVersion);
  EXPECT_EQ(h->agent, "test");

  auto too_big = write_frame(a.get(), FrameType::Stdout, std::string(kMaxPayload + 1, 'x'));
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error().kind, ErrorKind::InvalidInput);

  // A truncated frame then EOF: "connection closed", kind Unavailable.
  std::string partial = encode_frame(FrameType::Stdout, "hello").substr(0, 7);
  ASSERT_TRUE(write_all(a.get(), partial));
  a.reset();
  auto cut = read_frame(b.get());
  ASSERT_FALSE(cut);
  EXPECT_EQ(cut.error().kind, ErrorKind::Unavailable);
  EXPECT_NE(cut.error().message.find("connection closed"), std::string::npos);
  auto eof = read_frame(b.get());
  ASSERT_FALSE(eof);
  EXPECT_EQ(eof.error().message, "connection closed");
}

TEST(Frame, ReadFrameRejectsHostileHeaders) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  ASSERT_TRUE(write_all(a.get(), header(0xffffffffu, 7)));
  auto f = read_frame(b.get());
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().kind, ErrorKind::InvalidInput);
}

TEST(Messages, ExecStartRoundTripsWithDefaults) {
  ExecStart e;
  e.argv = {"sh", "-c", "echo hi"};
  e.env = {"A=1"};
  e.cwd = "/tmp";
  e.uid = 1000;
  e.gid = 1001;
  e.tty = true;
  e.rows = 50;
  e.cols = 132;
  e.timeout_ms = 1234;
  auto d = decode<ExecStart>(encode(e));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->argv, e.argv);
  EXPECT_EQ(d->env, e.env);
  EXPECT_EQ(d->cwd, "/tmp");
  EXPECT_EQ(d->uid, 1000u);
  EXPECT_EQ(d->gid, 1001u);
  EXPECT_TRUE(d->tty);
  EXPECT_EQ(d->rows, 50);
  EXPECT_EQ(d->cols, 132);
  EXPECT_EQ(d->timeout_ms, 1234u);

  auto minimal = decode<ExecStart>(R"({"argv":["true"]})");
  ASSERT_TRUE(minimal) << minimal.error().message;
  EXPECT_EQ(minimal->cwd, "/");
  EXPECT_EQ(minimal->rows, 24);
  EXPECT_EQ(minimal->cols, 80);
  EXPECT_FALSE(minimal->tty);
}

TEST(Messages, OtherMessagesRoundTrip) {
  auto x = decode<ExecExit>(encode(ExecExit{-1, 9, true, 77}));
  ASSERT_TRUE(x);
  EXPECT_EQ(x->exit_code, -1);
  EXPECT_EQ(x->signal, 9);
  EXPECT_TRUE(x->timed_out);
  EXPECT_EQ(x->duration_ms, 77u);
  auto r = decode<Resize>(encode(Resize{40, 100}));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->rows, 40);
  EXPECT_EQ(r->cols, 100);
  auto s = decode<SignalMsg>(encode(SignalMsg{15}));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->signal, 15);
  auto p = decode<FilePut>(encode(FilePut{"/a/b", 0755, 1, 2, 99}));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->path, "/a/b");
  EXPECT_EQ(p->mode, 0755u);
  EXPECT_EQ(p->uid, 1u);
  EXPECT_EQ(p->gid, 2u);
  EXPECT_EQ(p->size, 99u);
  auto g = decode<FileGet>(encode(FileGet{"/etc/hostname"}));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->path, "/etc/hostname");
  auto i = decode<FileInfo>(encode(FileInfo{5, 0600}));
  ASSERT_TRUE(i);
  EXPECT_EQ(i->size, 5u);
  EXPECT_EQ(i->mode, 0600u);
  auto e = decode<ErrorMsg>(encode(ErrorMsg{"boom"}));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->message, "boom");
  auto h = decode<HealthInfo>(encode(HealthInfo{10, 3}));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->uptime_ms, 10u);
  EXPECT_EQ(h->processes, 3u);
}

TEST(Messages, MalformedJsonIsRejectedWithAMessage) {
  struct Case {
    const char* payload;
    const char* expect;
  };
  for (auto c : {Case{"", "not valid JSON"}, Case{"{", "not valid JSON"}, Case{"[1,2]", "must be a JSON object"},
                 Case{"{}", "field 'argv' is missing"}, Case{R"({"argv":"ls"})", "field 'argv' must be an array of strings"},
                 Case{R"({"argv":[]})", "field 'argv' must not be empty"},
                 Case{R"({"argv":["ls",1]})", "field 'argv' must be an array of strings"},
                 Case{R"({"argv":["ls"],"uid":-1})", "field 'uid' must be a non-negative integer"},
                 Case{R"({"argv":["ls"],"uid":1.5})", "field 'uid' must be a non-negative integer"},
                 Case{R"({"argv":["ls"],"rows":70000})", "field 'rows' is out of range"},
                 Case{R"({"argv":["ls"],"tty":"yes"})", "field 'tty' must be true or false"},
                 Case{R"({"argv":["ls"],"cwd":5})", "field 'cwd' must be a string"}}) {
    auto r = decode<ExecStart>(c.payload);
    ASSERT_FALSE(r) << c.payload;
    EXPECT_EQ(r.error().kind, ErrorKind::InvalidInput);
    EXPECT_NE(r.error().message.find(c.expect), std::string::npos) << c.payload << " -> " << r.error().message;
  }
  EXPECT_FALSE(decode<SignalMsg>(R"({"signal":0})"));
  EXPECT_FALSE(decode<SignalMsg>(R"({"signal":99999999999999999999})"));
  EXPECT_FALSE(decode<Resize>(R"({"rows":1})"));
  EXPECT_FALSE(decode<FilePut>(R"({"path":"/x"})"));
  EXPECT_FALSE(decode<FilePut>(R"({"path":"/x","size":1,"mode":65535})"));
  EXPECT_FALSE(decode<HelloMsg>(R"({"agent":"x"})"));
  EXPECT_FALSE(decode<ExecExit>(R"({"exit_code":"0"})"));
  // Unknown fields are ignored (forward compatibility).
  EXPECT_TRUE(decode<FileGet>(R"({"path":"/x","future":true})"));
}

TEST(Messages, NeverThrowOnBadUtf8) {
  ExecStart e;
  e.argv = {std::string("\xff\xfe", 2)};
  std::string enc;
  EXPECT_NO_THROW(enc = encode(e));
  EXPECT_TRUE(decode<ExecStart>(enc));
  EXPECT_FALSE(decode<ExecStart>(std::string(R"({"argv":[")") + "\xff" + R"("]})"));
  EXPECT_TRUE(is_valid_utf8("héllo ✓ 😀"));
  EXPECT_FALSE(is_valid_utf8("\xff"));
  EXPECT_FALSE(is_valid_utf8("\xc3"));
  EXPECT_FALSE(is_valid_utf8("\xc0\x80"));
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));
}

TEST(Frame, ZeroCopyPrepareCommitAndViews) {
  std::string stream;
  for (int i = 0; i < 50; ++i) stream += encode_frame(FrameType::Stdout, std::string(1000 + i * 3000, static_cast<char>('a' + i % 26)));
  FrameDecoder d;
  size_t off = 0;
  int frames = 0;
  while (off < stream.size()) {
    size_t n = std::min<size_t>(7777, stream.size() - off);
    memcpy(d.prepare(n), stream.data() + off, n);
    d.commit(n);
    off += n;
    for (;;) {
      auto v = d.next_view();
      ASSERT_TRUE(v) << v.error().message;
      if (!*v) break;
      EXPECT_EQ((*v)->payload.size(), static_cast<size_t>(1000 + frames * 3000));
      EXPECT_EQ((*v)->payload.front(), static_cast<char>('a' + frames % 26));
      ++frames;
    }
    // Never more than one partial frame plus one read is held.
    EXPECT_LE(d.buffered(), kFrameHeader + 1000 + 49 * 3000 + 7777);
  }
  EXPECT_EQ(frames, 50);
  EXPECT_EQ(d.buffered(), 0u);
}

// Invariant 5 under kill -9: a child process runs a Router over a store file, accepting a fixed
// sequence of messages and answering each deterministically; the parent SIGKILLs it at random
// moments and restarts it, ten times, then lets it finish. Every message must then be answered
// exactly once (in the store and at the channel) and each chat's answers must arrive in order.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "router_test_util.h"

using namespace moat;
using namespace moat::router;
using namespace moat::router::test;

namespace {

constexpr int kMessages = 600;
constexpr int kChats = 6;

// Appends each delivered message to a file (O_APPEND + fsync) and drops a key it already holds, as a
// channel that stores messages itself must (see Channel::deliver).
class FileChannel : public Channel {
 public:
  explicit FileChannel(std::string path) : path_(std::move(path)) {
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) keys_.insert(line.substr(0, line.find('\t')));
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  }
  ~FileChannel() override { ::close(fd_); }
  std::string_view name() const override { return "file"; }
  DeliveryResult deliver(const Outbound& m) override {
    if (keys_.contains(m.key)) return Delivered{};
    std::string line = m.key + "\t" + m.chat + "\t" + m.text + "\n";
    if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()) || ::fsync(fd_) != 0)
      return delivery_failed(Error{ErrorKind::Unavailable, "cannot write the channel file"});
    keys_.insert(m.key);
    return Delivered{};
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::set<std::string> keys_;
};

// The child: never returns.
[[noreturn]] void child_main(const std::filesystem::path& db_path, const std::string& channel_file) {
  auto db = Database::open(db_path);
  if (!db) _exit(10);
  AuditLog audit(*db);
  FileChannel ch(channel_file);
  Router r(*db, audit, RouterOptions{.max_concurrent_turns = 3, .retry_base = std::chrono::milliseconds(10), .max_batch = 4});
  RouteRule rule;
  rule.agent = "echo";
  r.set_rules({rule});
  r.add_channel(ch);
  r.set_turn_runner([](const Turn& t, const LiveSink&) -> Result<TurnResult> {
    std::this_thread::sleep_for(std::chrono::milliseconds(3));  // widen the window for a kill mid-turn
    TurnResult res;
    for (const auto& e : t.envelopes) res.replies.push_back("echo:" + e.text);
    return res;
  });
  if (!r.start()) _exit(11);
  // Each life starts the sequence again: what was accepted before comes back as Duplicate.
  // One accepting thread per chat, so that group commits carry several envelopes and each chat's
  // messages are accepted in order.
  std::vector<std::thread> feeders;
  for (int c = 0; c < kChats; ++c)
    feeders.emplace_back([&r, c] {
      for (int i = c; i < kMessages; i += kChats) {
        auto a = r.accept(msg(fmt::format("c{}", c), fmt::format("m{}", i), fmt::format("t{}", i), "u", "file"));
        if (!a) _exit(12);
        // New messages are paced, so that a life lasts long enough for the kill to land mid-work on a
        // fast disk too; repeats from an earlier life are not.
        if (a->outcome != Acceptance::Outcome::Duplicate) std::this_thread::sleep_for(std::chrono::milliseconds(6));
      }
    });
  for (auto& t : feeders) t.join();
  for (;;) {
    auto answered = db->query_int64("SELECT count(*) FROM envelopes WHERE state = 'answered'");
    if (answered && *answered == kMessages && r.stats().undelivered == 0) _exit(0);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

pid_t spawn(const std::filesystem::path& db, const std::string& file) {
  pid_t pid = fork();
  if (pid == 0) child_main(db, file);
  return pid;
}

}  // namespace

TEST(RouterCrash, KillNineNeverLosesOrRepeatsAnAnswer) {
  moat::testing::TempDir dir("moat-router-crash");
  auto db_path = dir / "moat.db";
  std::string file = (dir / "channel.txt").string();
  {  // create the store before any child, so no two processes race to migrate it
    auto db = Database::open(db_path);
    ASSERT_TRUE(db) << db.error().message;
  }
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> delay_ms(50, 300);
  int killed_mid_work = 0;
  for (int round = 0; round < 10; ++round) {
    pid_t pid = spawn(db_path, file);
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    // A child that finished before the kill is fine too; one that failed is not.
    if (WIFEXITED(status)) {
      ASSERT_EQ(WEXITSTATUS(status), 0) << "round " << round;
    }
    auto db = Database::open(db_path);
    ASSERT_TRUE(db);
    int64_t accepted = *db->query_int64("SELECT count(*) FROM envelopes");
    int64_t answered = *db->query_int64("SELECT count(*) FROM envelopes WHERE state = 'answered'");
    if (answered < kMessages) ++killed_mid_work;
    std::fprintf(stderr, "round %d: killed after %d accepted, %d answered\n", round, int(accepted), int(answered));
  }
  EXPECT_GE(killed_mid_work, 3) << "the kills should land while the router is busy";
  pid_t pid = spawn(db_path, file);
  int status = 0;
  for (int waited = 0; waited < 40'000; waited += 10) {  // 40 s at most
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "the last child did not finish its messages in 40 s";
  }
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);

  // The store: every message answered, each answer committed to the outbox once, all delivered.
  auto db = Database::open(db_path);
  ASSERT_TRUE(db);
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM envelopes"), kMessages);
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM envelopes WHERE state = 'answered'"), kMessages);
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM outbox"), kMessages);
  EXPECT_EQ(*db->query_int64("SELECT count(DISTINCT text) FROM outbox"), kMessages);
  EXPECT_EQ(*db->query_int64("SELECT count(*) FROM outbox WHERE delivered_at_ms = 0"), 0);

  // The channel: each answer exactly once, and in order within each chat.
  std::ifstream in(file);
  std::string line;
  std::map<std::string, int> last;  // chat -> last message number seen
  std::set<std::string> keys, texts;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    std::istringstream ls(line);
    std::string key, chat, text;
    std::getline(ls, key, '\t');
    std::getline(ls, chat, '\t');
    std::getline(ls, text);
    EXPECT_TRUE(keys.insert(key).second) << "key delivered twice: " << key;
    EXPECT_TRUE(texts.insert(text).second) << "answer delivered twice: " << text;
    ASSERT_TRUE(text.starts_with("echo:t")) << text;
    int n = std::stoi(text.substr(6));
    EXPECT_EQ(chat, fmt::format("c{}", n % kChats));
    if (last.contains(chat)) {
      EXPECT_GT(n, last[chat]) << "out of order in " << chat;
    }
    last[chat] = n;
  }
  EXPECT_EQ(lines, kMessages);
}

#include "support/discord_peer.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>

namespace moat::testing {

DiscordPeer::DiscordPeer() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << strerror(errno);
    return;
  }
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  SpawnOptions so;
  so.stdout_fd = write_end.get();
  auto child = spawn_process({"node", std::string(MOAT_SOURCE_DIR) + "/tests/peers/discord.mjs", "--port", "0",
                              "--token", kToken},
                             so);
  if (!child) {
    ADD_FAILURE() << "cannot start the Discord stand-in: " << child.error().message;
    return;
  }
  child_ = std::move(*child);
  write_end = UniqueFd();
  // Its first line is {"url": ...}; node starts in well under a second, 20 s is for a loaded machine.
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{read_end.get(), POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    char buf[512];
    ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
  }
  auto j = Json::parse(line.substr(0, line.find('\n')), nullptr, false);
  if (j.is_discarded() || !j.contains("url")) {
    ADD_FAILURE() << "the Discord stand-in did not say where it listens: '" << line << "'";
    return;
  }
  url_ = j["url"].get<std::string>();
}

Json DiscordPeer::control(const std::string& verb, const Json& body) const {
  auto r = run_process({"curl", "-sS", "-m", "10", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                        body.dump(), url_ + "/_control/" + verb});
  if (!r || !r->ok()) {
    ADD_FAILURE() << "stand-in control " << verb << " failed: " << (r ? r->err : r.error().message);
    return nullptr;
  }
  auto j = Json::parse(r->out, nullptr, false);
  if (j.is_discarded()) {
    ADD_FAILURE() << "stand-in control " << verb << " answered '" << r->out << "'";
    return nullptr;
  }
  return j;
}

}  // namespace moat::testing

#pragma once
// The CLI's side of the control API.
#include <filesystem>
#include <functional>

#include "api/protocol.h"
#include "base/unique_fd.h"

namespace moat::api {

using ProgressFn = std::function<void(const Json&)>;

class Client {
 public:
  // Connects to moatd; when nothing listens, the error says moatd is not running and how to start it.
  static Result<Client> connect(const std::filesystem::path& socket);

  // Sends one request and waits for its response, passing progress frames to `progress`.
  Result<Json> call(std::string_view verb, Json args, const ProgressFn& progress = {});

  // For streaming verbs: after call() succeeded, the connection carries the relayed conversation.
  int fd() const { return fd_.get(); }

 private:
  explicit Client(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// One-shot helper: connect, call, close.
Result<Json> call(const std::filesystem::path& socket, std::string_view verb, Json args, const ProgressFn& progress = {});

}  // namespace moat::api

#pragma once
// Errors are values at component boundaries: every fallible operation that crosses one returns
// Result<T>. An Error carries one human sentence naming what was wrong and what to do.
#include <expected>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace moat {

// Broad classes of failure, so callers (the API, the CLI's exit code) can react without parsing text.
enum class ErrorKind {
  Internal,      // a bug or an unexpected system failure
  InvalidInput,  // bad name, bad flag, malformed config
  NotFound,      // unknown sandbox, image, record
  Conflict,      // already exists, in use, wrong state
  Unavailable,   // missing binary, daemon not running, no loop device
  ResourceLimit, // disk cap reached, out of space
};

struct Error {
  ErrorKind kind = ErrorKind::Internal;
  std::string message;
};

template <class T>
using Result = std::expected<T, Error>;

// Status is a Result with nothing to return.
using Status = std::expected<void, Error>;

template <class... Args>
std::unexpected<Error> fail(ErrorKind kind, fmt::format_string<Args...> f, Args&&... args) {
  return std::unexpected(Error{kind, fmt::format(f, std::forward<Args>(args)...)});
}

// Adds context in front of an error's message while keeping its kind.
inline std::unexpected<Error> wrap(const Error& e, std::string_view context) {
  return std::unexpected(Error{e.kind, fmt::format("{}: {}", context, e.message)});
}

std::string_view error_kind_name(ErrorKind kind);
ErrorKind error_kind_from_name(std::string_view name);

}  // namespace moat

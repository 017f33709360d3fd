#pragma once
// Typed control messages of the host <-> moat-init protocol (see frame.h for the conversation). Each is a
// JSON object in a frame's payload. encode() never throws (strings that are not valid UTF-8 have the bad
// bytes replaced; callers that care check is_valid_utf8 first); decode<T>() never throws and names the
// offending field on malformed input (InvalidInput).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace moat::wire {

struct HelloMsg {        // Hello (host -> guest) and HelloOk (guest -> host)
  uint32_t version = 0;  // required
  std::string agent;     // free text: "moatd", "moat-init"
};

struct ExecStart {
  std::vector<std::string> argv;  // required, non-empty
  std::vector<std::string> env;   // "K=V" added to moat-init's own environment (the sandbox's base), replacing same-named ones
  std::string cwd = "/";
  uint32_t uid = 0, gid = 0;
  bool tty = false;
  uint16_t rows = 24, cols = 80;
  uint64_t timeout_ms = 0;  // 0 = none
};

struct ExecExit {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  bool timed_out = false;
  uint64_t duration_ms = 0;
};

struct Resize {
  uint16_t rows = 0, cols = 0;  // both required
};

struct SignalMsg {
  int signal = 0;  // required, 1..64
};

struct FilePut {
  std::string path;  // required, absolute
  uint32_t mode = 0644;
  uint32_t uid = 0, gid = 0;
  uint64_t size = 0;  // required
};

struct FileGet {
  std::string path;  // required, absolute
};

struct FileInfo {
  uint64_t size = 0;
  uint32_t mode = 0;  // permission bits (07777)
};

struct ErrorMsg {
  std::string message;
};

struct HealthInfo {
  uint64_t uptime_ms = 0;
  uint32_t processes = 0;  // processes in the sandbox other than moat-init's own
};

std::string encode(const HelloMsg& m);
std::string encode(const ExecStart& m);
std::string encode(const ExecExit& m);
std::string encode(const Resize& m);
std::string encode(const SignalMsg& m);
std::string encode(const FilePut& m);
std::string encode(const FileGet& m);
std::string encode(const FileInfo& m);
std::string encode(const ErrorMsg& m);
std::string encode(const HealthInfo& m);

// decode<ExecStart>(payload) etc. Only the types above are defined.
template <class T>
Result<T> decode(std::string_view payload);

template <> Result<HelloMsg> decode<HelloMsg>(std::string_view payload);
template <> Result<ExecStart> decode<ExecStart>(std::string_view payload);
template <> Result<ExecExit> decode<ExecExit>(std::string_view payload);
template <> Result<Resize> decode<Resize>(std::string_view payload);
template <> Result<SignalMsg> decode<SignalMsg>(std::string_view payload);
template <> Result<FilePut> decode<FilePut>(std::string_view payload);
template <> Result<FileGet> decode<FileGet>(std::string_view payload);
template <> Result<FileInfo> decode<FileInfo>(std::string_view payload);
template <> Result<ErrorMsg> decode<ErrorMsg>(std::string_view payload);
template <> Result<HealthInfo> decode<HealthInfo>(std::string_view payload);

bool is_valid_utf8(std::string_view s);

}  // namespace moat::wire

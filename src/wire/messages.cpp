#include "wire/messages.h"

#include <limits>
#include <optional>

#include "base/json.h"

namespace moat::wire {
namespace {

std::string dump(const Json& j) {
  // replace: never throws on bad UTF-8 (encode() is documented never to throw).
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Reads fields out of a parsed JSON object, recording the first problem. Nothing here throws.
class Reader {
 public:
  Reader(std::string_view what, std::string_view payload) : what_(what) {
    j_ = Json::parse(payload.begin(), payload.end(), nullptr, /*allow_exceptions=*/false);
    if (j_.is_discarded()) {
      error_ = std::string(what_) + " message is not valid JSON";
    } else if (!j_.is_object()) {
      error_ = std::string(what_) + " message must be a JSON object";
    }
  }

  bool ok() const { return !error_; }

  template <class T>
  void uint(const char* key, T& out, bool required) {
    const Json* v = field(key, required);
    if (!v) return;
    if (!v->is_number_unsigned() && !(v->is_number_integer() && v->get<int64_t>() >= 0)) {
      return set_error(key, "must be a non-negative integer");
    }
    auto n = v->get<uint64_t>();
    if (n > std::numeric_limits<T>::max()) return set_error(key, "is out of range");
    out = static_cast<T>(n);
  }

  void integer(const char* key, int& out, bool required, int64_t lo, int64_t hi) {
    const Json* v = field(key, required);
    if (!v) return;
    if (!v->is_number_integer()) return set_error(key, "must be an integer");
    int64_t n = v->is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(v->get<uint64_t>(), INT64_MAX))
                                        : v->get<int64_t>();
    if (n < lo || n > hi) return set_error(key, "is out of range");
    out = static_cast<int>(n);
  }

  void boolean(const char* key, bool& out, bool required) {
    const Json* v = field(key, required);
    if (!v) return;
    if (!v->is_boolean()) return set_error(key, "must be true or false");
    out = v->get<bool>();
  }

  void string(const char* key, std::string& out, bool required) {
    const Json* v = field(key, required);
    if (!v) return;
    if (!v->is_string()) return set_error(key, "must be a string");
    out = v->get<std::string>();
  }

  void strings(const char* key, std::vector<std::string>& out, bool required) {
    const Json* v = field(key, required);
    if (!v) return;
    if (!v->is_array()) return set_error(key, "must be an array of strings");
    std::vector<std::string> r;
    r.reserve(v->size());
    for (const auto& e : *v) {
      if (!e.is_string()) return set_error(key, "must be an array of strings");
      r.push_back(e.get<std::string>());
    }
    out = std::move(r);
  }

  void require(bool cond, const char* key, const char* problem) {
    if (ok() && !cond) set_error(key, problem);
  }

  template <class T>
  Result<T> finish(T value) {
    if (error_) return std::unexpected(Error{ErrorKind::InvalidInput, *error_});
    return value;
  }

 private:
  const Json* field(const char* key, bool required) {
    if (error_) return nullptr;
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) {
      if (required) set_error(key, "is missing");
      return nullptr;
    }
    return &*it;
  }
  void set_error(const char* key, const char* problem) {
    if (!error_) error_ = std::string(what_) + " message: field '" + key + "' " + problem;
  }

  std::string_view what_;
  Json j_;
  std::optional<std::string> error_;
};

}  // namespace

std::string encode(const HelloMsg& m) { return dump({{"version", m.version}, {"agent", m.agent}}); }

std::string encode(const ExecStart& m) {
  return dump({{"argv", m.argv},
               {"env", m.env},
               {"cwd", m.cwd},
               {"uid", m.uid},
               {"gid", m.gid},
               {"tty", m.tty},
               {"rows", m.rows},
               {"cols", m.cols},
               {"timeout_ms", m.timeout_ms}});
}

std::string encode(const ExecExit& m) {
  return dump({{"exit_code", m.exit_code}, {"signal", m.signal}, {"timed_out", m.timed_out}, {"duration_ms", m.duration_ms}});
}

std::string encode(const Resize& m) { return dump({{"rows", m.rows}, {"cols", m.cols}}); }
std::string encode(const SignalMsg& m) { return dump({{"signal", m.signal}}); }
std::string encode(const FilePut& m) {
  return dump({{"path", m.path}, {"mode", m.mode}, {"uid", m.uid}, {"gid", m.gid}, {"size", m.size}});
}
std::string encode(const FileGet& m) { return dump({{"path", m.path}}); }
std::string encode(const FileInfo& m) { return dump({{"size", m.size}, {"mode", m.mode}}); }
std::string encode(const ErrorMsg& m) { return dump({{"message", m.message}}); }
std::string encode(const HealthInfo& m) { return dump({{"uptime_ms", m.uptime_ms}, {"processes", m.processes}}); }

// Every decode is wrapped so that even an unexpected library exception becomes an error value.
#define MOAT_DECODE_GUARD(body)                                                                 \
  try {                                                                                         \
    body                                                                                        \
  } catch (const std::exception& e) {                                                           \
    return std::unexpected(Error{ErrorKind::InvalidInput, std::string("malformed message: ") + e.what()}); \
  }

template <>
Result<HelloMsg> decode<HelloMsg>(std::string_view payload) {
  MOAT_DECODE_GUARD({
    Reader r("Hello", payload);
    HelloMsg m;
    r.uint("version", m.version, true);
    r.string("agent", m.agent, false);
    return r.finish(std::move(m));
  })
}

template <>
Result<ExecStart> decode<ExecStart>(std::string_view payload) {
  MOAT_DECODE_GUARD({
    Reader r("ExecStart", payload);
    ExecStart m;
    r.strings("argv", m.argv, true);
    r.require(!m.argv.empty(), "argv", "must not be empty");
    r.strings("env", m.env, false);
    r.string("cwd", m.cwd, false);
    r.uint("uid", m.uid, false);
    r.uint("gid", m.gid, false);
    r.boolean("tty", m.tty, false);
    r.uint("rows", m.rows, false);
    r.uint("cols", m.cols, false);
    r.uint("timeout_ms", m.timeout_ms, false);
    return r.finish(std::move(m));
  })
}

template <>
Result<ExecExit> decode<ExecExit>(std::string_view payload) {
  MOAT_DECODE_GUARD({
    Reader r("Exit", payload);
    ExecExit m;
    r.integer("exit_code", m.exit_code, true, -1, 255);
    r.integer("signal", m.signal, false, 0, 128);
    r.boolean("timed_out", m.timed_out, false);
    r.uint("duration_ms", m.duration_ms, false);
    return r.finish(std::move(m));
  })
}

template <>
Result<Resize> decode<Resize>(std::string_view payload) {
  MOAT_DECODE_GUARD({
    Reader r("Resize", payload);
    Resize m;
    r.uint("rows", m.rows, true);
    r.uint("cols", m.cols, true);
    return r.finish(std::move(m));
  })
}

template <>
Result<SignalMsg> decode<SignalMsg>(std::string_view payload) {
  MOAT_DECODE_GUARD({
    Reader r("Signal", payload);
    SignalMsg m;
    r.integer("signal", m.signal, true, 1, 64);
    return r.finish(std::move(m));
  })
}

template <>
Result<FilePut> decode<FilePut>(std::string_view payload) {
  MOAT_DECODE_GUARD({
    Reader r("FilePut", payload);
    FilePut m;
    r.string("path", m.path, true);
    r.uint("mode", m.mode, false);
    r.require(m.mode <= 07777, "mode", "must be permission bits (at most 07777)");
    r.uint("uid", m.uid, false);
    r.uint("gid", m.gid, false);
    r.uint("size", m.size, true);
    return r.finish(std::move(m));
  })
}

template <>
Result<FileGet> decode<FileGet>(std::string_view payload) {
  MOAT_DECODE_GUARD({
    Reader r("FileGet", payload);
    FileGet m;
    r.string("path", m.path, true);
    return r.finish(std::move(m));
  })
}

template <>
Result<FileInfo> decode<FileInfo>(std::string_view payload) {
  MOAT_DECODE_GUARD({
    Reader r("FileInfo", payload);
    FileInfo m;
    r.uint("size", m.size, true);
    r.uint("mode", m.mode, false);
    return r.finish(std::move(m));
  })
}

template <>
Result<ErrorMsg> decode<ErrorMsg>(std::string_view payload) {
  MOAT_DECODE_GUARD({
    Reader r("Error", payload);
    ErrorMsg m;
    r.string("message", m.message, true);
    return r.finish(std::move(m));
  })
}

template <>
Result<HealthInfo> decode<HealthInfo>(std::string_view payload) {
  MOAT_DECODE_GUARD({
    Reader r("HealthOk", payload);
    HealthInfo m;
    r.uint("uptime_ms", m.uptime_ms, true);
    r.uint("processes", m.processes, false);
    return r.finish(std::move(m));
  })
}

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    for (size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return false;
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

}  // namespace moat::wire

#include "base/result.h"

namespace moat {

std::string_view error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Internal: return "internal";
    case ErrorKind::InvalidInput: return "invalid_input";
    case ErrorKind::NotFound: return "not_found";
    case ErrorKind::Conflict: return "conflict";
    case ErrorKind::Unavailable: return "unavailable";
    case ErrorKind::ResourceLimit: return "resource_limit";
  }
  return "internal";
}

ErrorKind error_kind_from_name(std::string_view name) {
  for (auto k : {ErrorKind::InvalidInput, ErrorKind::NotFound, ErrorKind::Conflict,
                 ErrorKind::Unavailable, ErrorKind::ResourceLimit}) {
    if (error_kind_name(k) == name) return k;
  }
  return ErrorKind::Internal;
}

}  // namespace moat

#include "channels/accept_fn.h"

namespace moat::channels {

std::string_view acceptance_outcome(router::Acceptance::Outcome o) {
  using O = router::Acceptance::Outcome;
  switch (o) {
    case O::Queued: return "queued";
    case O::Duplicate: return "duplicate";
    case O::Held: return "held";
    case O::Dropped: return "dropped";
  }
  return "unknown";
}

}  // namespace moat::channels

#pragma once
// Moves a sandbox's files from one host id range to another: every inode under a root (not crossing
// into other file systems, not following links) whose owner or group is in [from, from + count) gets
// the same offset in [to, to + count). What chown would lose is kept: setuid/setgid bits are put back,
// and ids inside file capabilities (the v3 root id) and POSIX ACLs are shifted too. Idempotent: an
// inode already in the new range is left alone, so a move cut short is finished by running it again.
#include <cstdint>
#include <filesystem>
#include <functional>

#include "base/result.h"

namespace moat {

struct IdShiftCount {
  uint64_t seen = 0, shifted = 0;
};

Result<IdShiftCount> shift_ids(const std::filesystem::path& root, uint32_t from, uint32_t to, uint32_t count,
                               const std::function<void(const IdShiftCount&)>& progress = {});

}  // namespace moat

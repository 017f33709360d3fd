#pragma once
// exec: starts the requested command (pipes or a PTY), streams its output to the host with backpressure,
// relays stdin/resize/signals, enforces the timeout, and ends with an Exit frame. Runs in the
// per-connection process, which is a child subreaper: everything the command starts is its descendant,
// so a timeout, Signal{SIGKILL} or a vanished host kills the whole tree.
#include "base/unique_fd.h"
#include "wire/messages.h"

namespace moat::guest {

void run_exec(UniqueFd conn, const wire::ExecStart& req);

}  // namespace moat::guest
